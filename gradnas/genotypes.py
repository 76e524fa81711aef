"""Genotypes: the discrete architectures a search returns, for both spaces.

A cell genotype lists, for each intermediate node, the (op, source) pairs that feed it:
- DARTS space: nodes 2..5, two pairs each, sources 0..n-1 (0, 1 = the cell inputs); ``concat`` names the
  nodes concatenated into the output (usually (2, 3, 4, 5)).
- NB201 space: nodes 1..3, node j has exactly j pairs with sources 0..j-1 in order; the output is node 3
  and ``concat`` is (3,).
A :class:`Genotype` holds one normal and (DARTS) one reduction cell, or one cell genotype per cell of the
network (``cells``, for searches like DNAS where every cell may differ).

Forms on disk and on the command line: the original DARTS ``Genotype(normal=[...], ...)`` text, NB201 arch
strings, a versioned JSON file (the only one that holds per-cell genotypes) and the published names of
docs/methods.md §8. Every parser validates, so a genotype that gets past one is compilable.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import GradnasError
from .spaces.ops import DARTS_OPS, NB201_OPS

Pair = tuple[str, int]


@dataclass(frozen=True)
class CellGenotype:
    nodes: tuple[tuple[Pair, ...], ...]
    concat: tuple[int, ...]

    @property
    def pairs(self) -> list[Pair]:
        return [p for node in self.nodes for p in node]


@dataclass(frozen=True)
class Genotype:
    space: str  # "darts" or "nb201"
    normal: CellGenotype
    reduce: CellGenotype | None = None
    cells: tuple[CellGenotype, ...] | None = None  # one per cell of the network, when they differ

    def cell(self, index: int, reduction: bool) -> CellGenotype:
        """The genotype that cell ``index`` of a network is compiled from."""
        if self.cells is not None:
            return self.cells[index]
        return self.reduce if reduction and self.reduce is not None else self.normal


# ---------------------------------------------------------------------------------------------- checks

SPACE_OPS = {"darts": DARTS_OPS, "nb201": NB201_OPS}
# Short op names, as docs/methods.md §8 writes them; also the edge labels of small diagrams.
SHORT_NAMES = {"none": "none", "max_pool_3x3": "max", "avg_pool_3x3": "avg", "skip_connect": "skip",
               "sep_conv_3x3": "sep3", "sep_conv_5x5": "sep5", "dil_conv_3x3": "dil3", "dil_conv_5x5": "dil5",
               "nor_conv_1x1": "conv1", "nor_conv_3x3": "conv3"}
# A discrete DARTS cell has no zero edges: the genotype rule never picks none (docs/methods.md §1.1).
_ALLOWED_OPS = {"darts": tuple(o for o in DARTS_OPS if o != "none"), "nb201": NB201_OPS}
DARTS_CONCAT = (2, 3, 4, 5)
NB201_CONCAT = (3,)


def reduction_indices(n_cells: int) -> tuple[int, int]:
    """Cells ⌊L/3⌋ and ⌊2L/3⌋ reduce, in every DARTS-space network (docs/methods.md §1.1, §6)."""
    return n_cells // 3, 2 * n_cells // 3


def validate(g: Genotype, where: str = "genotype") -> Genotype:
    """Check ``g`` against its space and return it; raise GradnasError saying what is wrong and where."""
    if g.space not in SPACE_OPS:
        raise GradnasError(f"{where}: unknown space {g.space!r}; expected darts or nb201")
    if g.space == "nb201":
        if g.reduce is not None or g.cells is not None:
            raise GradnasError(f"{where}: an nb201 genotype is one cell; it has no reduction or per-cell genotypes")
        _validate_cell(g.normal, "nb201", f"{where}: cell")
        return g
    if g.reduce is None:
        raise GradnasError(f"{where}: a darts genotype needs a reduction cell")
    named = [("normal cell", g.normal), ("reduction cell", g.reduce)]
    if g.cells is not None:
        if not g.cells:
            raise GradnasError(f"{where}: per-cell genotype with no cells")
        named += [(f"cell {i}", c) for i, c in enumerate(g.cells)]
    for name, cell in named:
        _validate_cell(cell, "darts", f"{where}: {name}")
    return g


def _validate_cell(cell: CellGenotype, space: str, where: str) -> None:
    darts = space == "darts"
    first, n_nodes = (2, 4) if darts else (1, 3)
    if len(cell.nodes) != n_nodes:
        raise GradnasError(f"{where}: {len(cell.nodes)} nodes; {space} cells have {n_nodes} "
                           f"(nodes {first}..{first + n_nodes - 1})")
    for n, node in enumerate(cell.nodes, first):
        want = 2 if darts else n
        if len(node) != want:
            raise GradnasError(f"{where}, node {n}: {len(node)} pairs; expected {want}")
        for k, pair in enumerate(node, 1):
            here = f"{where}, node {n}, pair {k}"
            op, src = _pair(pair, here)
            _check_op(op, space, here)
            if darts and not 0 <= src < n:
                raise GradnasError(f"{here}: source {src} out of range; node {n} takes sources 0..{n - 1}")
            if not darts and src != k - 1:
                raise GradnasError(f"{here}: source {src}, expected {k - 1} "
                                   f"(node {n} reads sources 0..{n - 1} in order)")
    concat = tuple(cell.concat)
    if darts and not (concat and len(set(concat)) == len(concat) and all(c in DARTS_CONCAT for c in concat)):
        raise GradnasError(f"{where}: concat {list(concat)} must name distinct intermediate nodes from 2..5")
    if not darts and concat != NB201_CONCAT:
        raise GradnasError(f"{where}: concat {list(concat)}; nb201 cells output node 3, concat [3]")


def _pair(obj: object, where: str) -> Pair:
    """An (op, source) pair from a tuple or a JSON list."""
    if (isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[0], str)
            and isinstance(obj[1], int) and not isinstance(obj[1], bool)):
        return obj[0], obj[1]
    raise GradnasError(f"{where}: expected an (op, source) pair, got {obj!r}")


def _check_op(op: str, space: str, where: str) -> None:
    allowed = _ALLOWED_OPS[space]
    if op in allowed:
        return
    if op == "none":
        raise GradnasError(f"{where}: op 'none' is not allowed in a darts genotype")
    other = next((s for s, ops in SPACE_OPS.items() if s != space and op in ops), None)
    hint = f" (an op of the {other} space)" if other else ""
    raise GradnasError(f"{where}: unknown op {op!r}{hint}; expected one of {', '.join(allowed)}")


def _require_shared(g: Genotype, space: str, what: str) -> None:
    """Text forms hold one normal (and reduce) cell of one space; refuse anything else."""
    validate(g)
    if g.space != space or g.cells is not None:
        kind = "per-cell" if g.cells is not None else g.space
        raise GradnasError(f"genotype: {kind} genotypes have no {what}")


# ---------------------------------------------------------------------------------------------- builders

def per_cell_genotype(cells: Sequence[CellGenotype]) -> Genotype:
    """A darts genotype with one cell genotype per network cell (DNAS). ``normal``/``reduce`` hold cell 0
    and the first reduction cell, so code that reads only those still gets a representative of each."""
    cells = tuple(cells)
    if not cells:
        raise GradnasError("genotype: per-cell genotype with no cells")
    return validate(Genotype("darts", cells[0], cells[reduction_indices(len(cells))[0]], cells))


def nb201_from_edges(ops: Sequence[str]) -> Genotype:
    """The NB201 genotype with ``ops[e]`` on edge e, in docs/methods.md §1.2 edge order (1←0, 2←0, 2←1, 3←0,
    3←1, 3←2)."""
    if len(ops) != 6:
        raise GradnasError(f"genotype: an nb201 cell has 6 edges, got {len(ops)} ops")
    nodes = tuple(tuple((ops[start + i], i) for i in range(j)) for j, start in ((1, 0), (2, 1), (3, 3)))
    return validate(Genotype("nb201", CellGenotype(nodes, NB201_CONCAT)))


def _darts_cell(spec: str) -> CellGenotype:
    """A darts cell from the docs/methods.md §8 shorthand: nodes split by '|', pairs 'short source' by ','."""
    full = {short: op for op, short in SHORT_NAMES.items()}
    nodes = tuple(tuple((full[op], int(src)) for op, src in (p.split() for p in node.split(",")))
                  for node in spec.split("|"))
    return CellGenotype(nodes, DARTS_CONCAT)


def _darts(normal: str, reduce: str) -> Genotype:
    return Genotype("darts", _darts_cell(normal), _darts_cell(reduce))


# ---------------------------------------------------------------------------------------------- DARTS text form

_TEXT_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")


def format_darts(g: Genotype) -> str:
    """The original code's ``Genotype(normal=[...], normal_concat=[...], reduce=[...], reduce_concat=[...])``."""
    _require_shared(g, "darts", "DARTS text form")
    assert g.reduce is not None  # checked by validate
    return (f"Genotype(normal={_pairs_text(g.normal)}, normal_concat={list(g.normal.concat)}, "
            f"reduce={_pairs_text(g.reduce)}, reduce_concat={list(g.reduce.concat)})")


def _pairs_text(cell: CellGenotype) -> str:
    return "[" + ", ".join(f"({op!r}, {src})" for op, src in cell.pairs) + "]"


def genotype_text(g: Genotype) -> str:
    """Any genotype as text: its NB201 arch string, its DARTS text form, or (per-cell genotypes, which have
    neither) one line per cell with its pairs and concat."""
    validate(g)
    if g.space == "nb201":
        return format_arch_string(g)
    if g.cells is None:
        return format_darts(g)
    reductions = reduction_indices(len(g.cells))
    return "\n".join(f"cell {i}{' (reduction)' if i in reductions else ''}: {_pairs_text(c)} concat {list(c.concat)}"
                     for i, c in enumerate(g.cells))


def parse_darts(text: str) -> Genotype:
    """Parse the DARTS text form without evaluating code: every argument must be a literal or range(...)."""
    where = "DARTS genotype text"
    try:
        call = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise GradnasError(f"{where}: invalid syntax at column {e.offset}: {e.msg}") from None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype"):
        raise GradnasError(f"{where}: expected Genotype(normal=..., normal_concat=..., reduce=..., reduce_concat=...)")
    if len(call.args) > len(_TEXT_FIELDS):
        raise GradnasError(f"{where}: too many arguments; expected {', '.join(_TEXT_FIELDS)}")
    args = dict(zip(_TEXT_FIELDS, call.args))
    for kw in call.keywords:
        if kw.arg not in _TEXT_FIELDS or kw.arg in args:
            raise GradnasError(f"{where}: unexpected or repeated argument {kw.arg!r}")
        args[kw.arg] = kw.value
    missing = [f for f in _TEXT_FIELDS if f not in args]
    if missing:
        raise GradnasError(f"{where}: missing {', '.join(missing)}")
    values = {name: _literal(node, f"{where}: {name}") for name, node in args.items()}
    normal, reduce = (_text_cell(values[c], values[f"{c}_concat"], f"{where}: {c}") for c in ("normal", "reduce"))
    return validate(Genotype("darts", normal, reduce), where)


def _literal(node: ast.expr, where: str) -> object:
    # The original code writes concat as range(2, 6): the one call allowed, with integer literals only.
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
        bounds = [a.value for a in node.args if isinstance(a, ast.Constant) and type(a.value) is int]
        if node.keywords or not 1 <= len(bounds) == len(node.args) <= 3:
            raise GradnasError(f"{where}: range(...) takes 1 to 3 integer literals")
        return list(range(*bounds))
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise GradnasError(f"{where}: not a literal: {ast.unparse(node)[:60]}") from None


def _text_cell(pairs: object, concat: object, where: str) -> CellGenotype:
    if not isinstance(pairs, (list, tuple)) or len(pairs) != 8:
        n = len(pairs) if isinstance(pairs, (list, tuple)) else "no"
        raise GradnasError(f"{where}: {n} (op, source) pairs; darts cells have 8 (2 for each node 2..5)")
    flat = [_pair(p, f"{where}, pair {i + 1}") for i, p in enumerate(pairs)]
    return CellGenotype(tuple(tuple(flat[i:i + 2]) for i in range(0, 8, 2)), _int_tuple(concat, f"{where}_concat"))


def _int_tuple(obj: object, where: str) -> tuple[int, ...]:
    if isinstance(obj, (list, tuple)) and all(type(x) is int for x in obj):
        return tuple(obj)
    raise GradnasError(f"{where}: expected a list of node indices, got {obj!r}")


# ---------------------------------------------------------------------------------------------- NB201 arch strings

def format_arch_string(g: Genotype) -> str:
    """``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (docs/methods.md §1.2)."""
    _require_shared(g, "nb201", "NB201 arch string")
    return "+".join("|" + "|".join(f"{op}~{src}" for op, src in node) + "|" for node in g.normal.nodes)


def parse_arch_string(text: str) -> Genotype:
    where = "NB201 arch string"
    nodes = []
    for n, chunk in enumerate(text.strip().split("+"), 1):
        if len(chunk) < 3 or chunk[0] != "|" or chunk[-1] != "|":
            raise GradnasError(f"{where}: node {n}: {chunk!r} is not of the form |op~source|...|")
        pairs = []
        for k, piece in enumerate(chunk[1:-1].split("|"), 1):
            op, tilde, src = piece.partition("~")
            if not (tilde and src.isascii() and src.isdigit()):
                raise GradnasError(f"{where}: node {n}, pair {k}: {piece!r} is not op~source")
            pairs.append((op, int(src)))
        nodes.append(tuple(pairs))
    return validate(Genotype("nb201", CellGenotype(tuple(nodes), NB201_CONCAT)), where)


# ---------------------------------------------------------------------------------------------- JSON

FORMAT, VERSION = "gradnas-genotype", 1


def genotype_to_dict(g: Genotype) -> dict:
    """The versioned JSON form; "darts"/"arch" are read-only conveniences that loading ignores."""
    validate(g)
    d: dict = {"format": FORMAT, "version": VERSION, "space": g.space, "normal": _cell_dict(g.normal),
               "reduce": _cell_dict(g.reduce) if g.reduce is not None else None, "cells": None}
    if g.cells is not None:
        reductions = reduction_indices(len(g.cells))
        d["cells"] = [{**_cell_dict(c), "reduction": i in reductions} for i, c in enumerate(g.cells)]
    elif g.space == "darts":
        d["darts"] = format_darts(g)
    else:
        d["arch"] = format_arch_string(g)
    return d


def _cell_dict(cell: CellGenotype) -> dict:
    return {"nodes": [[[op, src] for op, src in node] for node in cell.nodes], "concat": list(cell.concat)}


def genotype_from_dict(d: object, where: str = "genotype JSON") -> Genotype:
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise GradnasError(f"{where}: not a gradnas genotype (no \"format\": \"{FORMAT}\")")
    if d.get("version") != VERSION:
        raise GradnasError(f"{where}: unsupported genotype version {d.get('version')!r}; this gradnas reads {VERSION}")
    normal = _cell_from_dict(d.get("normal"), f"{where}: normal")
    reduce = None if d.get("reduce") is None else _cell_from_dict(d["reduce"], f"{where}: reduce")
    cells = d.get("cells")
    if cells is not None:
        if not isinstance(cells, list):
            raise GradnasError(f"{where}: cells must be a list or null")
        reductions = reduction_indices(len(cells))
        for i, c in enumerate(cells):
            # The network, not the file, decides where reductions go; a disagreeing flag means a bad file.
            if isinstance(c, dict) and c.get("reduction") is not (i in reductions):
                raise GradnasError(f"{where}: cells[{i}]: reduction is {c.get('reduction')!r}, but a {len(cells)}-cell "
                                   f"network reduces at cells {reductions[0]} and {reductions[1]}")
        cells = tuple(_cell_from_dict(c, f"{where}: cells[{i}]") for i, c in enumerate(cells))
    return validate(Genotype(d.get("space"), normal, reduce, cells), where)  # type: ignore[arg-type]


def _cell_from_dict(c: object, where: str) -> CellGenotype:
    if not isinstance(c, dict) or not isinstance(c.get("nodes"), list):
        raise GradnasError(f"{where}: expected {{\"nodes\": [...], \"concat\": [...]}}")
    nodes = []
    for i, node in enumerate(c["nodes"]):
        if not isinstance(node, list):
            raise GradnasError(f"{where}.nodes[{i}]: expected a list of [op, source] pairs")
        nodes.append(tuple(_pair(p, f"{where}.nodes[{i}][{k}]") for k, p in enumerate(node)))
    return CellGenotype(tuple(nodes), _int_tuple(c.get("concat"), f"{where}.concat"))


def save_genotype(g: Genotype, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(genotype_to_dict(g), indent=1) + "\n")
    return path


def load_genotype(path: str | Path) -> Genotype:
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise GradnasError(f"{path}: cannot read genotype file ({getattr(e, 'strerror', None) or e})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise GradnasError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    return genotype_from_dict(d, str(path))


# ---------------------------------------------------------------------------------------------- any spec

def parse_genotype(spec: str) -> Genotype:
    """A published name, a genotype JSON file, a run directory holding genotype.json, a DARTS text form or
    an NB201 arch string."""
    text = spec.strip()
    if text.lower() in PUBLISHED:
        return PUBLISHED[text.lower()]
    if text.startswith("Genotype("):
        return parse_darts(text)
    if text.startswith("|"):
        return parse_arch_string(text)
    path = Path(text).expanduser()
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError:  # e.g. a name too long for the file system: then it is not a path at all
        is_dir = is_file = False
    if is_dir:
        if not (path / "genotype.json").is_file():
            raise GradnasError(f"genotype: directory {path} has no genotype.json")
        return load_genotype(path / "genotype.json")
    if is_file:
        return load_genotype(path)
    raise GradnasError(f"genotype: {spec!r} is not a published name ({', '.join(PUBLISHED)}), an existing file or "
                       "directory, a DARTS 'Genotype(...)' text or an NB201 '|op~0|+...' arch string")


# ---------------------------------------------------------------------------------------------- published (§8)

PUBLISHED: dict[str, Genotype] = {
    "darts_v1": _darts("sep3 1, sep3 0 | skip 0, sep3 1 | skip 0, sep3 1 | sep3 0, skip 2",
                       "max 0, max 1 | skip 2, max 0 | max 0, skip 2 | skip 2, avg 0"),
    "darts_v2": _darts("sep3 0, sep3 1 | sep3 0, sep3 1 | sep3 1, skip 0 | skip 0, dil3 2",
                       "max 0, max 1 | skip 2, max 1 | max 0, skip 2 | skip 2, max 1"),
    "pc_darts_cifar": _darts("sep3 1, skip 0 | sep3 0, dil3 1 | sep5 0, sep3 1 | avg 0, dil3 1",
                             "sep5 1, max 0 | sep5 1, sep5 2 | sep3 0, sep3 3 | sep3 1, sep3 2"),
    "pc_darts_image": _darts("skip 1, sep3 0 | sep3 0, skip 1 | sep3 1, sep3 3 | sep3 1, dil5 4",
                             "sep3 0, skip 1 | dil5 2, max 1 | sep3 2, sep3 1 | sep5 0, sep3 3"),
    "is_darts": _darts("sep5 0, sep3 1 | dil5 0, sep5 1 | sep5 0, sep5 1 | sep3 0, sep5 2",
                       "sep5 0, max 1 | dil5 2, sep5 2 | sep5 0, sep5 2 | dil5 0, sep5 2"),
    "nb201_is_darts": parse_arch_string(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"),
    "nb201_i_darts": parse_arch_string(
        "|skip_connect~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"),
    "nb201_s_darts": parse_arch_string(
        "|skip_connect~0|+|skip_connect~0|none~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"),
    "nb201_all_skip": nb201_from_edges(["skip_connect"] * 6),
}
