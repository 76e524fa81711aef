"""The batched executor (all edges leaving a node computed together) equals the per-edge path, for every preset."""
from __future__ import annotations

import copy
import logging
from dataclasses import replace
from functools import partial

import pytest
import torch
import torch.nn as nn

from gradnas.arch.base import CellWeights
from gradnas.config import resolve_config
from gradnas.edges import EDGES, build_edge, mixed_edge
from gradnas.errors import GradnasError
from gradnas.methods import PRESETS
from gradnas.edges.batched import BatchedNodes, CellPlan, _pop
from gradnas.edges.wide import conv as wide_conv, pointwise, subsample
from gradnas.profiling import DispatchCounter, HostSyncGuard, saved_activation_bytes
from gradnas.search.bilevel import ARCH_UPDATES
from gradnas.search.loop import build_search_model, weight_step
from gradnas.selection import derive_genotype
from gradnas.selection.importance import fisher_totals, mixed_op
from gradnas.spaces import NB201, NB201_OPS, NB201Supernet, OPS, register_space


class ConvBN(nn.Sequential):
    """A user op the executor does not know: computed edge by edge inside the batched cell."""

    def __init__(self, C: int, stride: int, affine: bool, groups: int):
        super().__init__(nn.Conv2d(C, C, 3, stride, 1, bias=False), nn.BatchNorm2d(C, affine=affine))


OPS["darts"].register("batched_test_conv_bn")(ConvBN)

# A user's space (as in tests/test_user_space.py): NB201 cells of four nodes, ten edges; the executor reads its layout.
register_space(replace(NB201, name="nb201-four-batched", supernet=partial(NB201Supernet, nodes=4),
                       cell=replace(NB201.cell, num_nodes=4), nodes=4, text_form=None, benchmark=None))

TINY = {"darts": {"channels": 8, "layers": 3}, "nb201": {"channels": 8, "layers": 1},
        "nb201-four-batched": {"channels": 4, "layers": 1}}
# Every preset in every built-in space it searches (test_every_preset_is_compared checks the list), and one case
# per mechanism the executor handles: the DARTS space (pools with BN, FactorizedReduce, merged BNs; at C=4, the
# smallest width it builds), partial channels with edge normalisation, DNAS (per-cell weights, skip dropout, no
# "none"), NB201 ops with and without running statistics (S-DARTS: IS-DARTS's supernet, learned α), IS-DARTS's
# masks and pools without BN (also after removals and by the Fisher probe, below). Grouped convs (conv_groups, as
# G-DARTS-A has them; their wide form has E·g groups on the input repeated E times): NB201 here, the DARTS
# space in the second-order test.
BATCHED = [("darts", "darts", {"channels": 4}), ("darts", "pc-darts", {}), ("darts", "dnas", {}),
           ("nb201", "darts", {}), ("nb201", "s-darts", {}),
           ("nb201", "darts", {"conv_groups": 2}),
           ("darts", "beta-darts", {"channels": 4}), ("nb201", "beta-darts", {}), ("darts", "pc-darts-global", {}),
           # SNAS's and DrNAS's samples are drawn once per forward by the architecture, for both executors alike
           ("darts", "snas", {"channels": 4}), ("nb201", "snas", {}), ("darts", "drnas", {"channels": 4}),
           ("nb201", "drnas", {}),
           ("darts", "pc-darts-imagenet", {}), ("nb201", "pc-darts", {}), ("nb201", "pc-darts-imagenet", {}),
           ("darts", "is-darts", {"channels": 4}), ("nb201", "is-darts", {}), ("darts", "i-darts", {"channels": 4}),
           ("nb201", "i-darts", {}), ("darts", "s-darts", {"channels": 4}),
           ("nb201", "darts-attention", {}), ("nb201", "g-darts-a", {}), ("nb201", "g-pc-darts-a", {}),
           # G-DARTS-A: attention per channel group of the full-width output (split), with grouped convs, and
           # groups folded into the batch (exact), also under partial channels "all" with edge normalisation
           ("darts", "darts-attention", {}), ("darts", "g-darts-a", {}), ("darts", "g-darts", {}),
           ("darts", "g-pc-darts-a", {}), ("nb201", "g-darts", {}),
           # random partial channels (the paper's S): each edge's own channels gathered side by side, written back
           # in place; with DNAS's skip dropout the draws interleave edge by edge as the per-edge path makes them
           ("darts", "pc-darts", {"partial_sampling": "random"}), ("nb201", "darts", {"partial_k": 2,
                                                                                       "partial_sampling": "random"}),
           ("darts", "dnas", {"partial_sampling": "random"}),
           # random partial channels with channel groups: each edge's channels gathered group by group and folded
           # into the batch (exact), with attention per folded sample or per channel group (split)
           ("darts", "g-darts", {"partial_k": 2, "partial_sampling": "random"}),
           ("darts", "darts-attention", {"partial_k": 2, "partial_sampling": "random"}),
           ("nb201", "g-darts", {"partial_k": 2, "partial_sampling": "random", "attention_spread": 0.5}),
           ("nb201", "darts", {"partial_k": 2, "partial_sampling": "random", "groups": 2})]
FALLBACK = [("nb201", "gdas", {}), ("darts", "gdas", {})]
TOL = dict(rtol=1e-10, atol=1e-12)


def pair(space: str, method: str, **overrides):
    """The per-edge model and its batched twin: same parameters, buffers and architecture, float64."""
    options = {"space": space, "method": method, **TINY[space], **overrides}
    config = resolve_config({**options, "executor": "per-edge"})
    torch.manual_seed(0)
    ref = build_search_model(config, 10).double()
    config_b = resolve_config({**options, "executor": "batched"})
    torch.manual_seed(0)
    batched = build_search_model(config_b, 10).double()
    batched.load_state_dict(ref.state_dict())
    assert all(isinstance(c.node_sum, BatchedNodes) for c in batched.net.cells)
    return config, ref, batched


def images(config, n: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    size = 32 if config.imagenet_stem else 8
    x = torch.randn(n, 3, size, size, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 10, (n,), generator=g)


def assert_same_state(ref: nn.Module, batched: nn.Module) -> None:
    a, b = ref.state_dict(), batched.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], **TOL, msg=lambda m: f"{k}: {m}")


def forward_backward(model, x, y, seed: int = 7):
    """Logits and the gradients of every weight and architecture parameter (loss + any regulariser)."""
    torch.manual_seed(seed)  # DNAS's skip dropout draws from the generator
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y)
    extra = model.arch.regularizer()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss if extra is None else loss + extra, params, allow_unused=True)
    return logits, dict(zip([n for n, p in model.named_parameters() if p.requires_grad], grads))


def assert_same_step(ref, batched, x, y) -> None:
    for model in (ref, batched):
        model.train()
    (la, ga), (lb, gb) = forward_backward(ref, x, y), forward_backward(batched, x, y)
    torch.testing.assert_close(lb, la, **TOL)
    assert ga.keys() == gb.keys()
    for k in ga:
        assert (ga[k] is None) == (gb[k] is None), k
        if ga[k] is not None:
            torch.testing.assert_close(gb[k], ga[k], **TOL, msg=lambda m: f"{k}: {m}")
    assert_same_state(ref, batched)  # BN running statistics and their counts
    for model in (ref, batched):
        model.eval()
    with torch.no_grad():
        outputs = [torch.manual_seed(11) and model(x) for model in (ref, batched)]  # random channels draw in eval too
    torch.testing.assert_close(outputs[1], outputs[0], **TOL)


def search_steps(config, model, x, y, steps: int = 2):
    """A few iterations as the search takes them: the architecture step (if any), then the weight step."""
    model.train()
    weights = list(model.weight_parameters())
    optimizer = torch.optim.SGD(weights, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    update = ARCH_UPDATES[config.arch_update](model, criterion=nn.CrossEntropyLoss(), order=config.order,
                                              lr=0.05, betas=config.arch_betas, weight_decay=config.arch_weight_decay)
    for step in range(steps):
        torch.manual_seed(100 + step)
        if update.uses_validation:
            update.arch_step((x, y), (x.flip(0), y.flip(0)), optimizer)
        weight_step(model, nn.CrossEntropyLoss(), optimizer, weights, (x, y), config.grad_clip)


@pytest.mark.parametrize("space,method,overrides", BATCHED)
def test_batched_equals_per_edge(space, method, overrides):
    config, ref, batched = pair(space, method, **overrides)
    x, y = images(config)
    for model in (ref, batched):
        search_steps(config, model, x, y, steps=1)
    assert_same_state(ref, batched)
    assert derive_genotype(batched.arch, space) == derive_genotype(ref.arch, space)
    assert_same_step(ref, batched, x, y)
    kinds = {c.kind for cell in batched.net.cells for src in cell.node_sum.plan.sources
             for c in src.candidates + src.merged}
    assert "generic" not in kinds, kinds  # every op of these presets runs in its wide form


def test_batched_second_order_step_equals_per_edge():
    """Also with grouped convs in the DARTS space (grouped FactorizedReduce, sep and dil convs)."""
    config, ref, batched = pair("darts", "darts", order=2, channels=4, conv_groups=2)
    x, y = images(config)
    for model in (ref, batched):
        search_steps(config, model, x, y, steps=1)
    assert_same_state(ref, batched)


def test_ops_outside_the_default_set():
    """The table's other ops (a factorised 7×7, sep 7×7) run wide; a user op runs edge by edge in the cell."""
    ops = ["none", "max_pool_3x3", "skip_connect", "conv_7x1_1x7", "sep_conv_7x7", "batched_test_conv_bn"]
    config, ref, batched = pair("darts", "darts", ops=ops, channels=4)
    x, y = images(config)
    assert_same_step(ref, batched, x, y)
    sources = batched.net.cells[0].node_sum.plan.sources
    kinds = {c.kind for src in sources for c in src.candidates + src.merged + src.shared}
    assert kinds == {"pool_bn", "identity", "body", "generic"}


def remove_some(model, seed: int = 3) -> None:
    """IS-DARTS-style removals: a random subset of every edge's active ops, at least one kept."""
    g = torch.Generator().manual_seed(seed)
    for cell in model.net.cells:
        for edge in cell.edges:
            op = mixed_op(edge)
            for o in list(op.active)[: -1]:
                if torch.rand((), generator=g) < 0.5:
                    op.remove(o)


@pytest.mark.parametrize("space,method,overrides", [("nb201", "is-darts", {}),
                                                    ("darts", "pc-darts", {"partial_k": 2, "channels": 4}),
                                                    ("darts", "pc-darts", {"partial_k": 2, "channels": 4,
                                                                           "partial_sampling": "random"}),
                                                    ("darts", "dnas", {})])
def test_batched_equals_per_edge_after_removals(space, method, overrides):
    """Rebuilt for the survivors: NB201 ops, the DARTS ops with partial channels (K=2, as PC-DARTS's ImageNet
    search) and DNAS's dropped skip."""
    config, ref, batched = pair(space, method, **overrides)
    x, y = images(config)
    with torch.no_grad():
        batched.eval()(x)  # the plan is built, then rebuilt for the survivors
    plans = [cell.node_sum.plan for cell in batched.net.cells]
    for model in (ref, batched):
        remove_some(model)
    assert_same_step(ref, batched, x, y)
    assert all(cell.node_sum.plan is not plan for cell, plan in zip(batched.net.cells, plans))
    for model in (ref, batched):
        search_steps(config, model, x, y, steps=1)
    assert_same_state(ref, batched)


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_fisher_probe_sees_every_edge_and_op(space):
    config, ref, batched = pair(space, "is-darts")
    x, y = images(config, n=6)
    for model in (ref, batched):
        remove_some(model)
    (sa, na), (sb, nb) = fisher_totals(ref, [(x, y)]), fisher_totals(batched, [(x, y)])
    torch.testing.assert_close(sb, sa, rtol=1e-9, atol=0, equal_nan=True)
    assert torch.equal(na, nb)


def test_buffers_stay_exact_after_moving_and_loading():
    config, ref, batched = pair("nb201", "darts")
    x, y = images(config)
    assert_same_step(ref, batched, x, y)
    batched._apply(torch.clone)  # replaces every buffer, as .to(device) does: the executor re-aliases them
    assert_same_step(ref, batched, x, y)
    fresh = copy.deepcopy(ref)
    batched.load_state_dict(fresh.state_dict())
    assert_same_step(ref, batched, x, y)


def test_every_preset_is_compared():
    """BATCHED holds every registered preset in every built-in space whose search it configures, FALLBACK the rest."""
    searched = set()
    for space in ("darts", "nb201"):
        for method in PRESETS.names():
            try:
                resolve_config({"space": space, "method": method})
            except GradnasError:  # DNAS and its baseline search the DARTS space only
                continue
            searched.add((space, method))
    assert searched - {(space, method) for space, method, _ in BATCHED + FALLBACK} == set()


class OtherEdge(nn.Module):
    """An edge kind of a user's, unknown to the executor."""

    def __init__(self, *args, **options):
        super().__init__()
        self.inner = mixed_edge(*args, **options)

    def forward(self, x, weights, *scales):
        return self.inner(x, weights, *scales)


EDGES.register("batched_test_other")(OtherEdge)


def test_an_unknown_edge_kind_runs_per_edge_with_one_line(caplog):
    config = resolve_config({"space": "nb201", **TINY["nb201"], "edge": "batched_test_other"})
    assert config.executor == "batched"  # the default
    with caplog.at_level(logging.INFO, logger="gradnas"):
        model = build_search_model(config, 10)
    assert all(c.node_sum is None for c in model.net.cells)
    assert [r.getMessage() for r in caplog.records] == [
        "executor batched does not handle edge kind 'batched_test_other': the supernet runs edge by edge"]


def test_a_wrong_batched_result_is_caught():
    """The comparison is not vacuous: a batched executor that mis-weights one candidate fails it."""
    config, ref, batched = pair("darts", "darts", channels=4)
    x, y = images(config)
    plan_run = BatchedNodes.__call__

    def skewed(self, edges, states, num_nodes, weights):
        weights = copy.copy(weights)
        weights.ops = weights.ops * (1 + 1e-6 * torch.arange(weights.ops.shape[1], dtype=weights.ops.dtype))
        return plan_run(self, edges, states, num_nodes, weights)

    BatchedNodes.__call__ = skewed
    try:
        with pytest.raises(AssertionError):
            assert_same_step(ref, batched, x, y)
    finally:
        BatchedNodes.__call__ = plan_run


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_accumulators_gradient_keeps_its_layout(channels_last):
    """Popping the next node off the (N, P, C, H, W) accumulator: its gradient comes back laid out as the
    accumulator is (autograd's own split returns it contiguous, and every op that added into a channels-last
    accumulator then read its gradient transposed, several times slower)."""
    N, P, C, H, W = 2, 3, 4, 5, 5
    base = torch.randn(N, H, W, P, C).permute(0, 3, 4, 1, 2) if channels_last else torch.randn(N, P, C, H, W)
    acc = base.double().requires_grad_()
    node, rest = _pop(acc)
    assert torch.equal(node, acc[:, 0]) and torch.equal(rest, acc[:, 1:])
    grad_node = torch.randn_like(node).contiguous(memory_format=torch.channels_last)
    grad_rest = torch.randn(rest.shape, dtype=rest.dtype)
    grad, = torch.autograd.grad([node, rest], acc, [grad_node, grad_rest])
    assert torch.equal(grad, torch.cat([grad_node[:, None], grad_rest], 1))
    assert grad.stride() == acc.stride()
    node, rest = _pop(acc)
    grad, = torch.autograd.grad(rest, acc, grad_rest)  # the node unused: its part of the gradient is zero
    assert torch.equal(grad, torch.cat([torch.zeros_like(grad_node[:, None]), grad_rest], 1))


@pytest.mark.parametrize("method", ["darts", "pc-darts", "g-darts"])
def test_batched_dispatches_fewer_ops(method):
    config, ref, batched = pair("darts", method, **({"channels": 4} if method == "darts" else {}))
    x, y = images(config)
    counts = []
    for model in (ref, batched):
        model.train()
        model(x)  # plans and aliases built
        with DispatchCounter() as counter:
            nn.functional.cross_entropy(model(x), y).backward()
        counts.append(counter.total)
    assert counts[1] < 0.6 * counts[0], counts


@pytest.mark.parametrize("method", ["darts", "pc-darts", "g-darts", "dnas"])
def test_batched_saves_no_more_activations_than_per_edge(method):
    """The issue's memory goal: what a training forward saves for the backward, batched against per edge."""
    config, ref, batched = pair("darts", method)
    x, _ = images(config)
    saved = []
    for model in (ref, batched):
        model.train()
        model(x)  # plans and aliases built
        saved.append(saved_activation_bytes(model, lambda: model(x))[0])
    assert saved[1] <= saved[0], saved


@pytest.mark.parametrize("space,method", [("darts", "darts"), ("darts", "dnas"), ("nb201", "is-darts"),
                                          ("darts", "g-pc-darts-a")])
def test_batched_forward_and_backward_never_synchronise_with_the_host(space, method):
    config, _, model = pair(space, method, **({"channels": 4} if method == "darts" else {}))
    x, y = images(config)
    model.train()
    model(x)  # the plan is built (its index tensors made) on the first forward
    with HostSyncGuard():
        nn.functional.cross_entropy(model(x), y).backward()


@pytest.mark.parametrize("kernel,stride,size", [(3, 1, 8), (5, 1, 6), (3, 2, 8), (5, 2, 7), (3, 1, 7)])
def test_dilated_depthwise_conv_computes_the_same_sums(kernel, stride, size):
    """The CPU form of a dilated depthwise conv (over the input's pixel phases) gives the direct conv's output
    and gradients, for stride 1 and 2 and for odd sizes (which keep the direct form at stride 1)."""
    g = torch.Generator().manual_seed(0)
    layer = nn.Conv2d(6, 6, kernel, stride, kernel - 1, dilation=2, groups=6, bias=False).double()
    x = torch.randn(3, 6, size, size, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(layer(x))
    results, forms = [], []
    for f in (layer, lambda t: wide_conv(t, layer.weight, layer, 6)):
        x_ = x.clone().requires_grad_()
        y = f(x_)
        results.append((y, *torch.autograd.grad(y, (x_, layer.weight), grad)))
        forms.append(type(y.grad_fn).__name__)
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, **TOL)
    assert forms[1] == ("_PhasedDepthwiseBackward" if stride == 1 and size % 2 == 0 else "ConvolutionBackward0")


@pytest.mark.parametrize("sliced_grad", [False, True])
def test_grouped_pointwise_conv_computes_the_same_sums(sliced_grad):
    """The CPU form of a grouped 1×1 conv (its filters' gradient by one bmm) gives F.conv2d's output and
    gradients, also for a gradient that is a channel slice of a wider channels-last tensor (as a concatenation's
    backward hands it), and each gradient alone when only it is asked for."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 12, 5, 6, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(9, 4, 1, 1, generator=g, dtype=torch.float64)
    wide = torch.randn(3, 18, 5, 6, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    grad = wide[:, 9:] if sliced_grad else wide[:, :9].contiguous(memory_format=torch.channels_last)
    results, forms = [], []
    for f in (lambda t, w: nn.functional.conv2d(t, w, groups=3), lambda t, w: pointwise(t, w, 3)):
        x_, w_ = x.clone().requires_grad_(), weight.clone().requires_grad_()
        y = f(x_, w_)
        both = torch.autograd.grad(y, (x_, w_), grad, retain_graph=True)
        alone = [torch.autograd.grad(y, t, grad, retain_graph=True)[0] for t in (x_, w_)]
        results.append((y, *both, *alone))
        forms.append(type(y.grad_fn).__name__)
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, **TOL)
    assert forms[1] == "_GroupedPointwiseBackward"


def test_subsampling_keeps_the_gradient_channels_last():
    """x[:, :, o::2, o::2] as the batched executor takes it: the slice's values, and a gradient equal to autograd's
    but laid out channels-last as x (adding a contiguous one to x's other gradients is slow)."""
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    for offset in (0, 1):
        y = subsample(x, offset, 2)
        torch.testing.assert_close(y, x[:, :, offset::2, offset::2], rtol=0, atol=0)
        grad = torch.randn_like(y)
        (ours,), (reference,) = torch.autograd.grad(y, x, grad), torch.autograd.grad(x[:, :, offset::2, offset::2], x, grad)
        torch.testing.assert_close(ours, reference, rtol=0, atol=0)
        assert ours.is_contiguous(memory_format=torch.channels_last) and not reference.is_contiguous(
            memory_format=torch.channels_last)


def test_a_user_space_batches_from_its_layout():
    """The four-node cells run from the space's edge layout (ten edges, into nodes 1..4), after removals too."""
    config, ref, batched = pair("nb201-four-batched", "is-darts")
    x, y = images(config)
    assert_same_step(ref, batched, x, y)
    plan = batched.net.cells[0].node_sum.plan
    assert (plan.num_inputs, plan.num_nodes) == (1, 4) and [len(src.edges) for src in plan.sources] == [4, 3, 2, 1]
    for model in (ref, batched):
        remove_some(model)
    assert_same_step(ref, batched, x, y)


def test_a_layout_that_does_not_fit_the_cell_is_refused():
    _, _, batched = pair("nb201", "darts")
    cell = batched.net.cells[0]
    x = torch.zeros(2, 8, 8, 8, dtype=torch.float64)
    weights = batched.arch()[0]
    cell.node_sum = BatchedNodes(NB201.edges(4))  # ten edges for a cell of six
    with pytest.raises(ValueError, match="6 edges, its layout 10"):
        cell(x, weights)


def test_batched_under_bfloat16_autocast():
    """Its own backward passes (phased dilated convs, the weighted sum) run outside autocast: the gradients come
    back in each parameter's dtype, and as far from the float32 ones as the per-edge path's bfloat16 gradients."""
    config, ref, batched = pair("darts", "darts", channels=4)
    x, y = images(config)

    def gradient(model, amp: bool) -> torch.Tensor:
        model.float().train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = nn.functional.cross_entropy(model(x.float()).float(), y)
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params)
        assert all(g.dtype == p.dtype == torch.float32 for g, p in zip(grads, params))
        return torch.cat([g.flatten() for g in grads])

    exact = gradient(ref, False)
    per_edge, batched_bf16 = gradient(ref, True), gradient(batched, True)
    assert (batched_bf16 - exact).norm() < 1.5 * (per_edge - exact).norm()


@pytest.mark.parametrize("channels_last", [False, True])
def test_pools_share_one_bn_and_one_product(channels_last):
    """The DARTS space's pools and their non-affine BNs run once per source in training (C channels, not E·C) and
    are added by one matrix product, the skip by another, in either memory format; in eval mode with running
    statistics the pools run wide."""
    config, ref, batched = pair("darts", "darts", channels=4)
    x, y = images(config)
    x = x if channels_last else x.contiguous()
    assert_same_step(ref, batched, x, y)  # a training step, then an eval-mode forward
    for cell in batched.net.cells:
        for src in cell.node_sum.plan.sources:
            kinds = [c.kind for c in src.shared]
            assert kinds in (["pool_bn", "pool_bn", "identity"], ["pool_bn", "pool_bn"])  # the latter: reductions
            assert all(c.kind not in ("pool_bn", "identity") for c in src.merged + src.candidates)


@pytest.mark.parametrize("mode,attention", [("exact", False), ("exact", True), ("split", True)])
def test_a_layout_with_missing_edges_adds_through_an_index(mode, attention):
    """Edges into nodes 1, 2 from the input and node 3 from nodes 1 and 2 only: each source misses a pending node
    (scaled by zero attention there), with channel groups folded or split; equal to the edges called one by one."""
    layout = [(0, 1), (0, 2), (1, 3), (2, 3)]
    torch.manual_seed(0)
    edges = nn.ModuleList(build_edge("mixed", "nb201", NB201_OPS, 8, 1, groups=2, group_mode=mode,
                                     group_attention=attention) for _ in layout).double()
    reference = copy.deepcopy(edges)
    g = torch.Generator().manual_seed(2)
    weights = CellWeights(torch.rand(4, len(NB201_OPS), generator=g, dtype=torch.float64),
                          groups=torch.rand(4, 2, generator=g, dtype=torch.float64) + 0.5 if attention else None)
    x = torch.randn(3, 8, 6, 6, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)

    def edge(e, h):
        extra = () if weights.groups is None else (weights.groups[e],)
        return reference[e](h, weights.ops[e], *extra)

    n1, n2 = edge(0, x), edge(1, x)
    expected = [x, n1, n2, edge(2, n1) + edge(3, n2)]
    states = BatchedNodes(layout)(edges, [x], 3, weights)
    for got, want in zip(states, expected):
        torch.testing.assert_close(got, want, **TOL)
    plan = CellPlan(edges, layout, torch.device("cpu"))
    assert [[e is not None for e in src.edges] for src in plan.sources] == [[True, True, False], [False, True], [True]]
