"""DNAS (docs/methods.md §6) and its §7 oracles: decoupled ψ, zero-one loss, per-cell derivation, presets,
skip-connect dropout, the PC-DARTS global baseline and a tiny end-to-end search."""
import json

import pytest
import torch
import torch.nn as nn
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gradnas.arch import ARCHITECTURES, CellWeights, DecoupledPsi, PerCellSoftmax, zero_one_loss
from gradnas.cli import main
from gradnas.config import resolve_config
from gradnas.edges import MixedOp
from gradnas.errors import GradnasError
from gradnas.genotypes import CellGenotype, load_genotype, per_cell_genotype, save_genotype
from gradnas.methods.dnas import OPS
from gradnas.models import build_eval_network, count_parameters
from gradnas.models.saved import load_model
from gradnas.search.bilevel import Bilevel
from gradnas.search.checkpoint import load_checkpoint
from gradnas.search.loop import Searcher, build_search_model, search
from gradnas.selection import derive_genotype
from gradnas.spaces.darts import IN_DEGREES, reduction_layers, sum_nodes
from helpers import killed_in_epoch, nan_after


pytestmark = pytest.mark.usefixtures("one_thread")


def cell_types(L):
    return ["reduce" if i in reduction_layers(L) else "normal" for i in range(L)]


def dnas_arch(L=14, **kw):
    return DecoupledPsi(cell_types(L), tuple(OPS), IN_DEGREES, **kw)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_psi_shape_and_range():
    arch = dnas_arch()
    with torch.no_grad():
        for p in arch.parameters():
            p.normal_(0, 3)
    psi = arch.psi()
    assert psi.shape == (14, 14, 7)
    assert ((psi > 0) & (psi < 1)).all()
    cells = arch()
    assert [c.ops.shape for c in cells] == [(14, 7)] * 14 and [c.edges.shape for c in cells] == [(14,)] * 14
    assert all(torch.allclose(c.ops * c.edges[:, None], p) for c, p in zip(cells, psi))  # ψ, factored
    assert all(torch.allclose(w, p) for w, p in zip(arch.selection_weights(), psi))


def test_connection_weight_scales_the_partial_channel_bypass_too():
    """sm(β[k])_i multiplies connection i's whole output, ops and the channels that bypass them: PC-DARTS's
    edge normalisation in DNAS's place. Scaling only the ops let the bypass double at every node (loss 5-7)."""
    torch.manual_seed(0)
    model = build_search_model(resolve_config({"method": "dnas", "channels": 8, "layers": 3}), 10)
    with torch.no_grad():
        model.arch.beta.normal_(0, 2)
    cell, weights = model.net.cells[0], model.arch()[0]
    states = [torch.randn(2, 8, 8, 8), torch.randn(2, 8, 8, 8)]
    torch.manual_seed(1)
    node2 = cell.edges[0](states[0], weights.ops[0]) * weights.edges[0] \
        + cell.edges[1](states[1], weights.ops[1]) * weights.edges[1]
    torch.manual_seed(1)
    assert torch.allclose(sum_nodes(cell.edges, list(states), 1, weights)[2], node2, atol=1e-6)
    # All op weights 0: node 2 is the two edges' bypass channels, each scaled by its connection weight.
    zero = CellWeights(torch.zeros_like(weights.ops), weights.edges)
    bypassed = [cell.edges[e](states[e], zero.ops[e]) for e in (0, 1)]
    scaled = sum_nodes(cell.edges, list(states), 1, zero)[2]
    assert bypassed[0].abs().sum() > 0
    assert torch.allclose(scaled, bypassed[0] * weights.edges[0] + bypassed[1] * weights.edges[1], atol=1e-6)
    with pytest.raises(GradnasError, match="weighs every edge itself"):
        build_search_model(resolve_config({"method": "dnas", "edge_norm": True, "layers": 3}), 10)


@pytest.mark.parametrize("L,decoupled,full", [(14, 392, 1372), (8, 266, 784), (20, 518, 1960)])
def test_parameter_counts_of_decoupled_and_full_forms(L, decoupled, full):
    assert n_params(dnas_arch(L)) == decoupled == L * 14 + L * 7 + 14 * 7
    assert n_params(PerCellSoftmax(cell_types(L), tuple(OPS), IN_DEGREES)) == full == L * 14 * 7


def test_beta_gamma_at_zero_give_one_genotype_for_every_cell():
    arch = dnas_arch()
    with torch.no_grad():
        arch.alpha.normal_(0, 2)
        arch.beta.zero_()
        arch.gamma.zero_()
    psi = arch.psi()
    assert torch.allclose(psi, arch.alpha.sigmoid().expand_as(psi) / (2 * 14))
    genotype = derive_genotype(arch, "darts")
    assert len(genotype.cells) == 14 and len(set(genotype.cells)) == 1


def test_rule_on_psi_picks_edges_by_max_psi_and_ops_by_alpha_gamma():
    torch.manual_seed(3)
    arch = dnas_arch()
    with torch.no_grad():
        for p in arch.parameters():
            p.normal_(0, 2)
    genotype = derive_genotype(arch, "darts")
    psi, sa, sg = arch.psi().detach(), arch.alpha.sigmoid().detach(), arch.gamma.sigmoid().detach()
    for k, cell in enumerate(genotype.cells):
        start = 0
        for n, node in enumerate(cell.nodes, 2):
            strength = psi[k, start:start + n].max(1).values
            sources = strength.argsort(descending=True)[:2].tolist()
            ops = [OPS[int((sa[start + j] * sg[k]).argmax())] for j in sources]
            assert node == tuple(zip(ops, sources))
            start += n
    assert len(set(genotype.cells)) > 1  # random β, γ: cells differ


def test_zero_one_loss_limits_and_gradient():
    z = torch.zeros(5, requires_grad=True)
    loss = zero_one_loss(z)
    loss.backward()
    assert loss.item() == 0 and torch.equal(z.grad, torch.zeros(5))
    assert zero_one_loss(torch.tensor([30.0, -30.0])).item() == pytest.approx(-0.25, abs=1e-9)
    assert zero_one_loss(torch.tensor([1.0])) > zero_one_loss(torch.tensor([3.0]))  # decreasing in |z|


def test_regularizer_is_weighted_zero_one_loss_on_alpha_and_gamma():
    arch = dnas_arch(zero_one_weight=10.0)
    with torch.no_grad():
        for p in arch.parameters():
            p.normal_()
    expected = 10 * zero_one_loss(torch.cat([arch.alpha.flatten(), arch.gamma.flatten()]))
    assert torch.allclose(arch.regularizer(), expected)
    arch.regularizer().backward()
    assert arch.beta.grad is None and arch.alpha.grad.abs().sum() > 0 and arch.gamma.grad.abs().sum() > 0
    assert dnas_arch(zero_one_weight=0.0).regularizer() is None


def test_beta_softmax_per_node_option():
    arch = dnas_arch(beta_softmax="node")
    sums = torch.stack([b.sum(1) for b in arch.edge_weights().split(IN_DEGREES, dim=1)], 1)
    assert torch.allclose(sums, torch.ones(14, 4))
    assert torch.allclose(dnas_arch().edge_weights().sum(1), torch.ones(14))
    with pytest.raises(GradnasError, match="beta_softmax"):
        dnas_arch(beta_softmax="edge")


def test_per_cell_softmax_baseline():
    arch = ARCHITECTURES["per-cell-softmax"](cell_types(5), tuple(OPS), IN_DEGREES)
    with torch.no_grad():
        arch.alpha.normal_(0, 2)
    weights = arch.op_weights()
    assert arch.per_cell and len(weights) == 5
    assert all(torch.allclose(w.sum(1), torch.ones(14)) for w in weights)
    assert len(derive_genotype(arch, "darts").cells) == 5


@pytest.mark.parametrize("data,classes,weights", [("cifar10", 10, 522_010), ("cifar100", 100, 545_140)])
def test_supernet_weight_counts(data, classes, weights):
    config = resolve_config({"method": "dnas", "data": data})
    model = build_search_model(config, classes)
    assert n_params(model.net) == weights
    assert n_params(model.arch) == 392
    assert model.net.cells[0].edges[0].k == 4 and model.net.op_names == tuple(OPS)


def test_presets_follow_section_6_and_each_option_turns_off():
    c = resolve_config({"method": "dnas"})
    assert (c.arch, c.layers, c.channels, c.order, c.epochs, c.batch_size, c.partial_k) == ("dnas", 14, 16, 1, 50, 64, 4)
    assert (c.lr, c.lr_min, c.weight_decay, c.arch_lr, c.arch_betas, c.arch_weight_decay) == (
        0.025, 0.001, 3e-4, 3e-4, [0.5, 0.999], 1e-3)
    assert (c.skip_dropout, c.zero_one_weight, c.beta_softmax) == (0.2, 10.0, "layer") and "none" not in c.ops
    assert resolve_config({"method": "dnas", "data": "cifar100"}).batch_size == 96
    assert resolve_config({"method": "dnas", "data": "cifar100", "batch_size": 32}).batch_size == 32
    off = resolve_config({"method": "dnas", "partial_k": 1, "skip_dropout": 0.0, "zero_one_weight": 0.0})
    model = build_search_model(off, 10)
    assert model.arch.regularizer() is None and model.net.cells[0].edges[0].dropped == -1
    baseline = resolve_config({"method": "pc-darts-global"})
    assert (baseline.arch, baseline.layers, baseline.ops) == ("per-cell-softmax", 14, c.ops)
    with pytest.raises(GradnasError, match="darts space"):
        resolve_config({"method": "dnas", "space": "nb201"})
    with pytest.raises(GradnasError, match="one genotype per cell"):
        build_search_model(resolve_config({"space": "nb201", "arch": "dnas"}), 10)
    with pytest.raises(GradnasError, match="skip_dropout"):
        resolve_config({"method": "dnas", "skip_dropout": 1.5})


def test_pc_darts_global_is_pc_darts_with_per_cell_weights():
    """The DNAS paper's baseline: PC-DARTS's edge (K=4) and edge normalisation, per-cell α and β, without
    DNAS's own skip dropout or zero-one loss."""
    c = resolve_config({"method": "pc-darts-global", "layers": 5, "channels": 8})
    assert (c.arch, c.partial_k, c.edge_norm, c.skip_dropout, c.zero_one_weight) == \
        ("per-cell-softmax", 4, True, 0.0, 0.0)
    model = build_search_model(c, 10)
    norm = model.arch.modifiers[0]
    assert sorted(norm.beta) == [f"cell{i}" for i in range(5)] and model.net.cells[0].edges[0].inner.dropped == -1
    with torch.no_grad():
        norm.beta["cell3"].normal_()
    weights = model.arch.selection_weights()  # β of cell 3 changes cell 3's weights only
    assert not torch.allclose(weights[3], weights[1]) and torch.allclose(weights[1], weights[4], atol=1e-2)
    assert model.arch.regularizer() is None


def test_zero_one_loss_reaches_the_architecture_gradient():
    model = build_search_model(resolve_config({"method": "dnas", "layers": 5, "channels": 8}), 10)
    with torch.no_grad():
        for p in model.arch.parameters():
            p.normal_()
    arch = model.arch
    z = torch.cat([arch.alpha.flatten(), arch.gamma.flatten()]).detach().requires_grad_()
    (g,) = torch.autograd.grad(10 * zero_one_loss(z), z)
    update = Bilevel(model, lambda logits, y: 0 * logits.sum(), order=1)  # only the regulariser has a gradient
    batch = (torch.randn(2, 3, 8, 8), torch.randint(0, 10, (2,)))
    update.arch_step(batch, batch, torch.optim.SGD(model.weight_parameters(), lr=0.1))
    assert torch.allclose(arch.alpha.grad.flatten(), g[:arch.alpha.numel()])
    assert torch.allclose(arch.gamma.grad.flatten(), g[arch.alpha.numel():]) and (g != 0).all()
    assert (arch.beta.grad == 0).all()


def test_skip_dropout_only_on_skip_branch_and_only_in_training():
    torch.manual_seed(0)
    op = MixedOp("darts", tuple(OPS), 4, 1, skip_dropout=0.5)
    plain = MixedOp("darts", tuple(OPS), 4, 1)
    plain.load_state_dict(op.state_dict())
    x, w = torch.randn(8, 4, 16, 16), torch.rand(7)
    op.eval(), plain.eval()
    assert torch.allclose(op(x, w), plain(x, w))
    op.train(), plain.train()
    only_skip = torch.zeros(7)
    only_skip[OPS.index("skip_connect")] = 1.0
    y = op(x, only_skip)
    kept = y != 0
    assert 0.4 < kept.float().mean() < 0.6 and torch.allclose(y[kept], 2 * x[kept])
    no_skip = w.clone()
    no_skip[OPS.index("skip_connect")] = 0
    torch.manual_seed(1)
    a = op(x, no_skip)
    torch.manual_seed(1)
    assert torch.allclose(a, plain(x, no_skip))  # the other branches are untouched


def test_eval_network_compiles_each_cell_from_its_own_genotype():
    sep = CellGenotype(((("sep_conv_3x3", 0), ("sep_conv_3x3", 1)),) * 4, (2, 3, 4, 5))
    skip = CellGenotype(((("skip_connect", 0), ("skip_connect", 1)),) + ((("sep_conv_3x3", 0), ("skip_connect", 1)),) * 3,
                        (2, 3, 4, 5))
    cells = [sep if i % 2 else skip for i in range(14)]
    genotype = per_cell_genotype(cells)
    net = build_eval_network(genotype, "cifar10", C=8, auxiliary=False)
    assert len(net.cells) == 14
    for i, cell in enumerate(net.cells):
        first_op = cell.nodes[0][0]
        assert isinstance(first_op, nn.Identity) == (cells[i] is skip and not cell.reduction)
    assert net(torch.randn(2, 3, 16, 16))[0].shape == (2, 10)
    with pytest.raises(GradnasError, match="14 cell genotypes"):
        build_eval_network(genotype, "cifar10", layers=20)


def tiny(tmp_path, name, **kw):
    return resolve_config({"method": "dnas", "channels": 8, "layers": 3, "batch_size": 16, "epochs": 2,
                           "steps_per_epoch": 2, "progress": False, "out": str(tmp_path / name), **kw})


def test_tiny_cli_search_resume_show_and_artefacts(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("gradnas.viz.draw_genotype", lambda genotype, out: [])  # drawn once, below
    full = search(tiny(tmp_path, "full"))
    monkeypatch.undo()
    with killed_in_epoch(monkeypatch, Searcher, 1):
        search(tiny(tmp_path, "cut"))
    out = tmp_path / "cut"
    assert main(["search", "--resume", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "cell 2 (reduction)" in printed

    genotype = load_genotype(out / "genotype.json")
    assert genotype == full.genotype and len(genotype.cells) == 3
    saved = json.loads((out / "genotype.json").read_text())
    assert [c["reduction"] for c in saved["cells"]] == [False, True, True]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert records[-1]["distinct_cells"] == len(set(genotype.cells))
    assert all(1 <= r["distinct_cells"] <= 3 for r in records)
    resumed = load_checkpoint(out / "checkpoint.pt")["model"]
    assert all(torch.equal(v, resumed[f"arch.{k}"]) for k, v in full.model.arch.state_dict().items())
    stats = records[-1]["arch"]["stats"]
    assert set(stats["sigmoid_gamma"]["cell2"]) == set(OPS) and set(stats["beta_entropy"]) == {"cell0", "cell1", "cell2"}
    scalars = EventAccumulator(str(out / "tensorboard")).Reload().Tags()["scalars"]
    assert {"arch/stats/sigmoid_alpha/mean", "arch/stats/beta_entropy/cell1", "distinct_cells"} <= set(scalars)
    drawn = sorted(p.name for p in out.glob("cell_*.png"))
    assert drawn == ["cell_00.png", "cell_01.png", "cell_02.png", "cell_overview.png"]

    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert shown.count("\ncell ") + shown.startswith("cell ") == 3 and "parameters" in shown
    params = count_parameters(build_eval_network(genotype, "cifar10"))
    assert f"{params:,} parameters" in shown


def test_nan_guard_stops_a_dnas_search(tmp_path):
    searcher = Searcher(tiny(tmp_path, "nan"))
    searcher.criterion = searcher.update.criterion = nan_after(searcher.criterion, 4)
    with pytest.raises(GradnasError, match="non-finite loss at epoch 2"):
        searcher.run()


def test_cli_train_eval_export_a_per_cell_genotype(tmp_path, capsys):
    sep = CellGenotype(((("sep_conv_3x3", 0), ("sep_conv_3x3", 1)),) * 4, (2, 3, 4, 5))
    pool = CellGenotype(((("max_pool_3x3", 0), ("avg_pool_3x3", 1)),) * 4, (2, 3, 4, 5))
    genotype = per_cell_genotype([sep, pool, sep])
    save_genotype(genotype, tmp_path / "search" / "genotype.json")
    out = tmp_path / "train"
    assert main(["train", str(tmp_path / "search"), "--data", "digits", "--channels", "4", "--no-auxiliary",
                 "--epochs", "1", "--batch-size", "16", "--steps-per-epoch", "2", "--no-progress",
                 "--out", str(out)]) == 0
    model = load_model(out)
    assert len(model.cells) == 3  # the depth comes from the genotype
    assert [type(cell.nodes[0][0]).__name__ for cell in model.cells] == ["SepConv", "MaxPool2d", "SepConv"]
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == count_parameters(model)
    assert main(["export", str(out), "--format", "torchscript", "--out", str(tmp_path / "m.ts")]) == 0
