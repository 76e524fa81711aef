"""The batched node executor: a cell's nodes summed source node by source node (``SearchConfig.executor``).

``sum_nodes`` computes a cell edge by edge. Every edge that leaves one node sees the same input, so this
executor computes, for each source state, every candidate op once for all of the edges leaving it
(:mod:`gradnas.edges.wide`) and adds it into all of their target nodes at once: the pending nodes are one
(N, P, C, H, W) accumulator and each candidate costs one fused multiply-add, ``acc += w[:, o] · y_o`` with
the (P,) weights broadcast. The cell is read as data, its edges' (source, target) from the space
(``SearchSpace.edges``); since every edge leads to a later node, after source s the node s + 1 is complete
and leaves the accumulator. In both built-in spaces a source feeds every pending node; where a layout has
no edge from a source to one of them, the source's candidates are added through an index.

Same semantics as the per-edge path (docs/methods.md §12): ``none`` and removed ops are skipped (a candidate
runs on the edges where it is still active, added through an index when that is not all of them), the edge
scale multiplies the op weights, the Fisher probe sees each (edge, op) raw output, DNAS's skip dropout draws
each edge's mask in the per-edge path's order, and PC-DARTS's partial channels ("first") share the C/K slice
and the bypass of a source; the processed part and the bypass are accumulated apart and shuffled together
once per node, which the shuffle's linearity allows ("all", G-PC-DARTS-A's, shuffles the node alone).
Random partial channels give every edge its own C/K channels: all candidates then run wide on the edges' gathered
channels (gathered group by group and folded into the batch under G-DARTS-A's exact groups), are summed per edge
and written back to those channels of their nodes, the bypass to the others.
G-DARTS-A's channel groups fold a source's input into the batch once for all of its edges ("exact"), and
group attention scales an edge's whole output, ``a_e ⊙ Σ_o w_o·y_o``: the source's candidates are summed
per target, then scaled by their edges' attention in one multiply-add into the pending nodes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..arch import ARCHITECTURES
from ..arch.base import CellWeights
from ..capture import not_capturing
from ..spaces.ops import ReLUFirst, _concat_groupwise
from .groups import ChannelGroupEdge, fold_groups, unfold_groups
from .mixed import MixedOp
from .partial import PartialChannelEdge, channel_shuffle, memory_format_of
from .wide import (BATCH_NORMS, BatchCounter, SharedNorm, WideBatchNorm, bns_of, conv, convs_of, pointwise,
                   repeat_channels, subsample, wide_kind)


def edge_parts(edge: nn.Module) -> tuple[MixedOp, PartialChannelEdge | None, ChannelGroupEdge | None]:
    """The mixed op of an edge, its partial-channel and its channel-group wrappers; ValueError for edges this
    executor cannot batch."""
    partial = grouped = None
    if isinstance(edge, PartialChannelEdge):
        partial, edge = edge, edge.inner
    if isinstance(edge, ChannelGroupEdge):
        grouped, edge = edge, edge.inner
    if isinstance(edge, MixedOp):
        return edge, partial, grouped
    raise ValueError("the batched executor handles mixed edges, with partial channels and with channel groups, "
                     f"not {type(edge).__name__}")


@dataclass
class Candidate:
    """One candidate op on the edges leaving one source where it is active."""
    op: int
    kind: str
    positions: list[int]               # among the source's edges (its pending targets)
    mixed: list[MixedOp]
    modules: list[nn.Module]
    index: torch.Tensor | None         # positions as a tensor; None when they are all the source's edges
    dropped: bool                      # DNAS's skip dropout applies to it
    final: list[nn.BatchNorm2d] | None  # the BN each edge's op ends with, if it ends with one
    weights: int = -1                  # its chunk of the cell's gathered op weights (unless merged)
    merged: bool = False               # its final BN runs in the source's merged BN
    bns: list[WideBatchNorm] = field(default_factory=list)  # its other BNs, in order
    convs: list[tuple[tuple, int]] = field(default_factory=list)  # (slot, chunk) of each conv's filters


@dataclass
class Source:
    state: int
    edges: list[int | None]            # its edge into each pending node, by target (None: none there)
    partial: PartialChannelEdge | None
    candidates: list[Candidate]        # computed and added one by one
    merged: list[Candidate]            # ending in one BN over all their edges' channels, then one weighted sum
    merged_bn: WideBatchNorm | None
    merged_weights: int                # their chunk of the gathered op weights, (candidate, edge) order
    shared: list[Candidate]            # one map for all edges (pools with a non-affine BN first, then skip and
    shared_norm: SharedNorm | None     # BN-free pools), added by matrix products; the BN of the first ones
    shared_weights: int                # their (candidate, pending node) weights, 0 where one is not active
    bypass: tuple[torch.Tensor | None, int, list[int]] | None  # PC: the bypass's (index, chunk of the gathered
    #                                                              edge scales, positions)


class CellPlan:
    """What the executor computes for one cell structure (which ops are active where), built once.

    The candidates of a source that end with a BN and run on all of its edges share one BN over all their
    channels (their inputs concatenated: one BN and one concatenation instead of one BN each) and one weighted
    sum, ``Σ_o w[o, e] · y[o, e]``: the weights folded into the BN's affine transform, then a sum over the stacked
    outputs.

    Everything a forward slices per source is gathered once per cell and split, so that autograd's backward of
    the pieces is one concatenation, not a zero-filled copy per slice: the op weights of every candidate
    (one ``index_select`` of the (E, |O|) weights), the edge scales of every bypass, and the filters of every
    wide conv (one ``torch.cat`` of the edges' parameters per conv slot).
    """

    def __init__(self, edges: nn.ModuleList, layout: Sequence[tuple[int, int]], device: torch.device):
        if len(layout) != len(edges):
            raise ValueError(f"the cell has {len(edges)} edges, its layout {len(layout)}")
        not_capturing("the batched executor's plan")
        self.parts = [edge_parts(e) for e in edges]
        _, self.partial, grouped = self.parts[0]
        # channels of a state that reach the ops (PC-DARTS "first": 1/K), and groups folded into the batch
        self.slice_k = self.partial.k if self.partial is not None and self.partial.sampling != "all" else 1
        # "random": each edge's ops see its own random C/K channels, written back in place into the full node
        self.random = self.partial is not None and self.partial.sampling == "random"
        self.fold = grouped.groups if grouped is not None and grouped.fold else 1
        self.num_inputs = min(target for _, target in layout)
        last = max(target for _, target in layout)
        self.num_nodes, self.device = last - self.num_inputs + 1, device
        if any(not 0 <= source < target for source, target in layout):
            raise ValueError("every edge of a cell must lead from an earlier state to a later node")
        self.num_ops = len(self.parts[0][0].op_names)
        self.weight_index: list[int] = []
        self.weight_sizes: list[int] = []
        self.zero_weight = len(self.parts) * self.num_ops  # the index of a 0 appended to the cell's op weights
        self.eyes: dict[tuple, torch.Tensor] = {}
        self.scale_index: list[int] = []
        self.scale_sizes: list[int] = []
        self.group_index: list[int] = []  # each source's edges into its pending nodes, len(edges) for none
        self.slots: dict[tuple, list[torch.Tensor]] = {}
        self.slot_sizes: dict[tuple, list[int]] = {}
        edge_of = {(source, target): e for e, (source, target) in enumerate(layout)}
        # source s adds into the nodes still pending while it runs (all after it); where no edge of the layout
        # leads to one of them, its slot there is None
        self.sources = [self._source(s, [edge_of.get((s, t)) for t in range(max(s + 1, self.num_inputs), last + 1)])
                        for s in range(last)]
        for t in range(self.num_inputs, last + 1):
            if not any(self._contributes(e) for e, (_, target) in enumerate(layout) if target == t):
                raise RuntimeError(f"node {t} has no active incoming op")
        self.weight_index_t = torch.tensor(self.weight_index, device=device)
        self.weight_padded = self.zero_weight in self.weight_index
        self.scale_index_t = torch.tensor(self.scale_index, device=device)
        self.group_index_t = torch.tensor(self.group_index, device=device)
        self.group_padded = len(self.parts) in self.group_index  # a source lacks an edge to a pending node
        self.group_sizes = [len(src.edges) for src in self.sources]
        self.wide_bns = [bn for src in self.sources for c in src.candidates + src.merged + src.shared for bn in c.bns]
        self.wide_bns += [src.merged_bn for src in self.sources if src.merged_bn is not None]
        self.shared_norms = [src.shared_norm for src in self.sources if src.shared_norm is not None]
        self.counter = BatchCounter([bn for w in self.wide_bns for bn in w.bns])
        self.filter_slots = [(key, params, self.slot_sizes[key]) for key, params in self.slots.items()]
        # DNAS's masks, in the order the per-edge path draws them: by edge, i.e. by target node, then source
        self.drops = sorted(((src.edges[p], c, k) for src in self.sources for c in src.candidates if c.dropped
                             for k, p in enumerate(c.positions)), key=lambda t: t[0])
        self.drops_by_edge: dict[int, list[tuple[Candidate, int]]] = {}
        for e, c, k in self.drops:
            self.drops_by_edge.setdefault(e, []).append((c, k))

    def _contributes(self, e: int) -> bool:
        mixed = self.parts[e][0]
        return bool(mixed.active) or mixed.zero >= 0

    def _index(self, positions: list[int], targets: int) -> torch.Tensor | None:
        return None if len(positions) == targets else torch.tensor(positions, device=self.device)

    def _candidate(self, o: int, ids: list[int | None]) -> Candidate | None:
        positions = [p for p, e in enumerate(ids) if e is not None and o in self.parts[e][0].active]
        if not positions:
            return None
        members = [self.parts[ids[p]][0] for p in positions]
        modules = [m.ops[o] for m in members]
        kinds = {wide_kind(m) for m in modules}
        kind = kinds.pop() if len(kinds) == 1 else "generic"
        bns = [list(group) for group in zip(*(bns_of(m) for m in modules))]
        ends_in_bn = kind in ("pool_bn", "reduce") or kind == "body" and isinstance(modules[0].body[-1], BATCH_NORMS)
        c = Candidate(o, kind, positions, members, modules, self._index(positions, len(ids)),
                      dropped=members[0].dropped == o, final=bns[-1] if ends_in_bn else None)
        if kind in ("pool_bn", "reduce", "body"):
            c.bns = [WideBatchNorm(group) for group in bns]
        if kind in ("reduce", "body"):
            for j, group in enumerate(zip(*(convs_of(m) for m in modules))):
                key = (o, j, tuple(group[0].weight.shape))
                sizes = self.slot_sizes.setdefault(key, [])
                c.convs.append((key, len(sizes)))
                sizes.append(len(group) * group[0].out_channels)
                self.slots.setdefault(key, []).extend(conv.weight for conv in group)
        return c

    def _weights(self, ids: list[int | None], candidates: list[Candidate]) -> int:
        """Append the op weights of ``candidates`` on their edges to the gathered ones; returns their chunk."""
        self.weight_index += [ids[p] * self.num_ops + c.op for c in candidates for p in c.positions]
        self.weight_sizes.append(sum(len(c.positions) for c in candidates))
        return len(self.weight_sizes) - 1

    def _source(self, s: int, ids: list[int | None]) -> Source:
        candidates = [c for c in (self._candidate(o, ids) for o in range(self.num_ops)) if c is not None]
        shared_norm, shared = None, []
        if not self.random:  # with random channels every edge sees its own input: nothing is shared
            normed = [c for c in candidates if c.kind == "pool_bn" and not c.dropped and SharedNorm.fits(c.bns[0])]
            if normed:
                try:
                    shared_norm = SharedNorm([c.bns[0] for c in normed])
                except ValueError:  # their BNs differ: each stays a wide candidate
                    normed = []
            shared = normed + [c for c in candidates if c.kind in ("identity", "pool") and not c.dropped]
        candidates = [c for c in candidates if c not in shared]
        merged = [c for c in candidates if c.index is None and not c.dropped and c.final is not None]
        merged_bn = None
        if len(merged) > 1:
            try:
                merged_bn = WideBatchNorm([bn for c in merged for bn in c.final])
            except ValueError:  # their BNs differ (width, eps, momentum): each keeps its own
                merged = []
        else:
            merged = []
        for c in merged:
            c.merged, c.bns = True, c.bns[:-1]
        separate = [c for c in candidates if not c.merged]
        for c in separate:
            c.weights = self._weights(ids, [c])
        merged_weights = self._weights(ids, merged) if merged else -1
        shared_weights = -1
        if shared:
            self.weight_index += [ids[p] * self.num_ops + c.op if p in c.positions else self.zero_weight
                                  for c in shared for p in range(len(ids))]
            self.weight_sizes.append(len(shared) * len(ids))
            shared_weights = len(self.weight_sizes) - 1
        present = [e for e in ids if e is not None]
        partial, bypass = (self.parts[present[0]][1] if present else None), None
        self.group_index += [len(self.parts) if e is None else e for e in ids]
        if partial is not None and self.slice_k > 1:
            positions = [p for p, e in enumerate(ids) if e is not None and self._contributes(e)]
            if positions:
                self.scale_index += [ids[p] for p in positions]
                self.scale_sizes.append(len(positions))
                bypass = (self._index(positions, len(ids)), len(self.scale_sizes) - 1, positions)
        return Source(s, ids, partial, separate, merged, merged_bn, merged_weights, shared, shared_norm,
                      shared_weights, bypass)

    def alias(self) -> None:
        """Make sure the edges' BN buffers are views into the wide ones (before every forward)."""
        for bn in self.wide_bns:
            bn.alias()
        for norm in self.shared_norms:
            norm.alias()
        self.counter.alias()

    # -- the forward ---------------------------------------------------------------------------------------
    def run(self, states: list[torch.Tensor], weights: CellWeights, training: bool) -> list[torch.Tensor]:
        x0 = states[0]
        fmt = memory_format_of(x0)
        ops = weights.ops if weights.edges is None else weights.ops * weights.edges[:, None]
        flat = ops.flatten()
        if self.weight_padded:
            flat = torch.cat([flat, flat.new_zeros(1)])
        op_weights = flat.index_select(0, self.weight_index_t).to(x0.dtype).split(self.weight_sizes)
        scales = None
        if weights.edges is not None and self.scale_sizes:
            scales = weights.edges.index_select(0, self.scale_index_t).to(x0.dtype).split(self.scale_sizes)
        filters = {key: torch.cat(params).split(sizes) for key, params, sizes in self.filter_slots}
        attention = self._attention(weights.groups, x0) if weights.groups is not None else None
        if training:
            self.counter.step()
        noise, channels = self._draws(x0, fmt, training)
        acc = rest = None
        for src in self.sources:
            x, targets = states[src.state], len(src.edges)
            if self.random:  # the ops' terms summed on each edge's own channels, written to them; the bypass elsewhere
                inputs = _SourceInputs(x, [None if e is None else channels[e] for e in src.edges], fmt, self.fold)
                terms = self._add_candidates(src, inputs, filters, op_weights, noise, None, training)
                if terms is not None:
                    acc = inputs.scatter(acc, terms if attention is None else terms * attention[src.state])
                acc = self._add_bypass(src, inputs, scales, acc)
            else:
                if self.slice_k > 1:
                    width = x.shape[1] // self.slice_k
                    x_ops, x_rest = x.split([width, x.shape[1] - width], 1)
                    x = x_ops.contiguous(memory_format=fmt)
                    if src.bypass is not None:
                        index, chunk, _ = src.bypass
                        rest = _accumulate(rest, src.partial.bypass(x_rest)[:, None],
                                           None if scales is None else scales[chunk], index, targets)
                inputs = _SourceInputs(fold_groups(x, self.fold) if self.fold > 1 else x)
                if attention is None:
                    acc = self._add_candidates(src, inputs, filters, op_weights, noise, acc, training)
                else:  # the source's terms summed apart, then scaled by each edge's attention at once
                    terms = self._add_candidates(src, inputs, filters, op_weights, noise, None, training)
                    if terms is not None:
                        scale = attention[src.state]
                        acc = terms * scale if acc is None else torch.addcmul(acc, terms, scale)
            if src.state + 1 >= self.num_inputs:  # the next state has all its inputs now
                if acc is None:  # only zero maps reached the pending nodes so far
                    N, C, H, W = self._node_shape(x0)
                    if self.random:  # full nodes, groups unfolded
                        N, C = N // self.fold, C * self.fold * self.slice_k
                    acc = x0.new_zeros((N, targets, C, H, W))
                (node, acc), (part, rest) = _pop(acc), _pop(rest)
                node = unfold_groups(node, self.fold) if self.fold > 1 and not self.random else node
                if self.partial is None or self.random:  # random channels are processed in place: no shuffle
                    states.append(node.contiguous(memory_format=fmt))
                else:
                    states.append(channel_shuffle([node] if part is None else [node, part], self.partial.k, fmt))
        return states

    def _add_candidates(self, src: Source, inputs: "_SourceInputs", filters: dict, op_weights: Sequence[torch.Tensor],
                        noise: dict, acc: torch.Tensor | None, training: bool) -> torch.Tensor | None:
        """acc plus every candidate of ``src`` on its edges, weighted: the merged ones first, the shared ones, then
        the rest one by one."""
        if src.merged:
            acc = self._merged(src, inputs, filters, op_weights[src.merged_weights], acc, training)
        if src.shared:
            acc = self._shared(src, inputs, op_weights[src.shared_weights], acc, training)
        for c in src.candidates:
            y, shared = self._compute(c, inputs, filters, training)
            y5 = y[:, None] if shared else y.unflatten(1, (len(c.positions), -1))
            for k, m in enumerate(c.mixed):
                if m.probe is not None:
                    m.probe(c.op, y if shared else y5[:, k])
            if c.dropped and training:
                y5 = y5 * noise[id(c)]
            acc = _accumulate(acc, y5, op_weights[c.weights], c.index, len(src.edges))
        return acc

    def _attention(self, groups: torch.Tensor, x0: torch.Tensor) -> list[torch.Tensor]:
        """Each source's (E, M) attention on its pending nodes, shaped to scale its summed terms: per folded
        sample (b·M + m carries group m) or per channel (channel m·C/M + q belongs to group m)."""
        M = groups.shape[1]
        if self.group_padded:  # row E: the scale of a slot without an edge, where nothing was added
            groups = torch.cat([groups, groups.new_zeros(1, M)])
        per_source = groups.index_select(0, self.group_index_t).to(x0.dtype).split(self.group_sizes)
        N, width = self._node_shape(x0)[:2]
        if self.fold > 1:
            return [a.t().repeat(N // M, 1).view(N, -1, 1, 1, 1) for a in per_source]
        return [a.repeat_interleave(width // M, 1).view(1, -1, width, 1, 1) for a in per_source]

    def _merged(self, src: Source, inputs: "_SourceInputs", filters: dict, weights: torch.Tensor,
                acc: torch.Tensor | None, training: bool) -> torch.Tensor:
        """acc plus the merged candidates: their final BN at once, then Σ_o w[o, e] · y[o, e]."""
        x = torch.cat([self._compute(c, inputs, filters, training)[0] for c in src.merged], 1)
        K, P = len(src.merged), len(src.edges)
        scale = weights.view(K * P, 1).expand(K * P, x.shape[1] // (K * P)).reshape(-1)  # w[o, e] per channel
        if any(m.probe is not None for c in src.merged for m in c.mixed):
            # the importance measurement reads each (edge, op)'s raw output (no autograd there)
            y = src.merged_bn(x, training)
            y6 = y.unflatten(1, (K, P, -1))
            for k, c in enumerate(src.merged):
                for e, m in enumerate(c.mixed):
                    if m.probe is not None:
                        m.probe(c.op, y6[:, k, e])
            y = y * scale.view(1, -1, 1, 1)
        else:  # the weights folded into the BN's affine transform: no pass over the wide output of their own
            y = src.merged_bn(x, training, scale)
        term = _sum_candidates(y, K, P)
        return term if acc is None else acc + term

    def _shared(self, src: Source, inputs: "_SourceInputs", weights: torch.Tensor, acc: torch.Tensor | None,
                training: bool) -> torch.Tensor:
        """acc plus the shared candidates, Σ_j w[j, p] · y_j into every pending node p as matrix products over the
        channels (w is 0 where candidate j is not active): the pooled maps with a BN normalised at once, then
        the skip's and the other pools' maps."""
        P = len(src.edges)
        w = weights.view(len(src.shared), P)
        normed = len(src.shared_norm.norms) if src.shared_norm is not None else 0
        if normed:
            maps = [c.modules[0][0](inputs.x) for c in src.shared[:normed]]
            y = src.shared_norm(maps, training)
            if y is None:  # eval mode with running statistics: every edge's BN has its own, so each runs wide
                for j, c in enumerate(src.shared[:normed]):
                    E = len(c.positions)
                    y5 = c.bns[0](repeat_channels(maps[j], E), training).unflatten(1, (E, -1))
                    for k, m in enumerate(c.mixed):
                        if m.probe is not None:
                            m.probe(c.op, y5[:, k])
                    acc = _accumulate(acc, y5, w[j] if c.index is None else w[j].index_select(0, c.index), c.index, P)
            else:
                acc = self._add_shared(src.shared[:normed], y, w[:normed], acc)
        plain = src.shared[normed:]
        if plain:
            maps = [inputs.x if c.kind == "identity" else c.modules[0](inputs.x) for c in plain]
            acc = self._add_shared(plain, maps[0] if len(maps) == 1 else torch.cat(maps, 1), w[normed:], acc)
        return acc

    def _add_shared(self, shared: list[Candidate], y: torch.Tensor, w: torch.Tensor, acc: torch.Tensor | None
                    ) -> torch.Tensor:
        """acc plus y's J maps of C channels (N, J·C, H, W), map j weighted by w[j, p] into pending node p."""
        (J, P), C = w.shape, y.shape[1] // len(shared)
        for j, c in enumerate(shared):
            for m in c.mixed:
                if m.probe is not None:
                    m.probe(c.op, y[:, j * C:(j + 1) * C])
        key = (C, w.dtype, w.device)
        if torch.compiler.is_compiling():  # a constant of the graph
            eye = torch.eye(C, dtype=w.dtype, device=w.device)
        elif key not in self.eyes:
            not_capturing("the identity of a shared map")
            eye = self.eyes[key] = torch.eye(C, dtype=w.dtype, device=w.device)
        else:
            eye = self.eyes[key]
        product = (w.view(J, 1, P, 1) * eye.view(1, C, 1, C)).reshape(J * C, P * C)  # w ⊗ I_C
        return _add_product(acc, y, product, P)

    def _node_shape(self, x0: torch.Tensor) -> tuple[int, int, int, int]:
        """(N, C, H, W) of what the ops of this cell output: strided, sliced to 1/K, groups folded."""
        stride = self.parts[0][0].stride
        N, C, H, W = x0[:, :, ::stride, ::stride].shape
        return N * self.fold, C // self.slice_k // self.fold, H, W

    def _compute(self, c: Candidate, inputs: "_SourceInputs", filters: dict, training: bool
                 ) -> tuple[torch.Tensor, bool]:
        """The candidate's output on all of its edges: (N, C, H, W) shared by all, or (N, E·C, H, W); a merged
        candidate's stops before its final BN."""
        E, first, positions = len(c.positions), c.modules[0], c.positions
        shared = inputs.picks is None  # else each edge has its own channels: every candidate runs wide
        if c.kind == "identity":
            return (inputs.x, True) if shared else (inputs.wide(positions, relu=False), False)
        if c.kind == "pool":
            return (first(inputs.x), True) if shared else (first(inputs.wide(positions, relu=False)), False)
        if c.kind == "pool_bn":  # the pool once; its BN over E·C channels keeps every edge's statistics
            pooled = repeat_channels(first[0](inputs.x), E) if shared else first[0](inputs.wide(positions, False))
            return (pooled if c.merged else c.bns[0](pooled, training)), False
        weight = lambda j: filters[c.convs[j][0]][c.convs[j][1]]
        if c.kind == "reduce":  # grouped: each edge's groups on its own copy of the input
            g = first.groups
            r = inputs.relu() if g == 1 and shared else inputs.wide(positions)
            groups = E * g if g > 1 or not shared else 1
            a = pointwise(subsample(r, 0, 2), weight(0), groups)
            b = pointwise(subsample(r, 1, 2), weight(1), groups)
            h = _concat_groupwise(a, b, E * g)
            return (h if c.merged else c.bns[0](h, training)), False
        if c.kind == "body":
            h, is_wide, j, b = (inputs.relu(), False, 0, 0) if shared else (inputs.wide(positions), True, 0, 0)
            for layer in first.body[:-1] if c.merged else first.body:
                if isinstance(layer, nn.Conv2d):
                    if not is_wide and layer.groups > 1:  # depthwise on the shared input: repeat it E times
                        h = inputs.wide(positions)
                    groups = layer.groups * E if is_wide or layer.groups > 1 else 1
                    h = conv(h, weight(j), layer, groups)
                    is_wide, j = True, j + 1
                elif isinstance(layer, BATCH_NORMS):
                    h, b = c.bns[b](h, training), b + 1
                else:
                    h = F.relu(h)
            return h, False
        # any other op: edge by edge, as the per-edge path computes it
        ys = [m.body(inputs.wide([p])) if isinstance(m, ReLUFirst) else m(inputs.wide([p], relu=False))
              for m, p in zip(c.modules, positions)]
        return torch.cat(ys, 1), False

    def _draws(self, x0: torch.Tensor, fmt: torch.memory_format, training: bool
               ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """The forward's random draws, edge by edge in the per-edge path's order (each edge's random channels,
        then its skip-dropout mask), so that they are the same draws: DNAS's masks per dropped candidate, drawn
        with the shape and layout F.dropout draws them in and scaled by 1/(1−p) as it scales them; and each
        edge's C/K channels (``partial_sampling`` random), ``torch.randperm`` as PartialChannelEdge draws them."""
        masks: dict[int, torch.Tensor] = {}
        channels: dict[int, torch.Tensor] = {}
        drops = self.drops if training else []
        if not drops and not self.random:
            return masks, channels
        N, width, H, W = self._node_shape(x0)
        for _, c, _ in drops:
            if id(c) not in masks:
                E = len(c.positions)
                masks[id(c)] = (x0.new_empty((N, H, W, E, width)).permute(0, 3, 4, 1, 2)
                                if fmt == torch.channels_last else x0.new_empty((N, E, width, H, W)))
        p = drops[0][1].mixed[0].skip_dropout if drops else 0.0
        for e in range(len(self.parts)):
            if self.random:
                channels[e] = torch.randperm(x0.shape[1], device=x0.device)[:x0.shape[1] // self.slice_k]
            for c, k in self.drops_by_edge.get(e, ()) if training else ():
                masks[id(c)][:, k].bernoulli_(1 - p)
        for mask in masks.values():
            mask.div_(1 - p)
        return masks, channels

    def _add_bypass(self, src: Source, inputs: "_SourceInputs", scales: Sequence[torch.Tensor] | None,
                    acc: torch.Tensor | None) -> torch.Tensor | None:
        """acc plus, on each edge that computes something, the source's bypass (max-pooled on stride-2 edges)
        on the channels its ops did not see, times the edge's scale: ``bypass(x).index_copy(1, S, y)`` of the
        per-edge path, whose y the candidates added."""
        if src.bypass is None:
            return acc
        index, chunk, positions = src.bypass
        keep = inputs.keep_mask(positions)  # (P', C): 0 on each edge's processed channels
        if scales is not None:
            keep = keep * scales[chunk][:, None]
        term = src.partial.bypass(inputs.x)[:, None] * keep[None, :, :, None, None]
        return _accumulate(acc, term, None, index, len(src.edges))

def _sum_candidates(y: torch.Tensor, K: int, P: int) -> torch.Tensor:
    """(N, K·P·C, H, W) → Σ over the K candidates, (N, P, C, H, W), in y's memory format (for channels-last,
    a reduction over a middle dimension of the channels, which keeps the result channels-last)."""
    if memory_format_of(y) == torch.channels_last:
        return y.permute(0, 2, 3, 1).unflatten(3, (K, P, -1)).sum(3).permute(0, 3, 4, 1, 2)
    return y.unflatten(1, (K, P, -1)).sum(1)


def _add_product(acc: torch.Tensor | None, y: torch.Tensor, product: torch.Tensor, P: int) -> torch.Tensor:
    """acc (N, P, C, H, W) plus y (N, J·C, H, W) times ``product`` (J·C, P·C) over the channels, pixel by pixel: one
    matrix product on the (pixels, channels) view of y's memory format, added into acc by it where acc is laid out
    alike (an accumulator the executor built in that format)."""
    N, _, H, W = y.shape
    C = product.shape[1] // P
    if memory_format_of(y) == torch.channels_last:
        rows = y.permute(0, 2, 3, 1).reshape(N * H * W, -1)  # a view
        into = None if acc is None else acc.permute(0, 3, 4, 1, 2)  # (N, H, W, P, C)
        if into is not None and into.is_contiguous():
            out = torch.addmm(into.reshape(N * H * W, P * C), rows, product)
        else:
            out = rows @ product
            out = out if into is None else out + into.reshape(N * H * W, P * C)
        return out.view(N, H, W, P, C).permute(0, 3, 4, 1, 2)
    cols = y.reshape(N, -1, H * W)
    t = product.t().expand(N, P * C, product.shape[0])
    out = (torch.bmm(t, cols) if acc is None or not acc.is_contiguous()
           else torch.baddbmm(acc.reshape(N, P * C, H * W), t, cols))
    out = out.view(N, P, C, H, W)
    return out if acc is None or acc.is_contiguous() else acc + out


def _pop(acc: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The first pending node and the rest."""
    if acc is None:
        return None, None
    if acc.shape[1] == 1:
        return acc.squeeze(1), None
    if torch.compiler.is_compiling():  # the compiler lays out the gradients itself
        node, rest = acc.split([1, acc.shape[1] - 1], 1)
        return node.squeeze(1), rest
    return _PopNode.apply(acc)


class _PopNode(torch.autograd.Function):
    """(N, P, C, H, W) → its first node (N, C, H, W) and the rest (N, P − 1, C, H, W), as views.

    Autograd's backward of a split concatenates the gradients into a contiguous tensor; for a channels-last
    accumulator, every op that added into it would then read its gradient transposed (the candidates' sum
    over the stacked outputs, their BN's backward: several times slower). This backward writes both into one
    tensor laid out as the accumulator is.
    """

    @staticmethod
    def forward(ctx, acc):
        ctx.set_materialize_grads(False)
        ctx.channels_last = acc.stride(2) == 1 < acc.stride(4)
        ctx.shape = acc.shape
        node, rest = acc.split([1, acc.shape[1] - 1], 1)
        return node.squeeze(1), rest

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_node, grad_rest):
        N, P, C, H, W = ctx.shape
        like = grad_node if grad_node is not None else grad_rest
        if ctx.channels_last:
            grad = like.new_empty((N, H, W, P, C)).permute(0, 3, 4, 1, 2)
        else:
            grad = like.new_empty((N, P, C, H, W))
        for part, g in ((grad[:, 0], grad_node), (grad[:, 1:], grad_rest)):
            part.zero_() if g is None else part.copy_(g)
        return grad


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
    """A source's input and what its candidates share of it: one ReLU, and the wide input of E edges: the
    (ReLU'd) input repeated E times or, under random partial channels (``picks``: each pending node's edge's
    C/K channels), each edge's own channels side by side, their M channel groups folded into the batch when
    ``groups`` M > 1."""

    def __init__(self, x: torch.Tensor, picks: list[torch.Tensor | None] | None = None,
                 fmt: torch.memory_format = torch.contiguous_format, groups: int = 1):
        self.x, self.picks, self.fmt, self.groups = x, picks, fmt, groups
        self._relu: torch.Tensor | None = None
        self._wide: dict[tuple, torch.Tensor] = {}
        self._flat: dict[tuple, torch.Tensor] = {}

    def relu(self) -> torch.Tensor:
        if self._relu is None:
            self._relu = F.relu(self.x)
        return self._relu

    def wide(self, positions: Sequence[int], relu: bool = True) -> torch.Tensor:
        """(N, E·C', H, W): the input of the edges at ``positions`` side by side (ReLU'd unless ``relu`` is False)."""
        key = (len(positions) if self.picks is None else tuple(positions), relu)
        if key not in self._wide:
            x = self.relu() if relu else self.x
            if self.picks is None:
                self._wide[key] = x if len(positions) == 1 else repeat_channels(x, len(positions))
            elif self.groups == 1:  # as PartialChannelEdge takes them: index_select, then one dense copy in the layout
                index = torch.cat([self.picks[p] for p in positions]) if len(positions) > 1 else self.picks[positions[0]]
                self._wide[key] = x.index_select(1, index).contiguous(memory_format=self.fmt)
            else:  # taken group by group, (group, edge, channel), so that folding the groups is a view in NCHW
                index = torch.stack([self.picks[p] for p in positions]).view(len(positions), self.groups, -1)
                picked = x.index_select(1, index.transpose(0, 1).flatten()).contiguous(memory_format=self.fmt)
                self._wide[key] = fold_groups(picked, self.groups)
        return self._wide[key]

    def scatter(self, acc: torch.Tensor | None, term: torch.Tensor) -> torch.Tensor:
        """acc (N, P, C, H, W) plus ``term`` (N, P, C/K, H, W; folded: (N·M, P, C/(K·M), H, W)), the terms of the
        edges into the P pending nodes, each added to its own channels of its node."""
        if self.groups > 1:  # unfolded: channel m·C/(K·M) + q of an edge's picks is channel q of group m
            term = term.unflatten(0, (-1, self.groups)).transpose(1, 2).flatten(2, 3)
        positions = [p for p, picks in enumerate(self.picks) if picks is not None]
        if len(positions) < term.shape[1]:  # no edge to some pending nodes: their rows stay zero
            term = term[:, positions]
        N, _, _, H, W = term.shape
        P, C = len(self.picks), self.x.shape[1]
        if acc is None:
            acc = (term.new_zeros((N, H, W, P, C)).permute(0, 3, 4, 1, 2) if self.fmt == torch.channels_last
                   else term.new_zeros((N, P, C, H, W)))
        return acc.flatten(1, 2).index_add(1, self.flat(positions), term.flatten(1, 2)).unflatten(1, (P, C))

    def keep_mask(self, positions: Sequence[int]) -> torch.Tensor:
        """(len(positions), C): 1 on the channels the edge at each position passes by its ops, 0 on its picks."""
        C = self.x.shape[1]
        index = self.flat(positions, compact=True)
        return self.x.new_ones(len(positions) * C).index_fill(0, index, 0).view(len(positions), C)

    def flat(self, positions: Sequence[int], compact: bool = False) -> torch.Tensor:
        """The picks of the edges at ``positions`` as indices into a flattened (rows, C): row p, the pending node,
        or row k, the k-th of ``positions``, when ``compact``; built once per source and forward."""
        key = (tuple(positions), compact)
        if key not in self._flat:
            C = self.x.shape[1]
            self._flat[key] = torch.cat([self.picks[p] + (k if compact else p) * C for k, p in enumerate(positions)])
        return self._flat[key]


class BatchedNodes:
    """A drop-in for ``sum_nodes`` (same call), held by a cell; rebuilds its plan when the active ops change.

    ``layout`` is the cell as data, every edge's (source, target) in edge order (``SearchSpace.edges``).
    """

    def __init__(self, layout: Sequence[tuple[int, int]]):
        self.layout = tuple(layout)
        self.plan: CellPlan | None = None
        self.key: tuple | None = None

    def __call__(self, edges: nn.ModuleList, states: list[torch.Tensor], num_nodes: int,
                 weights: CellWeights) -> list[torch.Tensor]:
        self.prepare(edges, states[0].device)
        if (self.plan.num_inputs, self.plan.num_nodes) != (len(states), num_nodes):
            raise ValueError(f"a cell of {num_nodes} nodes on {len(states)} inputs, but its layout has "
                             f"{self.plan.num_nodes} on {self.plan.num_inputs}")
        return self.plan.run(states, weights, edges.training)

    def prepare(self, edges: nn.ModuleList, device: torch.device) -> None:
        """The plan for the edges' active ops, with the BN buffers aliased. Compiled, only its checks are traced (as
        guards: a removal recompiles the cell once); ``compile_cells`` runs it before each compiled forward, so the
        graph finds it done."""
        key = (device, tuple((tuple(m.active), m.zero) for m in (edge_parts(e)[0] for e in edges)))
        if key != self.key:
            self._build(edges, device, key)
        self.plan.alias()

    @torch.compiler.disable  # Python-side bookkeeping: eager, once per change of the active ops
    def _build(self, edges: nn.ModuleList, device: torch.device, key: tuple) -> None:
        self.plan, self.key = CellPlan(edges, self.layout, device), key



def batched_fallback(config) -> str | None:
    """Why a search configuration runs edge by edge although ``executor`` is "batched"; None when it batches."""
    if config.edge != "mixed":
        return f"edge kind {config.edge!r}"
    if ARCHITECTURES[config.arch].one_op_per_edge:
        return "one sampled op per edge (GDAS): a node's edges run different ops"
    return None


def use_batched_nodes(net: nn.Module, layout: Sequence[tuple[int, int]]) -> None:
    """Give every cell of a supernet the batched executor (its edges must be mixed, see :func:`edge_parts`);
    ``layout``: the cells' (source, target) of every edge, ``SearchSpace.edges``."""
    for cell in net.cells:
        for edge in cell.edges:
            edge_parts(edge)
        cell.node_sum = BatchedNodes(layout)
