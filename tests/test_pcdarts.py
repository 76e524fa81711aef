"""PC-DARTS (docs/methods.md §3) and its oracles (§7): partial channels, shuffle, edge normalisation, warm-up,
derivation on sm(α)·sm(β), the ImageNet search subsets, and a PC-DARTS run through the CLI."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tqdm import tqdm

from gradnas.arch import CellWeights, EdgeNormalization
from gradnas.cli import main
from gradnas.config import resolve_config
from gradnas.edges import MixedOp, PartialChannelEdge, build_edge, channel_shuffle
from gradnas.errors import GradnasError
from gradnas.search.bilevel import Bilevel
from gradnas.search.checkpoint import load_checkpoint
from gradnas.search.loop import Searcher, build_search_model, search, weight_lr_schedule
from gradnas.selection import derive_genotype
from gradnas.spaces import DARTS_OPS
from gradnas.spaces.darts import IN_DEGREES, SearchCell, sum_nodes
from gradnas.spaces.ops import FactorizedReduce
from helpers import killed_in_epoch, nan_after

FORMATS = [torch.contiguous_format, torch.channels_last]
TINY = {"darts": dict(channels=8, layers=3), "nb201": dict(channels=8, layers=1)}


def count(module):
    return sum(p.numel() for p in module.parameters())


def tiny_pc(tmp_path, space="darts", **kw):
    return resolve_config({"method": "pc-darts", "space": space, "epochs": 1, "batch_size": 8, "steps_per_epoch": 2,
                           "arch_warmup_epochs": 0, "progress": False, "out": str(tmp_path / "run"),
                           **TINY[space], **kw})


# ------------------------------------------------------------------------------------------------ the edge
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("k", [2, 4, 8])
def test_shuffle_by_c_over_k_inverts_shuffle_by_k(fmt, k):
    x = torch.randn(2, 16, 5, 5).contiguous(memory_format=fmt)
    y = channel_shuffle(x, k)
    assert torch.equal(channel_shuffle(y, 16 // k), x) and not torch.equal(y, x)
    assert y.is_contiguous(memory_format=fmt)  # channels-last is kept, not turned into the default layout
    assert torch.equal(channel_shuffle([x[:, :3 * 16 // k], x[:, 3 * 16 // k:]], k), y)  # parts = their concat


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("stride", [1, 2])
def test_processed_slice_lands_on_every_kth_channel_and_the_rest_bypasses(fmt, stride):
    C, k = 16, 4
    edge = build_edge("mixed", "darts", DARTS_OPS, C, stride, partial_k=k)
    assert isinstance(edge, PartialChannelEdge) and len(edge.inner.ops[4].body[0].weight) == C // k
    x, w = torch.randn(3, C, 8, 8).contiguous(memory_format=fmt), torch.randn(8).softmax(0)
    y = edge(x, w)
    assert y.shape == (3, C, 8 // stride, 8 // stride) and y.is_contiguous(memory_format=fmt)
    assert torch.allclose(y[:, 0::k], edge.inner(x[:, :C // k].contiguous(), w), atol=1e-5)
    bypass = x[:, C // k:] if stride == 1 else F.max_pool2d(x[:, C // k:], 2, 2)  # docs/methods.md §3 step 3
    for g in range(1, k):  # input channel g·C/K + q → output channel q·K + g
        assert torch.equal(y[:, g::k], bypass[:, (g - 1) * C // k:g * C // k])


def test_gradients_reach_the_input_through_both_paths():
    edge = build_edge("mixed", "darts", DARTS_OPS, 8, 2, partial_k=4)
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    edge(x, torch.randn(8).softmax(0)).square().sum().backward()
    assert (x.grad[:, :2].abs().sum((0, 2, 3)) > 0).all() and (x.grad[:, 2:].abs().sum((0, 2, 3)) > 0).all()


@pytest.mark.parametrize("stride", [1, 2])
def test_random_sampling_keeps_a_channels_last_layout(stride):
    """The edge's output stays channels-last (index_copy alone returns the default layout, which turned every
    later state of the supernet, and the layout its dropout masks are drawn in, into it)."""
    edge = build_edge("mixed", "darts", DARTS_OPS, 16, stride, partial_k=4, partial_sampling="random")
    x = torch.randn(2, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    y = edge(x, torch.randn(8).softmax(0))
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()


@pytest.mark.parametrize("stride", [1, 2])
def test_random_sampling_processes_a_fresh_subset_in_place(stride):
    C, k = 16, 4
    edge = build_edge("mixed", "darts", DARTS_OPS, C, stride, partial_k=k, partial_sampling="random")
    x, w = torch.randn(2, C, 8, 8), torch.randn(8).softmax(0)
    bypass = x if stride == 1 else F.max_pool2d(x, 2, 2)
    kept = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        y = edge(x, w)
        assert y.shape == (2, C, 8 // stride, 8 // stride)
        same = [(y[:, c] == bypass[:, c]).all().item() for c in range(C)]
        assert sum(same) == C - C // k  # the other C/K channels hold the ops' output
        kept.append(same)
    assert kept[0] != kept[1]
    with pytest.raises(GradnasError, match="partial_sampling"):
        resolve_config({"method": "pc-darts", "partial_sampling": "every"})


def test_k1_with_edge_norm_off_equals_darts_output_for_output():
    darts = build_search_model(resolve_config({"channels": 8, "layers": 3}), 10)
    pc = build_search_model(resolve_config({"method": "pc-darts", "partial_k": 1, "edge_norm": False,
                                            "channels": 8, "layers": 3}), 10)
    pc.load_state_dict(darts.state_dict())  # same structure, same weights
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(pc(x), darts(x))
    with pytest.raises(ValueError, match="k >= 2"):
        PartialChannelEdge(MixedOp("darts", DARTS_OPS, 8, 1), 1, 1)


def test_equal_beta_divides_each_darts_node_by_its_in_degree():
    torch.manual_seed(3)
    cell = SearchCell(8, 8, 8, False, False, DARTS_OPS, "mixed", {})
    ops = torch.randn(14, 8).softmax(-1)
    b = EdgeNormalization(["normal"], IN_DEGREES).normalise(torch.zeros(14))
    s0, s1 = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)
    states = sum_nodes(cell.edges, [cell.preprocess0(s0), cell.preprocess1(s1)], 4, CellWeights(ops))
    start = 0
    for degree, node in zip(IN_DEGREES, states[2:]):  # each node from the same inputs, with and without β
        edges, part = cell.edges[start:start + degree], slice(start, start + degree)
        normalised = sum_nodes(edges, states[:degree], 1, CellWeights(ops[part], b[part]))[-1]
        assert torch.allclose(normalised, node / degree, atol=1e-5)
        start += degree


# ---------------------------------------------------------------------------------------------- supernet
@pytest.mark.parametrize("k,weights", [(4, 299_578), (2, 671_482)])
def test_supernet_weight_and_arch_parameter_counts(k, weights):
    model = build_search_model(resolve_config({"method": "pc-darts", "partial_k": k}), 10)
    assert count(model.net) == weights and count(model.arch) == 252  # α 2·14·8 + β 2·14


def test_derivation_ranks_edges_by_softmax_alpha_times_softmax_beta():
    arch = build_search_model(resolve_config({"method": "pc-darts", "channels": 8, "layers": 3}), 10).arch
    sep3, sep5, dil3 = (DARTS_OPS.index(n) for n in ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3"))
    with torch.no_grad():
        for p in arch.parameters():
            p.zero_()
        alpha = arch.alpha["normal"]
        alpha[2, sep3], alpha[3, sep5], alpha[4, dil3] = 3.0, 2.0, 1.0  # node 3: sources 0, 1, 2
    assert derive_genotype(arch, "darts").normal.nodes[1] == (("sep_conv_3x3", 0), ("sep_conv_5x5", 1))
    with torch.no_grad():
        arch.modifiers[0].beta["normal"][4] = 5.0  # β favours source 2: its edge is chosen, its op is not changed
    assert derive_genotype(arch, "darts").normal.nodes[1] == (("dil_conv_3x3", 2), ("sep_conv_3x3", 0))


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_pc_darts_searches_in_both_spaces(tmp_path, space):
    config = tiny_pc(tmp_path, space)
    model = build_search_model(config, 10)
    alpha0 = [p.detach().clone() for p in model.arch_parameters()]
    result = search(config)
    assert result.genotype.space == space and "val_loss" in result.history[0]
    assert all(not torch.equal(a, b) for a, b in zip(alpha0, result.model.arch_parameters()))


def test_architecture_is_frozen_during_warmup_epochs(tmp_path):
    searcher = Searcher(tiny_pc(tmp_path, epochs=2, arch_warmup_epochs=1))
    before = [p.detach().clone() for p in searcher.model.arch_parameters()]
    bar = tqdm(disable=True)
    stats = searcher.train_epoch(0, 2, bar)
    assert "val_loss" not in stats
    assert all(torch.equal(a, b) for a, b in zip(before, searcher.model.arch_parameters()))
    searcher.train_epoch(1, 2, bar)
    assert all(not torch.equal(a, b) for a, b in zip(before, searcher.model.arch_parameters()))


def test_cifar_preset_values():
    """PC-DARTS's train_search.py: batch 256, lr 0.1 → 0, arch lr 6e-4 from epoch 15 of 50, first order."""
    c = resolve_config({"method": "pc-darts"})
    assert (c.partial_k, c.partial_sampling, c.edge_norm, c.batch_size, c.lr, c.lr_min, c.epochs) == \
        (4, "first", True, 256, 0.1, 0.0, 50)
    assert (c.arch_lr, c.arch_betas, c.arch_weight_decay, c.arch_warmup_epochs, c.order) == \
        (6e-4, [0.5, 0.999], 1e-3, 15, 1)
    assert (c.momentum, c.weight_decay, c.grad_clip, c.channels, c.layers, c.train_portion, c.cutout) == \
        (0.9, 3e-4, 5.0, 16, 8, 0.5, 0)
    assert (c.pool_bn, c.final_bn_relu, c.imagenet_stem, c.lr_warmup_epochs, c.arch_grad_clip) == \
        (True, False, False, 0, 0.0)


def test_search_lr_warmup_then_the_cosine_as_uninterrupted():
    config = resolve_config({"method": "pc-darts-imagenet"})
    sgd = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.lr)
    schedule, lrs = weight_lr_schedule(sgd, config, steps=7), []
    for _ in range(config.epochs):
        lrs.append(sgd.param_groups[0]["lr"])
        schedule.step()
    cosine = [0.5 * (1 + math.cos(math.pi * e / 50)) / 2 for e in range(50)]
    assert lrs[:5] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5]) and lrs[5:] == pytest.approx(cosine[5:])


def test_architecture_gradient_clipping():
    model = build_search_model(resolve_config({"method": "pc-darts-imagenet", "channels": 8, "layers": 3}), 10)
    update = Bilevel(model, torch.nn.CrossEntropyLoss(), order=1, grad_clip=1e-4)
    batch = (torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,)))
    update.arch_step(batch, batch, torch.optim.SGD(model.weight_parameters(), lr=0.1))
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.arch_parameters()]))
    assert norm == pytest.approx(1e-4, rel=1e-4)


# ------------------------------------------------------------------------------------------ ImageNet search
def test_imagenet_preset_and_its_train_val_subsets(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / "imgs" / f"class{c}").mkdir(parents=True)
        for i in range(100):
            image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)  # 32 px: the search stems reduce 8-fold
            Image.fromarray(image).save(tmp_path / "imgs" / f"class{c}" / f"{i}.png")
    config = resolve_config({"method": "pc-darts-imagenet", "data": str(tmp_path / "imgs"), "batch_size": 4,
                             "channels": 4, "layers": 3, "epochs": 1, "steps_per_epoch": 2, "arch_warmup_epochs": 0,
                             "lr_warmup_epochs": 0, "progress": False, "out": str(tmp_path / "run")})
    assert (config.partial_k, config.batch_size, config.lr, config.arch_lr, config.train_subset, config.val_subset) == \
        (2, 4, 0.5, 6e-3, 0.1, 0.025)
    full = resolve_config({"method": "pc-darts-imagenet"})
    assert (full.arch_warmup_epochs, full.lr_warmup_epochs, full.arch_grad_clip, full.imagenet_stem) == \
        (35, 5, 5.0, True)
    searcher = Searcher(config)  # 160 training images (every fifth of 200 held out as test)
    train, val = searcher.train_loader, searcher.val_loader
    assert (len(train.y), len(val.y)) == (16, 4)
    rows = lambda t: {tuple(r.flatten().tolist()) for r in t}
    assert not rows(train.x) & rows(val.x)  # disjoint
    again = Searcher(config, claim=False)  # the first holds the run directory
    assert torch.equal(again.train_loader.x, train.x) and torch.equal(again.val_loader.x, val.x)  # seeded
    net = searcher.model.net  # the 224-px search stems: 8-fold down-sampling, the first cell sees a reduction
    assert not hasattr(net, "stem") and isinstance(net.cells[0].preprocess0, FactorizedReduce)
    with torch.no_grad():
        assert net.stem1(net.stem0(train.x[:2].float())).shape == (2, 12, 4, 4)
    assert searcher.run().genotype.space == "darts"
    for bad, message in [({"train_subset": 0.1}, "together"), ({"train_subset": 0.9, "val_subset": 0.2}, "at most 1")]:
        with pytest.raises(GradnasError, match=message):
            resolve_config({"method": "darts", **bad})


# ------------------------------------------------------------------------------------ runs through the CLI
def test_cli_pc_darts_run_resumes_exactly_and_writes_every_artefact(tmp_path, monkeypatch):
    def cli(out, *extra):
        return main(["search", "--method", "pc-darts", "--channels", "8", "--layers", "3", "--batch-size", "8",
                     "--epochs", "2", "--steps-per-epoch", "2", "--arch-warmup-epochs", "1", "--no-progress",
                     "--out", str(out), *extra])

    assert cli(tmp_path / "full") == 0
    with killed_in_epoch(monkeypatch, Searcher, 1):  # the first epoch after the warm-up
        cli(tmp_path / "cut")
    assert main(["search", "--resume", str(tmp_path / "cut"), "--no-progress"]) == 0

    full, cut = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("full", "cut"))
    assert full["epoch"] == cut["epoch"] == 2
    assert full["model"].keys() == cut["model"].keys()
    assert all(torch.equal(full["model"][k], cut["model"][k]) for k in full["model"])
    assert (tmp_path / "full" / "genotype.json").read_text() == (tmp_path / "cut" / "genotype.json").read_text()
    records = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert "val_loss" not in records[0] and "val_loss" in records[1]  # α and β frozen for the warm-up epoch
    diagrams = list((tmp_path / "cut").glob("cell_*"))
    assert {p.name.split(".")[0] for p in diagrams} == {"cell_normal", "cell_reduce"}
    assert all(p.stat().st_size > 0 for p in diagrams)


def test_pc_darts_nan_guard_stops_with_one_line_and_keeps_the_checkpoint(tmp_path):
    searcher = Searcher(tiny_pc(tmp_path, epochs=3, steps_per_epoch=3))
    searcher.criterion = searcher.update.criterion = nan_after(searcher.criterion, 8)
    with pytest.raises(GradnasError, match=r"non-finite loss at epoch 2, step \d"):
        searcher.run()
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
