"""IS-DARTS (docs/methods.md §5, oracles of §7): the Fisher statistic, masks, schedule, removals, survivors, the
measurement on a supernet, end-to-end searches in both spaces and resume across a shrinking step."""
import copy
import json
import math
from types import SimpleNamespace

import pytest
import torch

from gradnas.arch import BinaryMasks, SoftmaxAlpha
from gradnas.config import resolve_config
from gradnas.errors import GradnasError
from gradnas.genotypes import Genotype, format_darts, parse_darts
from gradnas.models import build_eval_network
from gradnas.search.checkpoint import load_checkpoint
from gradnas.search.loop import Searcher, build_search_model, search, weight_lr_schedule
from gradnas.search.model import SearchModel
from gradnas.search.shrinking import ProgressiveShrinking
from gradnas.selection.importance import IMPORTANCE, fisher_information, fisher_totals, mean_per_type, mixed_op
from gradnas.selection.shrinking import (comparable, comparison_subsets, removal_count, shrink, shrink_epochs,
                                         shrink_steps, survivor_cell, survivors)
from gradnas.spaces import DARTS_OPS, NB201_OPS, SPACES
from gradnas.spaces.blocks import drop_running_stats
from helpers import killed_in_epoch

TINY = {"darts": dict(channels=4, layers=3), "nb201": dict(channels=4, layers=1)}


def elementwise_fisher(y: torch.Tensor) -> torch.Tensor:
    """The definition: φ = 3·(y − μ)² / s⁶ with channel mean and unbiased std, NaN → ∞, mean over c, h, w."""
    y = y.double()
    mu, s = y.mean(1, keepdim=True), y.std(1, keepdim=True)
    phi = 3 * (y - mu) ** 2 / s ** 6
    return phi.nan_to_num(nan=float("inf")).flatten(1).mean(1)


# -- the statistic ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("a", [1.0, 0.5, 3.0])
def test_two_channel_plus_minus_map(a):
    y = torch.tensor([a, -a]).view(1, 2, 1, 1).expand(3, 2, 4, 5)
    F = fisher_information(y)
    assert torch.allclose(F, torch.full((3,), 3 / (8 * a ** 4), dtype=torch.float64))
    if a == 1.0:
        assert F[0].item() == pytest.approx(0.375) and 1 / F[0].item() == pytest.approx(8 / 3)


def test_scaling_law_and_per_pixel_shift():
    y = torch.randn(4, 6, 5, 5)
    F = fisher_information(y)
    for lam in (0.5, 2.0, -3.0):
        assert torch.allclose(fisher_information(lam * y), lam ** -4 * F, rtol=1e-5)
    shifted = y + 7 * torch.randn(4, 1, 5, 5)  # the same constant added to every channel of a pixel
    assert torch.allclose(fisher_information(shifted), F, rtol=1e-4)


def test_constant_and_zero_maps_have_infinite_information():
    assert torch.isinf(fisher_information(torch.zeros(2, 4, 3, 3))).all()
    assert torch.isinf(fisher_information(torch.full((2, 4, 3, 3), 1.5))).all()
    assert torch.isinf(elementwise_fisher(torch.zeros(2, 4, 3, 3))).all()


def test_closed_form_matches_elementwise_form():
    y = torch.randn(5, 8, 6, 7) * torch.rand(5, 1, 6, 7) + torch.randn(5, 8, 1, 1)
    assert torch.allclose(fisher_information(y), elementwise_fisher(y), rtol=1e-4)


# -- masks --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_all_ones_masks_equal_darts_with_zero_alpha(space):
    kw = dict(C=4, layers=3) if space == "darts" else dict(C=4, layers=1)
    torch.manual_seed(3)
    net = SPACES[space].supernet(**kw)
    masked = SearchModel(net, BinaryMasks(net.cell_types, net.op_names, net.in_degrees))
    alpha = SoftmaxAlpha(net.cell_types, net.op_names, net.in_degrees)
    for a in alpha.parameters():
        torch.nn.init.zeros_(a)
    darts = SearchModel(net, alpha)  # the same weights: one supernet, two parameterisations
    assert all(torch.equal(m.ops, d.ops) for m, d in zip(masked.arch(), darts.arch()))
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(masked(x), darts(x))
    assert not list(masked.arch.parameters())  # nothing to learn


# -- schedule, removals, survivors --------------------------------------------------------------------------------

def test_published_schedules():
    assert shrink_steps(0.25) == 4 and shrink_steps(0.143) == 7 and shrink_steps(1.0) == 1
    assert shrink_epochs(30, 0.25, 2) == [22, 24, 26, 28]
    assert shrink_epochs(50, 0.143, 3) == [29, 32, 35, 38, 41, 44, 47]
    assert shrink_epochs(30, 1.0, 0) == [30]  # I-DARTS: one selection after the last epoch
    for bad in [(6, 0.143, 1), (30, 0.0, 2), (30, 1.5, 2), (30, 0.25, -1), (50, 0.5, 18, 10)]:
        with pytest.raises(GradnasError):
            shrink_epochs(*bad)


def test_shrink_rate_study_shrinks_in_the_last_20_epochs(tmp_path):
    """§5.3's study rows with the paper's window; the code's rule would start (0.5, 18) after epoch 14."""
    assert shrink_epochs(50, 0.5, 18) == [14, 32]
    study = {(0.5, 18): [30, 48], (0.25, 6): [30, 36, 42, 48], (0.1, 2): list(range(30, 50, 2)),
             (0.05, 1): list(range(30, 50))}
    for (rate, interval), expected in study.items():
        assert shrink_epochs(50, rate, interval, window=20) == expected
    c = resolve_config({"space": "darts", "method": "is-darts", "shrink_rate": 0.5, "shrink_interval": 18,
                        "shrink_window": 20})
    assert shrink_epochs(c.epochs, c.shrink_rate, c.shrink_interval, c.shrink_window) == [30, 48]
    assert resolve_config({"space": "darts", "method": "is-darts"}).shrink_window is None  # 29 … 47 stays
    config = tiny_config(tmp_path, "nb201", "s-darts", shrink_window=3)  # α: no images to draw
    hook = ProgressiveShrinking(SimpleNamespace(config=config, model=build_search_model(config, 10), out=tmp_path))
    assert hook.schedule == [2, 3, 4, 5]


def run_schedule(space, steps, scores_fn):
    ops = DARTS_OPS if space == "darts" else NB201_OPS
    in_degrees = (2, 3, 4, 5) if space == "darts" else (1, 2, 3)
    subsets = comparison_subsets(space, in_degrees, len(ops))
    alive = torch.ones(sum(in_degrees), len(ops), dtype=torch.bool)
    counts, removed_first = [], None
    for step in range(steps):
        scores = comparable(space, scores_fn(alive), ops)
        new = shrink(scores, alive, subsets, steps, step)
        counts.append([int((alive.flatten()[s.index] & ~new.flatten()[s.index]).sum()) for s in subsets])
        if step == 0:
            removed_first = alive & ~new
        alive = new
    return subsets, alive, counts, removed_first


def iim_like(ops):
    def scores(alive):  # random positive importance, none = 0 (F = ∞), NaN where removed
        s = torch.rand(alive.shape, dtype=torch.float64) + 0.1
        s[:, ops.index("none")] = 0.0
        return s.masked_fill(~alive, float("nan"))
    return scores


def test_darts_removal_table_and_two_survivors_per_node():
    subsets, alive, counts, first = run_schedule("darts", 7, iim_like(DARTS_OPS))
    assert [len(s.index) for s in subsets] == [16, 24, 32, 40]
    per_node = [list(c) for c in zip(*counts)]
    assert per_node == [[2] * 7, [4, 3, 3, 3, 3, 3, 3], [5, 5, 4, 4, 4, 4, 4], [6, 6, 6, 5, 5, 5, 5]]
    assert [int(alive.flatten()[s.index].sum()) for s in subsets] == [2, 2, 2, 2]
    assert first[:, 0].all()  # every none goes at step 1
    assert [removal_count(a, 2, 7, 0) for a in (16, 24, 32, 40)] == [2, 4, 5, 6]


def test_nb201_one_op_per_edge_per_step_and_one_survivor():
    subsets, alive, counts, first = run_schedule("nb201", 4, iim_like(NB201_OPS))
    assert counts == [[1] * 6] * 4
    assert alive.sum(1).tolist() == [1] * 6
    assert first[:, 0].all() and first.sum() == 6  # step 1 removes exactly the nones


def test_none_never_survives_in_darts_even_when_ranked_first():
    ops = DARTS_OPS
    subsets, alive, *_ = run_schedule("darts", 1, lambda a: torch.ones(a.shape, dtype=torch.float64) * 5)
    assert not alive[:, ops.index("none")].any()


def test_survivors_may_share_a_source_and_compile():
    scores = torch.rand(14, 8, dtype=torch.float64)
    scores[0, 4] = scores[0, 5] = 10.0  # node 2: both best candidates come from source 0
    subsets = comparison_subsets("darts", (2, 3, 4, 5), 8)
    alive = torch.ones(14, 8, dtype=torch.bool)
    cell = survivor_cell("darts", survivors(comparable("darts", scores, DARTS_OPS), alive, subsets), subsets, DARTS_OPS)
    assert cell.nodes[0] == (("sep_conv_3x3", 0), ("sep_conv_5x5", 0))
    g = Genotype("darts", cell, cell)
    assert parse_darts(format_darts(g)) == g  # the DARTS text form allows a repeated source
    net = build_eval_network(g, "cifar10", C=8, layers=3, auxiliary=False)
    net.eval()
    assert net(torch.randn(2, 3, 32, 32))[0].shape == (2, 10)


# -- measurement on a supernet ------------------------------------------------------------------------------------

def tiny_masked(space="nb201"):
    net = drop_running_stats(SPACES[space].supernet(**({"C": 4, "layers": 1} if space == "nb201" else {"C": 4, "layers": 3})))
    return SearchModel(net, BinaryMasks(net.cell_types, net.op_names, net.in_degrees))


def test_measurement_reads_raw_op_outputs_summed_over_batches():
    torch.manual_seed(0)
    model = tiny_masked()
    batches = [(torch.randn(6, 3, 8, 8), None), (torch.randn(4, 3, 8, 8), None)]
    sums, counts = fisher_totals(model, batches)
    assert sums.shape == (3, 6, 5) and counts.tolist() == [10.0] * 3
    assert model.training  # the mode is restored
    # edge 0 of cell 0 sees the stem output; its skip op's output is that map itself (weight 1/5 not applied)
    model.eval()
    with torch.no_grad():
        stems = [model.net.stem(x) for x, _ in batches]
    expected = sum(fisher_information(s).sum() for s in stems)
    assert sums[0, 0, NB201_OPS.index("skip_connect")].item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.isinf(sums[:, :, 0]).all()  # none: F = ∞
    model.train()
    mixed_op(model.net.cells[0].edges[0]).remove(NB201_OPS.index("nor_conv_3x3"))
    again, _ = fisher_totals(model, batches)
    assert torch.isnan(again[0, 0, NB201_OPS.index("nor_conv_3x3")])
    assert torch.isfinite(again[0, 1:, 1:]).all() and (again[0, 1:, 1:] > 0).all()


def test_bn_without_running_statistics_uses_the_batch_in_eval_mode():
    net = drop_running_stats(SPACES["nb201"].supernet(C=4, layers=1))
    assert not any("running" in k or "num_batches" in k for k in net.state_dict())
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.eval()
    y = bn(torch.randn(8, bn.num_features, 4, 4) * 5 + 3)
    assert y.mean().abs() < 1e-5 and (y.var(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3


# -- searches -----------------------------------------------------------------------------------------------------

def tiny_config(tmp_path, space, method="is-darts", **kw):
    return resolve_config({"space": space, "method": method, "epochs": 5, "shrink_rate": 0.25, "shrink_interval": 1,
                           "batch_size": 8, "steps_per_epoch": 2, "iim_samples": 12, "progress": False,
                           "out": str(tmp_path / "run"), **TINY[space], **kw})


def test_presets():
    nb = resolve_config({"space": "nb201", "method": "is-darts"})
    assert (nb.epochs, nb.shrink_rate, nb.shrink_interval, nb.iim_samples) == (30, 0.25, 2, 200)
    assert (nb.arch, nb.arch_update, nb.hooks, nb.importance, nb.nesterov, nb.lr_per_step) == \
        ("masks", "none", ["shrinking"], "fisher", True, False)
    for method in ("is-darts", "i-darts", "s-darts"):  # the authors' supernet (item 3 of the BN choices)
        c = resolve_config({"space": "darts", "method": method})
        assert (c.bn_running_stats, c.cell_bn_running_stats, c.pool_bn, c.final_bn_relu) == (True, False, False, True)
    for method in ("darts", "pc-darts"):  # quark0's and PC-DARTS's supernets keep the pool BN, no final BN
        c = resolve_config({"space": "darts", "method": method})
        assert (c.bn_running_stats, c.cell_bn_running_stats, c.pool_bn, c.final_bn_relu) == (True, True, True, False)
    assert (nb.lr, nb.lr_min, nb.weight_decay, nb.batch_size, nb.grad_clip) == (0.025, 0.001, 3e-4, 64, 5.0)
    d = resolve_config({"space": "darts", "method": "is-darts"})
    assert (d.epochs, d.shrink_rate, d.shrink_interval, d.iim_samples, d.layers, d.channels) == (50, 0.143, 3, 600, 8, 16)
    i = resolve_config({"space": "nb201", "method": "i-darts"})
    assert shrink_epochs(i.epochs, i.shrink_rate, i.shrink_interval) == [30]
    s = resolve_config({"space": "nb201", "method": "s-darts"})
    assert (s.arch, s.arch_update, s.importance, s.shrink_rate) == ("softmax", "bilevel", "alpha", 0.25)


@pytest.mark.parametrize("method", ["is-darts", "i-darts"])
def test_weight_rate_is_the_authors_cosine_constant_within_an_epoch(method):
    """The authors' scheduler is updated before every step, but its cosine reads the step only during warm-up
    (0 epochs): the rate of epoch e is 0.001 + 0.024 (1 + cos(π e / T)) / 2 for every step of that epoch."""
    c = resolve_config({"space": "nb201", "method": method})
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=c.lr)
    steps = 4
    scheduler = weight_lr_schedule(optimizer, c, steps)
    for epoch in range(c.epochs):  # as the search loop steps it
        for _ in range(steps):
            expected = 0.001 + (0.025 - 0.001) * (1 + math.cos(math.pi * epoch / c.epochs)) / 2
            assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12, abs=0)
            if c.lr_per_step:
                scheduler.step()
        if not c.lr_per_step:
            scheduler.step()


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_is_darts_search_end_to_end(tmp_path, space):
    result = search(tiny_config(tmp_path, space))
    hook_state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["hooks"][0]
    subsets = comparison_subsets(space, (1, 2, 3) if space == "nb201" else (2, 3, 4, 5), 5 if space == "nb201" else 8)
    for alive in hook_state["alive"].values():
        assert [int(alive.flatten()[s.index].sum()) for s in subsets] == [s.keep for s in subsets]
        assert not alive[:, 0].any()  # none is gone
    # the genotype is the survivors, and the removed ops are gone from every edge
    for cell, kind in zip(result.model.net.cells, result.model.arch.cell_types):
        alive = hook_state["alive"][kind]
        for e, edge in enumerate(cell.edges):
            assert mixed_op(edge).active == alive[e].nonzero().flatten().tolist()
        assert torch.equal(result.model.arch.mask(kind), alive.float())
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "shrink_step" in r]
    assert len(steps) == 4
    first = steps[0]
    n_edges = 6 if space == "nb201" else 14
    assert all(sum(label.endswith(":none") for label in labels) == n_edges for labels in first["removed"].values())
    fisher, iim = first["fisher"]["normal"], first["importance"]["normal"]
    some = next(k for k, v in iim.items() if v > 0)
    assert fisher[some] == pytest.approx(1 / iim[some])
    assert (tmp_path / "run" / "importance.png").stat().st_size > 0
    if space == "darts":
        assert result.genotype.reduce is not None and "reduce" in first["importance"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert any(t.startswith("importance/normal/") for t in tags) and any(t.startswith("fisher/normal/") for t in tags)


def test_resume_across_a_shrinking_step_is_bit_identical(tmp_path, monkeypatch):
    config = lambda d: tiny_config(tmp_path / d, "nb201")
    full = search(config("a"))
    with killed_in_epoch(monkeypatch, Searcher, 2):
        search(config("b"))
    state = load_checkpoint(tmp_path / "b" / "run" / "checkpoint.pt")
    assert state["epoch"] == 2 and state["hooks"][0]["steps_done"] == 2  # two steps behind it, two ahead
    resumed = search(config("b"), resume=True)
    assert resumed.genotype == full.genotype
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(resumed.history) == strip(full.history)


def test_ablations_run(tmp_path):
    s = search(tiny_config(tmp_path / "s", "nb201", "s-darts"))
    assert [r.get("shrink_step") for r in s.history] == [1, 2, 3, 4, None]
    assert all(len(node) == j for j, node in enumerate(s.genotype.normal.nodes, 1))
    i = search(tiny_config(tmp_path / "i", "nb201", "i-darts", shrink_rate=1.0, shrink_interval=0))
    assert [r.get("shrink_step") for r in i.history] == [None, None, None, None, 1]


def test_lr_per_step_anneals_every_iteration(tmp_path):
    searcher = Searcher(tiny_config(tmp_path, "nb201", epochs=2, hooks=[], lr_per_step=True))
    searcher.run()
    assert searcher.history[0]["lr"] == pytest.approx(0.001 + 0.024 * 0.5)  # halfway, after 2 of 4 steps
    assert searcher.optimizer.param_groups[0]["lr"] == pytest.approx(0.001)  # the end of the cosine


def test_bad_shrinking_options_are_one_line_errors(tmp_path):
    with pytest.raises(GradnasError, match="iim_samples"):
        Searcher(tiny_config(tmp_path, "nb201", iim_samples=10 ** 6))
    with pytest.raises(GradnasError, match="shrinking steps"):
        Searcher(tiny_config(tmp_path, "nb201", epochs=2))
    with pytest.raises(GradnasError, match="importance"):
        Searcher(tiny_config(tmp_path, "nb201", importance="entropy"))


# -- fidelity to the authors' code (issue 13) --------------------------------------------------------------------

def test_shrinking_averages_f_over_cells_and_removes_the_largest_mean(tmp_path, monkeypatch):
    """The authors' get_iim averages each cell's mean F over the cells and removes the largest; the mean of
    1/F over cells ranks differently when cells differ in scale (here: skip has F 1, 1000, 1 in the three
    cells, mean 334, mean IIM 0.67; nor_conv_1x1 has 2, 10, 2, mean 4.7, mean IIM 0.37)."""
    # one cell per stage: widths 4, 8, 16; per edge, since the fake below reads the probes' call order, that path's
    searcher = Searcher(tiny_config(tmp_path, "nb201", executor="per-edge"))
    hook = searcher.hooks[0]
    hook.alive["normal"][:, 0] = False  # none went at step 1; step 2 removes one op of the four left per edge
    hook._apply()
    table = {4: [1.0, 2.0, 0.5, 0.5], 8: [1000.0, 10.0, 0.5, 0.5], 16: [1.0, 2.0, 0.5, 0.5]}
    calls = iter(range(10 ** 6))  # the probes see each edge's active ops in op order: skip, 1x1, 3x3, pool
    fake = lambda y: torch.full((y.shape[0],), table[y.shape[1]][next(calls) % 4], dtype=torch.float64)
    monkeypatch.setattr("gradnas.selection.importance.fisher_information", fake)
    record = hook.on_epoch_end(searcher.context, hook.schedule[1] - 1)
    assert record["shrink_step"] == 2
    assert all(label.endswith(":skip_connect") for label in record["removed"]["normal"])
    assert not hook.alive["normal"][:, NB201_OPS.index("skip_connect")].any()
    fisher, iim = record["fisher"]["normal"], record["importance"]["normal"]
    assert fisher["0>1:skip_connect"] == pytest.approx(1002 / 3) and iim["0>1:skip_connect"] == pytest.approx(3 / 1002)
    assert fisher["0>1:nor_conv_1x1"] == pytest.approx(14 / 3)


def test_cell_means_add_sums_and_counts():
    sums = torch.tensor([[[2.0, 4.0]], [[30.0, 6.0]], [[5.0, 1.0]]], dtype=torch.float64)
    means = mean_per_type((sums, torch.tensor([2.0, 2.0, 1.0], dtype=torch.float64)), ["normal", "normal", "reduce"])
    assert means["normal"].tolist() == [[8.0, 2.5]] and means["reduce"].tolist() == [[5.0, 1.0]]
    f = IMPORTANCE["fisher"]
    assert f.importance(means["normal"]).tolist() == [[1 / 8, 1 / 2.5]]
    assert f.rank_key(means["normal"]).tolist() == [[-8.0, -2.5]]


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_ties_remove_the_candidate_first_in_op_order(space):
    """Authors: argmax of F (NB201) and a stable sort by −F (DARTS) both take the first of equal maxima."""
    ops = NB201_OPS if space == "nb201" else DARTS_OPS
    in_degrees = (1, 2, 3) if space == "nb201" else (2, 3, 4, 5)
    subsets = comparison_subsets(space, in_degrees, len(ops))
    alive = torch.ones(sum(in_degrees), len(ops), dtype=torch.bool)
    alive[:, 0] = False  # none is gone
    scores = torch.full(alive.shape, 5.0, dtype=torch.float64)
    scores[:, 2] = scores[:, 3] = 1.0  # two equally least important ops on every edge
    new = shrink(scores, alive, subsets, 4 if space == "nb201" else 7, 1)
    removed = alive & ~new
    if space == "nb201":  # one op per edge: the first of the tie
        assert removed[:, 2].all() and removed.sum() == 6
    else:  # node 2 (edges 0, 1) removes 2 of its 4 tied candidates: edge 0's, the first in (edge, op) order
        assert removed[0, 2] and removed[0, 3] and not removed[1].any()


def bn_layers(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_only_the_cells_bns_use_batch_statistics(tmp_path, space):
    """xautodl's IS-DARTS supernets pass track_running_stats=False to the cells only; the stem, the residual
    blocks and the final BN keep running statistics, and eval mode (the measurement) uses them."""
    model = build_search_model(tiny_config(tmp_path, space), 10)
    net = model.net
    assert all(not bn.track_running_stats for bn in bn_layers(net.cells))
    outside = bn_layers(net.stem) + bn_layers(net.lastact) + (bn_layers(net.blocks) if space == "nb201" else [])
    assert len(outside) == (1 + 1 + 4 if space == "nb201" else 2)
    assert all(bn.track_running_stats and bn.running_mean is not None for bn in outside)
    model.eval()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        before = model(x)
        net.stem[1].running_mean.fill_(0.5)  # eval mode reads the stem's running statistics
        assert not torch.allclose(model(x), before)


def test_darts_space_is_darts_supernet_has_bare_pools_and_a_final_bn_relu(tmp_path):
    pools = (torch.nn.MaxPool2d, torch.nn.AvgPool2d)
    is_darts = build_search_model(tiny_config(tmp_path, "darts"), 10).net
    darts = build_search_model(resolve_config({"space": "darts", **TINY["darts"]}), 10).net
    for net, bare in ((is_darts, True), (darts, False)):
        op = mixed_op(net.cells[0].edges[0])
        for name in ("max_pool_3x3", "avg_pool_3x3"):
            pool = op.ops[DARTS_OPS.index(name)]
            assert isinstance(pool, pools) if bare else isinstance(pool[0], pools) and bn_layers(pool)
    x = torch.randn(3, 12, 6, 6)
    assert torch.equal(mixed_op(is_darts.cells[0].edges[0]).ops[1](x), torch.nn.functional.max_pool2d(x, 3, 1, 1))
    assert isinstance(is_darts.lastact[0], torch.nn.BatchNorm2d) and isinstance(is_darts.lastact[1], torch.nn.ReLU)
    assert isinstance(darts.lastact, torch.nn.Identity)
    assert sum(p.numel() for p in darts.parameters()) + 2 * darts.classifier.in_features == \
        sum(p.numel() for p in is_darts.parameters())  # the final BN's affine parameters only


def test_s_darts_removed_ops_leave_the_softmax(tmp_path):
    result = search(tiny_config(tmp_path, "nb201", "s-darts"))
    arch = result.model.arch
    hook_state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["hooks"][0]
    alive = hook_state["alive"]["normal"]
    assert alive.sum(1).tolist() == [1] * 6
    w = arch()[0].ops
    assert torch.allclose(w.sum(1), torch.ones(6)) and (w[~alive] == 0).all()  # the survivor takes weight 1
    # after three removals the two survivors of an edge share all the weight, and removed α get no gradient
    three = torch.zeros_like(alive)
    three[:, :2] = True
    arch.set_alive("normal", three)
    w = arch()[0].ops
    assert torch.allclose(w[:, :2].sum(1), torch.ones(6)) and (w[:, 2:] == 0).all()
    w.square().sum().backward()
    g = arch.alpha["normal"].grad
    assert (g[:, 2:] == 0).all() and (g[:, :2] != 0).any()


def authors_forward(net, x, masks):
    """The authors' masked NB201 supernet, written out as their code runs it: every op of every edge is computed
    and weighted by m/|O|, removed ones by 0 (``forward_isdarts``); gradnas drops removed ops instead."""
    n_ops, x = len(net.op_names), net.stem(x)
    for k, cell in enumerate(net.cells):
        if str(k) in net.blocks:
            x = net.blocks[str(k)](x)
        nodes, e = [x], 0
        for node in range(1, cell.nodes + 1):
            total = 0
            for source in range(node):
                total = total + sum(op(nodes[source]) * m / n_ops for op, m in zip(mixed_op(cell.edges[e]).ops, masks[e]))
                e += 1
            nodes.append(total)
        x = nodes[-1]
    return net.classifier(net.global_pooling(net.lastact(x)).flatten(1))


def authors_prune(net, masks, batches):
    """The authors' shrinking step: eval mode, a hook on every op keeping the running mean of F over the images,
    the mean over cells, removed ops' F set to 0 and each edge's largest F removed (``prune_edges``)."""
    cells, edges, n_ops = len(net.cells), len(net.cells[0].edges), len(net.op_names)
    sums, images = torch.zeros(cells, edges, n_ops, dtype=torch.float64), 0
    handles = [op.register_forward_hook(lambda m, i, y, at=(c, e, o): sums.__setitem__(at, sums[at] + elementwise_fisher(y).sum()))
               for c, cell in enumerate(net.cells) for e, edge in enumerate(cell.edges)
               for o, op in enumerate(mixed_op(edge).ops)]
    net.eval()
    with torch.no_grad():
        for x, _ in batches:
            authors_forward(net, x, masks)
            images += len(x)
    net.train()
    for h in handles:
        h.remove()
    mean = (sums / images).mean(0)
    removed = torch.where(masks == 0, torch.zeros_like(mean), mean).argmax(1)
    masks[torch.arange(edges), removed] = 0


@pytest.mark.parametrize("executor", ["per-edge", "batched"])
def test_search_steps_and_shrinking_equal_the_authors_masked_loop(tmp_path, executor):
    """gradnas's IS-DARTS iterations, scheduler and shrinking hook against the authors' loop on the same weights
    and batches (float64): Nesterov SGD at their per-epoch cosine, clip 5 over all weights, the masked forward
    above and their pruning after epochs 1..4 of 5. The logits of every step and the masks after every
    shrinking step must agree; dropping a removed op must equal weighting it by 0, in training and in the
    measurement, and the mean F over cells (not IIM) must decide."""
    torch.manual_seed(0)
    searcher = Searcher(tiny_config(tmp_path, "nb201", executor=executor))
    model, hook, c = searcher.model.double(), searcher.hooks[0], searcher.config
    fmt = searcher.memory_format
    batches = [(x.double().contiguous(memory_format=fmt), y) for (x, y), _ in zip(searcher.train_loader, range(4))]
    hook.samples = batches[:2]
    ref = copy.deepcopy(model.net)
    masks = torch.ones(6, len(NB201_OPS), dtype=torch.float64)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=c.lr, momentum=0.9, nesterov=True, weight_decay=3e-4)
    steps = 0
    for epoch in range(c.epochs):
        for group in ref_opt.param_groups:
            group["lr"] = 0.001 + (0.025 - 0.001) * (1 + math.cos(math.pi * epoch / c.epochs)) / 2
        model.train()
        for _ in range(2):
            x, y = batches[steps % len(batches)]
            _, logits = searcher.iteration(False, x, y)
            ref_opt.zero_grad()
            ref_logits = authors_forward(ref, x, masks)
            torch.nn.functional.cross_entropy(ref_logits, y).backward()
            torch.nn.utils.clip_grad_norm_(ref.parameters(), 5.0)
            ref_opt.step()
            torch.testing.assert_close(logits, ref_logits.detach(), rtol=0, atol=1e-9)
            steps += 1
        searcher.scheduler.step()
        record = hook.on_epoch_end(searcher.context, epoch)
        if epoch + 1 in range(c.epochs - 4, c.epochs):
            authors_prune(ref, masks, hook.samples)
            assert record["shrink_step"] == epoch + 1  # steps 1..4 after epochs 1..4
            assert torch.equal(hook.alive["normal"], masks.bool()), (epoch, hook.alive["normal"], masks)
    assert hook.alive["normal"].sum(1).tolist() == [1] * 6
    assert masks.argmax(1).unique().numel() > 1  # not one op everywhere
