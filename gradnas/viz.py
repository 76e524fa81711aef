"""Cell diagrams of genotypes, as PNG and SVG.

Graphviz draws them when its ``dot`` program is installed; otherwise a pure-matplotlib fallback lays the
cell out in left-to-right layers (a node sits one layer right of its deepest source). Edges carrying
``none`` are left out: a zero op connects nothing. The whole-network overview of per-cell genotypes is
always matplotlib, since it is a grid of small panels rather than one graph.
"""
from __future__ import annotations

import importlib.util
import math
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from matplotlib.axes import Axes
from matplotlib.figure import Figure  # a bare Figure renders through Agg and never touches a display
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from .errors import GradnasError
from .genotypes import SHORT_NAMES, CellGenotype, Genotype, reduction_indices, validate
from .spaces import SPACES
from .rundir import write_atomic

Node = tuple[str, str, str]  # id, label, kind ("input", "inner", "output")
Edge = tuple[str, str, str]  # source id, target id, op label ("" for the concat into the output)
Graph = tuple[list[Node], list[Edge]]
Point = tuple[float, float]
_COLORS = {"input": "#9ecae1", "inner": "#fdd49e", "output": "#a1d99b"}
_BOX_W, _BOX_H, _DY = 1.1, 0.55, 1.2  # node box size and row spacing, in data units
_SPACINGS = (3.0, 4.0, 5.0, 6.5)  # layer spacings tried in turn until every op label finds a clear spot
_FORMATS = ("png", "svg")


def cell_graph(cell: CellGenotype, space: str) -> Graph:
    """Nodes and labelled edges of one cell, nodes numbered as in its genotype (DARTS: 2..5). A concatenating
    cell gets an output node fed by its concat list; a summing cell (NB201) outputs its last node."""
    sp = SPACES[space]
    first, inputs = sp.cell.first_node, dict(enumerate(sp.input_names))
    inner = [str(n) for n in range(first, first + len(cell.nodes))]
    if sp.cell.pairs_per_node is None:
        nodes = [(name, f"{name} (in)", "input") for name in inputs.values()]
        nodes += [(n, n, "inner") for n in inner[:-1]] + [(inner[-1], f"{inner[-1]} (out)", "output")]
        concat = []
    else:
        nodes = [(name, name, "input") for name in inputs.values()] + [(n, n, "inner") for n in inner]
        nodes.append((sp.output_name, sp.output_name, "output"))
        concat = [(str(n), sp.output_name, "") for n in cell.concat]
    edges = [(inputs.get(src, str(src)), str(n), op)
             for n, node in enumerate(cell.nodes, first) for op, src in node if op != "none"]
    return nodes, edges + concat


def draw_cell(cell: CellGenotype, space: str, path: Path, title: str, backend: str | None = None) -> list[Path]:
    """Write ``path``.png and ``path``.svg (``path`` has no suffix); return the files written."""
    graph, path = cell_graph(cell, space), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if _backend(backend) == "graphviz":
        return _draw_graphviz(graph, title, path)
    return _save(_cell_figure(graph, title), path)


def _cell_figure(graph: Graph, title: str) -> Figure:
    """The fallback diagram with full op names, else abbreviated ones (with a key), else with its layers spread
    further apart, until no op label overlaps another or a box."""
    for dx in _SPACINGS:
        fig = Figure(figsize=_figsize(graph, dx))
        ax = fig.add_subplot()
        labels = _draw_mpl(ax, graph, fontsize=10, short=False, dx=dx)
        ax.set_title(title)
        blocked = _place_labels(fig, labels)
        if blocked:
            key = sorted({(lab.short, lab.text.get_text()) for lab in labels if lab.short != lab.text.get_text()})
            for lab in labels:
                lab.text.set_text(lab.short)
            blocked = _place_labels(fig, labels)
            ax.text(0.5, 0.0, ", ".join(f"{short} = {op}" for short, op in key), transform=ax.transAxes,
                    ha="center", va="bottom", fontsize=8, color="0.3")
        if not blocked:
            break
    return fig


def draw_genotype(g: Genotype, out_dir: Path, stem: str = "cell", backend: str | None = None) -> list[Path]:
    """Diagrams of every cell of ``g``: normal and reduce (DARTS), the cell (NB201), or one per network cell
    plus ``<stem>_overview`` for per-cell genotypes."""
    validate(g)
    out_dir = Path(out_dir)
    if g.cells is not None:
        reductions = reduction_indices(len(g.cells))
        titles = [f"cell {i}" + (" (reduction)" if i in reductions else "") for i in range(len(g.cells))]
        files = [f for i, (c, title) in enumerate(zip(g.cells, titles))
                 for f in draw_cell(c, g.space, out_dir / f"{stem}_{i:02d}", title, backend)]
        return files + _draw_overview(g, out_dir / f"{stem}_overview")
    if g.reduce is None:
        return draw_cell(g.normal, g.space, out_dir / stem, f"{g.space} cell", backend)
    return (draw_cell(g.normal, g.space, out_dir / f"{stem}_normal", "normal cell", backend)
            + draw_cell(g.reduce, g.space, out_dir / f"{stem}_reduce", "reduction cell", backend))


def _backend(backend: str | None) -> str:
    has_dot = shutil.which("dot") is not None and importlib.util.find_spec("graphviz") is not None
    if backend is None:
        return "graphviz" if has_dot else "matplotlib"
    if backend not in ("graphviz", "matplotlib"):
        raise GradnasError(f"viz: unknown backend {backend!r}; expected graphviz or matplotlib")
    if backend == "graphviz" and not has_dot:
        raise GradnasError("viz: backend 'graphviz' needs the Graphviz 'dot' program on PATH (e.g. apt install "
                           "graphviz) and the graphviz package: pip install 'gradnas[graphviz]'")
    return backend


def _files(path: Path) -> list[Path]:
    # Append rather than with_suffix(): a stem such as "cell.v2" must keep its dot.
    return [path.with_name(f"{path.name}.{fmt}") for fmt in _FORMATS]


def _draw_graphviz(graph: Graph, title: str, path: Path) -> list[Path]:
    import graphviz  # optional at run time: only this backend needs it

    dot = graphviz.Digraph(
        graph_attr={"rankdir": "LR", "label": title, "labelloc": "t", "fontname": "helvetica"},
        node_attr={"shape": "box", "style": "rounded,filled", "fontname": "helvetica", "penwidth": "1.5"},
        edge_attr={"fontname": "helvetica", "fontsize": "11"})
    nodes, edges = graph
    for nid, label, kind in nodes:
        # "c_{k-2}" as an HTML-like label, so dot draws a real subscript
        html = "<" + label.replace("_{", "<sub>").replace("}", "</sub>") + ">" if "_{" in label else label
        dot.node(nid, html, fillcolor=_COLORS[kind])
    for src, dst, label in edges:
        dot.edge(src, dst, label=label)
    files = _files(path)
    for fmt, file in zip(_FORMATS, files):
        write_atomic(file, dot.pipe(format=fmt))
    return files


def _layout(graph: Graph, dx: float) -> dict[str, Point]:
    """Inputs in layer 0, each inner node one layer right of its deepest source, the output rightmost."""
    nodes, edges = graph
    layer = {nid: 0 for nid, _, kind in nodes if kind == "input"}
    for nid, _, kind in nodes:  # nodes come in topological order
        if kind == "inner":
            layer[nid] = 1 + max((layer[s] for s, d, _ in edges if d == nid), default=0)
    last = 1 + max(layer.values())
    layer.update({nid: last for nid, _, kind in nodes if kind == "output"})
    rows: dict[int, list[str]] = {}
    for nid, _, _ in nodes:
        rows.setdefault(layer[nid], []).append(nid)
    return {nid: (x * dx, ((len(ids) - 1) / 2 - i) * _DY) for x, ids in rows.items() for i, nid in enumerate(ids)}


def _figsize(graph: Graph, dx: float) -> tuple[float, float]:
    xs, ys = zip(*_layout(graph, dx).values())
    return 1.0 + 0.9 * (max(xs) - min(xs) + _BOX_W), 1.2 + 0.9 * (max(ys) - min(ys) + _BOX_H)


def _draw_mpl(ax: Axes, graph: Graph, fontsize: float, short: bool, dx: float) -> list[_Label]:
    """Draw boxes and arrows; return the op labels, which :func:`_place_labels` positions once sizes are known."""
    nodes, edges = graph
    pos = _layout(graph, dx)
    boxes = {}
    for nid, label, kind in nodes:
        x, y = pos[nid]
        boxes[nid] = FancyBboxPatch((x - _BOX_W / 2, y - _BOX_H / 2), _BOX_W, _BOX_H, boxstyle="round,pad=0.05",
                                    fc=_COLORS[kind], ec="0.2", lw=0.8)
        ax.add_patch(boxes[nid])
        ax.text(x, y, f"${label}$" if "_{" in label else label, ha="center", va="center", fontsize=fontsize)
    labels, obstacles = [], list(boxes.values())
    repeats: Counter[tuple[str, str]] = Counter()
    for src, dst, label in edges:
        p0, p1 = pos[src], pos[dst]
        # Longer edges bend more; a repeated (src, dst) edge tries the other side first so the two stay apart.
        sign = (-1) ** repeats[src, dst]
        repeats[src, dst] += 1
        rad = _bend(p0, p1, [pos[n] for n in pos if n not in (src, dst)],
                    sign * (0.05 + 0.07 * (round(abs(p1[0] - p0[0]) / dx) - 1)))
        ax.add_patch(FancyArrowPatch(p0, p1, patchA=boxes[src], patchB=boxes[dst], arrowstyle="-|>",
                                     connectionstyle=f"arc3,rad={rad}", mutation_scale=fontsize, lw=0.8, color="0.35"))
        if label:
            text = ax.text(0, 0, SHORT_NAMES.get(label, label) if short else label, ha="center", va="center",
                           fontsize=0.8 * fontsize, bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none"))
            labels.append(_Label(text, _arc(p0, p1, rad), obstacles, SHORT_NAMES.get(label, label)))
    xs, ys = zip(*pos.values())
    ax.set_xlim(min(xs) - _BOX_W, max(xs) + _BOX_W)
    ax.set_ylim(min(ys) - _BOX_H - 0.6, max(ys) + _BOX_H + 0.6)
    ax.set_aspect("equal")
    ax.axis("off")
    return labels


def _arc(p0: Point, p1: Point, rad: float) -> Callable[[float], Point]:
    """The curve matplotlib's ``arc3,rad=rad`` draws: a quadratic Bézier whose control point is the chord
    midpoint offset by rad·(dy, −dx); returned as t ↦ point."""
    (x0, y0), (x1, y1) = p0, p1
    cx, cy = (x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)

    def at(t: float) -> Point:
        a, b, c = (1 - t) ** 2, 2 * t * (1 - t), t ** 2
        return a * x0 + b * cx + c * x1, a * y0 + b * cy + c * y1

    return at


def _bend(p0: Point, p1: Point, others: list[Point], rad: float) -> float:
    """The first of rad, −rad, 2rad, −2rad, 3rad, −3rad whose curve clears every box centred in ``others``."""
    candidates = [f * s * rad for f in (1, 2, 3) for s in (1, -1)]
    for r in candidates:
        if not any(abs(x - ox) < _BOX_W / 2 + 0.15 and abs(y - oy) < _BOX_H / 2 + 0.15
                   for x, y in map(_arc(p0, p1, r), [i / 20 for i in range(2, 19)]) for ox, oy in others):
            return r
    return candidates[0]


@dataclass
class _Label:
    text: Text
    edge: Callable[[float], Point]
    boxes: list[FancyBboxPatch]  # the node boxes of its cell, which labels must not cover
    short: str  # the abbreviation tried when the full op names do not all fit


_SPOTS = sorted((0.2 + 0.025 * i for i in range(25)), key=lambda t: abs(t - 0.5))  # along an edge, middle first


def _place_labels(fig: Figure, labels: list[_Label]) -> int:
    """Slide each op label along its own edge to the first spot clear of the boxes and of the labels placed
    before it, so every label stays on the edge it names; return how many found no clear spot (those sit
    at the middle)."""
    if not labels:
        return 0
    fig.draw_without_rendering()  # fixes the data → pixel transforms and gives text a renderer to measure with
    placed: list[Bbox] = [b.get_window_extent() for b in {id(b): b for lab in labels for b in lab.boxes}.values()]
    blocked = 0
    for lab in labels:
        for t in _SPOTS:
            lab.text.set_position(lab.edge(t))
            extent = lab.text.get_window_extent().expanded(1.1, 1.2)
            if not any(extent.overlaps(other) for other in placed):
                break
        else:
            blocked += 1
            lab.text.set_position(lab.edge(0.5))
            extent = lab.text.get_window_extent().expanded(1.1, 1.2)
        placed.append(extent)
    return blocked


def _draw_overview(g: Genotype, path: Path) -> list[Path]:
    """All cells of a per-cell genotype in a grid, in network order, reduction cells framed in red."""
    assert g.cells is not None
    n = len(g.cells)
    cols = math.ceil(n / math.ceil(n / 7))  # at most 7 per row, rows as even as possible
    rows = math.ceil(n / cols)
    reductions = reduction_indices(n)
    for dx in _SPACINGS:
        fig = Figure(figsize=(2.6 * cols * dx / _SPACINGS[0], 1.9 * rows + 0.5))
        labels = []
        for i, cell in enumerate(g.cells):
            ax = fig.add_subplot(rows, cols, i + 1)
            labels += _draw_mpl(ax, cell_graph(cell, g.space), fontsize=5, short=True, dx=dx)
            reduction = i in reductions
            ax.set_title(f"cell {i}" + (" · reduction" if reduction else ""), fontsize=8,
                         color="#c0392b" if reduction else "black")
            if reduction:
                ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, ec="#c0392b", lw=1.5))
        fig.suptitle(f"{n}-cell network")
        if _place_labels(fig, labels) == 0:
            break
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> list[Path]:
    files = _files(path)
    for file in files:
        write_atomic(file, lambda f: fig.savefig(f, format=Path(file).suffix[1:], dpi=150, bbox_inches="tight"))
    return files
