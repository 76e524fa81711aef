"""The batched node executor: a cell's nodes summed source node by source node (``SearchConfig.executor``).

``sum_nodes`` computes a cell edge by edge. Every edge that leaves one node sees the same input, so this
executor computes, for each source state, every candidate op once for all of the edges leaving it
(:mod:`gradnas.edges.wide`) and adds it into all of their target nodes at once: the pending nodes are one
(N, P, C, H, W) accumulator and each candidate costs one fused multiply-add, ``acc += w[:, o] · y_o`` with
the (P,) weights broadcast. In both spaces a source feeds every node after it, so the targets of a source
are exactly the pending nodes; after source s the node s + 1 is complete and leaves the accumulator.

Same semantics as the per-edge path (docs/methods.md §12): ``none`` and removed ops are skipped (a candidate
runs on the edges where it is still active, added through an index when that is not all of them), the edge
scale multiplies the op weights, the Fisher probe sees each (edge, op) raw output, DNAS's skip dropout draws
each edge's mask in the per-edge path's order, and PC-DARTS's partial channels ("first") share the C/K slice
and the bypass of a source; the processed part and the bypass are accumulated apart and shuffled together
once per node, which the shuffle's linearity allows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..arch.base import CellWeights
from ..spaces.ops import ReLUFirst, _concat_groupwise
from .mixed import MixedOp
from .partial import PartialChannelEdge, channel_shuffle, memory_format_of
from .wide import BatchCounter, WideBatchNorm, bns_of, convs_of, repeat_channels, wide_kind


def edge_parts(edge: nn.Module) -> tuple[MixedOp, PartialChannelEdge | None]:
    """The mixed op of an edge and its partial-channel wrapper; ValueError for edges this executor cannot batch."""
    if isinstance(edge, MixedOp):
        return edge, None
    if isinstance(edge, PartialChannelEdge) and edge.sampling == "first" and isinstance(edge.inner, MixedOp):
        return edge.inner, edge
    raise ValueError(f"the batched executor handles mixed and first-channel partial edges, not {type(edge).__name__}")


@dataclass
class Candidate:
    """One candidate op on the edges leaving one source where it is active."""
    op: int
    kind: str
    positions: list[int]               # among the source's edges (its pending targets)
    mixed: list[MixedOp]
    modules: list[nn.Module]
    index: torch.Tensor | None         # positions as a tensor; None when they are all the source's edges
    rows: torch.Tensor | None          # the edges' rows in the source-major weights, likewise
    bns: list[WideBatchNorm] = field(default_factory=list)
    convs: list[tuple[tuple, int]] = field(default_factory=list)  # (slot key, first filter) per conv
    dropped: bool = False              # DNAS's skip dropout applies to it


@dataclass
class Source:
    state: int
    edges: list[int]                   # its edges, by target
    targets: int                       # P: the pending nodes, all fed by this source
    row: int                           # its first row in the source-major weights
    partial: PartialChannelEdge | None
    candidates: list[Candidate]
    bypass: tuple[torch.Tensor | None, torch.Tensor | None] | None  # PC: (positions, rows) of the bypass


class CellPlan:
    """What the executor computes for one cell structure (which ops are active where), built once."""

    def __init__(self, edges: nn.ModuleList, num_inputs: int, num_nodes: int, device: torch.device):
        self.parts = [edge_parts(e) for e in edges]
        self.partial = self.parts[0][1]
        self.num_inputs, self.num_nodes, self.device = num_inputs, num_nodes, device
        base = [sum(num_inputs + j for j in range(n)) for n in range(num_nodes)]
        last = num_inputs + num_nodes - 1
        self.sources: list[Source] = []
        self.slots: dict[tuple, list[torch.Tensor]] = {}
        order: list[int] = []
        for s in range(last):
            first = max(0, s - num_inputs + 1)  # the first pending node
            ids = [base[n] + s for n in range(first, num_nodes)]
            self.sources.append(self._source(s, ids, len(order)))
            order += ids
        self.order = torch.tensor(order, device=device)
        for n in range(num_nodes):
            if not any(self._contributes(base[n] + s) for s in range(num_inputs + n)):
                raise RuntimeError(f"node {num_inputs + n} has no active incoming op")
        self.wide_bns = [bn for src in self.sources for c in src.candidates for bn in c.bns]
        self.counter = BatchCounter([bn for w in self.wide_bns for bn in w.bns])
        self.drops = [(c, c.positions.index(p)) for e in range(len(self.parts))
                      for src in self.sources for c in src.candidates if c.dropped
                      for p in c.positions if src.edges[p] == e]

    def _contributes(self, e: int) -> bool:
        mixed = self.parts[e][0]
        return bool(mixed.active) or mixed.zero >= 0

    def _subset(self, positions: list[int], targets: int, row: int) -> tuple[torch.Tensor | None, ...]:
        if len(positions) == targets:
            return None, None
        return (torch.tensor(positions, device=self.device),
                torch.tensor([row + p for p in positions], device=self.device))

    def _source(self, s: int, ids: list[int], row: int) -> Source:
        mixed = [self.parts[e][0] for e in ids]
        candidates = []
        for o, name in enumerate(mixed[0].op_names):
            positions = [p for p, m in enumerate(mixed) if o in m.active]
            if not positions:
                continue
            members = [mixed[p] for p in positions]
            modules = [m.ops[o] for m in members]
            kinds = {wide_kind(m) for m in modules}
            kind = kinds.pop() if len(kinds) == 1 else "generic"
            index, rows = self._subset(positions, len(ids), row)
            c = Candidate(o, kind, positions, members, modules, index, rows,
                          dropped=members[0].dropped == o)
            if kind in ("pool_bn", "reduce", "body"):
                c.bns = [WideBatchNorm(group) for group in zip(*(bns_of(m) for m in modules))]
            if kind in ("reduce", "body"):
                for j, group in enumerate(zip(*(convs_of(m) for m in modules))):
                    key = (o, j, tuple(group[0].weight.shape))
                    slot = self.slots.setdefault(key, [])
                    c.convs.append((key, len(slot) * group[0].out_channels))
                    slot += [conv.weight for conv in group]
            candidates.append(c)
        partial = self.parts[ids[0]][1]
        bypass = None
        if partial is not None:
            positions = [p for p, e in enumerate(ids) if self._contributes(e)]
            bypass = self._subset(positions, len(ids), row) if positions else None
        return Source(s, ids, len(ids), row, partial, candidates, bypass)

    # -- the forward ---------------------------------------------------------------------------------------
    def run(self, states: list[torch.Tensor], weights: CellWeights, training: bool) -> list[torch.Tensor]:
        x0 = states[0]
        fmt = memory_format_of(x0)
        ops = weights.ops if weights.edges is None else weights.ops * weights.edges[:, None]
        rows = ops.index_select(0, self.order).to(x0.dtype)
        scales = None
        if self.partial is not None and weights.edges is not None:
            scales = weights.edges.index_select(0, self.order).to(x0.dtype)
        wide = {key: torch.cat(params) for key, params in self.slots.items()}
        if training:
            self.counter.step()
        noise = self._dropout_noise(x0, fmt) if training and self.drops else {}
        acc = rest = None
        for src in self.sources:
            x = states[src.state]
            if src.partial is not None:
                width = x.shape[1] // src.partial.k
                x_ops, x_rest = x.split([width, x.shape[1] - width], 1)
                x = x_ops.contiguous(memory_format=fmt)
                if src.bypass is not None:
                    index, where = src.bypass
                    s = None if scales is None else (scales.index_select(0, where) if where is not None
                                                     else scales[src.row:src.row + src.targets])
                    rest = _accumulate(rest, src.partial.bypass(x_rest)[:, None], s, index, src.targets)
            inputs = _SourceInputs(x)
            for c in src.candidates:
                y, shared = self._compute(c, inputs, wide, training)
                E = len(c.positions)
                y5 = y[:, None] if shared else y.unflatten(1, (E, -1))
                for k, m in enumerate(c.mixed):
                    if m.probe is not None:
                        m.probe(c.op, y if shared else y5[:, k])
                if c.dropped and training:
                    y5 = y5 * noise[id(c)]
                w = rows[:, c.op]
                w = w.index_select(0, c.rows) if c.rows is not None else w[src.row:src.row + src.targets]
                acc = _accumulate(acc, y5, w, c.index, src.targets)
            if src.state + 1 >= self.num_inputs:  # the next state has all its inputs now
                states.append(self._node(acc, rest, x0, fmt, src))
                acc = None if acc is None else acc[:, 1:]
                rest = None if rest is None else rest[:, 1:]
        return states

    def _node(self, acc, rest, x0: torch.Tensor, fmt: torch.memory_format, src: Source) -> torch.Tensor:
        if acc is None:  # only zero maps reached the pending nodes so far
            stride = self.parts[0][0].stride
            width = x0.shape[1] // (src.partial.k if src.partial is not None else 1)
            acc = x0.new_zeros((x0.shape[0], 1, width) + x0[:, :, ::stride, ::stride].shape[2:])
        if src.partial is None:
            return acc[:, 0].contiguous(memory_format=fmt)
        return channel_shuffle([acc[:, 0], rest[:, 0]], src.partial.k, fmt)

    def _compute(self, c: Candidate, inputs: "_SourceInputs", wide: dict, training: bool
                 ) -> tuple[torch.Tensor, bool]:
        """The candidate's output on all of its edges: (N, C, H, W) shared by all, or (N, E·C, H, W)."""
        E, first = len(c.positions), c.modules[0]
        if c.kind == "identity":
            return inputs.x, True
        if c.kind == "pool":
            return first(inputs.x), True
        if c.kind == "pool_bn":  # the pool once; its BN over E·C channels keeps every edge's statistics
            return c.bns[0](repeat_channels(first[0](inputs.x), E), training), False
        weight = lambda j: _filters(wide, c, j, E)
        if c.kind == "reduce":
            r = inputs.relu()
            a, b = F.conv2d(r[:, :, ::2, ::2], weight(0)), F.conv2d(r[:, :, 1::2, 1::2], weight(1))
            return c.bns[0](_concat_groupwise(a, b, E), training), False
        if c.kind == "body":
            h, is_wide, j, b = inputs.relu(), False, 0, 0
            for layer in first.body:
                if isinstance(layer, nn.Conv2d):
                    if not is_wide and layer.groups > 1:  # depthwise on the shared input: repeat it E times
                        h = inputs.repeated(E)
                    groups = layer.groups * E if is_wide or layer.groups > 1 else 1
                    h = F.conv2d(h, weight(j), None, layer.stride, layer.padding, layer.dilation, groups)
                    is_wide, j = True, j + 1
                elif isinstance(layer, nn.BatchNorm2d):
                    h, b = c.bns[b](h, training), b + 1
                else:
                    h = F.relu(h)
            return h, False
        # any other op: edge by edge, as the per-edge path computes it
        ys = [m.body(inputs.relu()) if isinstance(m, ReLUFirst) else m(inputs.x) for m in c.modules]
        return torch.cat(ys, 1), False

    def _dropout_noise(self, x0: torch.Tensor, fmt: torch.memory_format) -> dict[int, torch.Tensor]:
        """Each dropped edge's mask, drawn in edge order with the shape and layout F.dropout draws it in, so the
        masks are the per-edge path's; scaled by 1/(1−p) as F.dropout scales them."""
        stride = self.parts[0][0].stride
        node = x0[:, :, ::stride, ::stride].shape
        masks: dict[int, torch.Tensor] = {}
        for c in {id(c): c for c, _ in self.drops}.values():
            N, E, width = node[0], len(c.positions), x0.shape[1] // (self.partial.k if self.partial else 1)
            if fmt == torch.channels_last:
                masks[id(c)] = x0.new_empty((N, node[2], node[3], E, width)).permute(0, 3, 4, 1, 2)
            else:
                masks[id(c)] = x0.new_empty((N, E, width, node[2], node[3]))
        p = self.drops[0][0].mixed[0].skip_dropout
        for c, k in self.drops:
            masks[id(c)][:, k].bernoulli_(1 - p)
        for mask in masks.values():
            mask.div_(1 - p)
        return masks


def _filters(wide: dict, c: Candidate, j: int, E: int) -> torch.Tensor:
    """The E edges' filters of the candidate's j-th conv: a slice of the cell's concatenated weights."""
    key, start = c.convs[j]
    return wide[key].narrow(0, start, E * key[2][0])


def _accumulate(acc: torch.Tensor | None, y5: torch.Tensor, w: torch.Tensor | None, index: torch.Tensor | None,
                targets: int) -> torch.Tensor:
    """acc (N, P, ...) plus w · y5 on the given targets (all when ``index`` is None); w None: weights 1."""
    if w is not None:
        w = w.view(1, -1, 1, 1, 1)
    if index is None:
        if acc is None:
            return y5 * w if w is not None else y5.expand(y5.shape[0], targets, *y5.shape[2:])
        return torch.addcmul(acc, y5, w) if w is not None else acc + y5
    term = y5 * w if w is not None else y5
    term = term.expand(term.shape[0], len(index), *term.shape[2:])
    if acc is None:
        acc = term.new_zeros((term.shape[0], targets) + term.shape[2:])
    return acc.index_add(1, index, term)


class _SourceInputs:
    """A source's input and what its candidates share of it: one ReLU, one E-fold repeat of it."""

    def __init__(self, x: torch.Tensor):
        self.x = x
        self._relu: torch.Tensor | None = None
        self._repeated: dict[int, torch.Tensor] = {}

    def relu(self) -> torch.Tensor:
        if self._relu is None:
            self._relu = F.relu(self.x)
        return self._relu

    def repeated(self, times: int) -> torch.Tensor:
        if times not in self._repeated:
            self._repeated[times] = self.relu() if times == 1 else repeat_channels(self.relu(), times)
        return self._repeated[times]


class BatchedNodes:
    """A drop-in for ``sum_nodes`` (same call), held by a cell; rebuilds its plan when the active ops change."""

    def __init__(self):
        self.plan: CellPlan | None = None
        self.key: tuple | None = None

    def __call__(self, edges: nn.ModuleList, states: list[torch.Tensor], num_nodes: int,
                 weights: CellWeights) -> list[torch.Tensor]:
        if weights.groups is not None:
            raise ValueError("the batched executor does not handle channel-group scales (G-DARTS-A)")
        key = (states[0].device, len(states), num_nodes,
               tuple((tuple(m.active), m.zero) for m in (edge_parts(e)[0] for e in edges)))
        if key != self.key:
            self.plan, self.key = CellPlan(edges, len(states), num_nodes, states[0].device), key
        return self.plan.run(states, weights, edges.training)


EXECUTORS = ("per-edge", "batched")


def batched_fallback(config) -> str | None:
    """Why a search configuration runs edge by edge although ``executor`` is "batched"; None when it batches."""
    if config.edge != "mixed":
        return f"edge kind {config.edge!r}"
    if config.groups > 1 or config.group_attention:
        return "G-DARTS-A channel groups and group attention"
    if config.conv_groups > 1:
        return "grouped convs (conv_groups > 1)"
    if config.partial_k > 1 and config.partial_sampling != "first":
        return f"partial_sampling {config.partial_sampling!r}"
    if config.sync_bn:
        return "sync_bn (the wide BN normalises per rank)"
    if config.compile:
        return "compile"
    return None


def use_batched_nodes(net: nn.Module) -> None:
    """Give every cell of a supernet the batched executor (its edges must be mixed or first-channel partial)."""
    for cell in net.cells:
        for edge in cell.edges:
            edge_parts(edge)
        cell.node_sum = BatchedNodes()
