"""Genotypes: the discrete architectures a search returns, in any registered space.

A cell genotype lists, for each intermediate node, the (op, source) pairs that feed it:
- DARTS space: nodes 2, 3, ..., two pairs each, sources 0..n-1 (0, 1 = the cell inputs); ``concat`` names the
  nodes concatenated into the output. A search cell has 4 nodes and concatenates all of them, (2, 3, 4, 5),
  but like the DARTS code's evaluation cells a genotype may have any number of nodes and any concat list
  (NASNet: 5 nodes, concat (2, 3, 4, 5, 6); AmoebaNet: concat (4, 5, 6)).
- NB201 space: nodes 1..3, node j has exactly j pairs with sources 0..j-1 in order; the output is node 3
  and ``concat`` is (3,).
A :class:`Genotype` holds one normal and (DARTS) one reduction cell, or one cell genotype per cell of the
network (``cells``, for searches like DNAS where every cell may differ). What a space's cells look like is
its :class:`~gradnas.spaces.CellFormat`; other spaces (a user's own) are checked the same way.

Forms on disk and on the command line: the original DARTS ``Genotype(normal=[...], ...)`` text, NB201 arch
strings (the two ``TEXT_FORMS``, each named by its space), a versioned JSON file (every space; the only form
that holds per-cell genotypes) and the published names of docs/methods.md §8. Every parser validates, so a
genotype that gets past one is compilable.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .errors import GradnasError
from .limits import MAX_CELLS, MAX_NODES, check_parsed, check_text, parse_error, read_text
from .registry import Registry
from .rundir import write_atomic
from .spaces import SPACES, SearchSpace
from .spaces.darts import darts_concat

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
    space: str  # a SPACES name: "darts", "nb201" or a user's own
    normal: CellGenotype
    reduce: CellGenotype | None = None
    cells: tuple[CellGenotype, ...] | None = None  # one per cell of the network, when they differ

    def cell(self, index: int, reduction: bool) -> CellGenotype:
        """The genotype that cell ``index`` of a network is compiled from."""
        if self.cells is not None:
            return self.cells[index]
        return self.reduce if reduction and self.reduce is not None else self.normal


# ---------------------------------------------------------------------------------------------- checks

# Short op names, as docs/methods.md §8 writes them; also the edge labels of small diagrams (other ops: their name).
SHORT_NAMES = {"none": "none", "max_pool_3x3": "max", "avg_pool_3x3": "avg", "skip_connect": "skip",
               "sep_conv_3x3": "sep3", "sep_conv_5x5": "sep5", "dil_conv_3x3": "dil3", "dil_conv_5x5": "dil5",
               "sep_conv_7x7": "sep7", "conv_7x1_1x7": "conv7x1",
               "nor_conv_1x1": "conv1", "nor_conv_3x3": "conv3"}
NB201_CONCAT = (3,)


def reduction_indices(n_cells: int) -> tuple[int, int]:
    """Cells ⌊L/3⌋ and ⌊2L/3⌋ reduce, in every DARTS-space network (docs/methods.md §1.1, §6)."""
    return n_cells // 3, 2 * n_cells // 3


def space_of(g: Genotype, where: str = "genotype") -> SearchSpace:
    if not isinstance(g.space, str) or g.space not in SPACES:
        raise GradnasError(f"{where}: unknown space {g.space!r}; expected one of {', '.join(SPACES)}")
    return SPACES[g.space]


def validate(g: Genotype, where: str = "genotype") -> Genotype:
    """Check ``g`` against its space and return it; raise GradnasError saying what is wrong and where."""
    space = space_of(g, where)
    if not space.reduction_cell:
        if g.reduce is not None or g.cells is not None:
            raise GradnasError(f"{where}: an {g.space} genotype is one cell; it has no reduction or per-cell genotypes")
        _validate_cell(g.normal, space, f"{where}: cell")
        return g
    if g.reduce is None:
        raise GradnasError(f"{where}: a {g.space} genotype needs a reduction cell")
    named = [("normal cell", g.normal), ("reduction cell", g.reduce)]
    if g.cells is not None:
        if not space.per_cell:
            raise GradnasError(f"{where}: {g.space} genotypes have no per-cell form")
        if not 0 < len(g.cells) <= MAX_CELLS:
            raise GradnasError(f"{where}: per-cell genotype with {len(g.cells)} cells; it needs 1..{MAX_CELLS}")
        named += [(f"cell {i}", c) for i, c in enumerate(g.cells)]
    for name, cell in named:
        _validate_cell(cell, space, f"{where}: {name}")
    return g


def _validate_cell(cell: CellGenotype, space: SearchSpace, where: str) -> None:
    fmt = space.cell
    if len(cell.nodes) > MAX_NODES:
        raise GradnasError(f"{where}: {len(cell.nodes)} nodes; gradnas reads cells of at most {MAX_NODES}")
    first, want_nodes = fmt.first_node, fmt.num_nodes
    if not cell.nodes or want_nodes is not None and len(cell.nodes) != want_nodes:
        expected = f"{want_nodes} (nodes {first}..{first + want_nodes - 1})" if want_nodes else "at least one"
        raise GradnasError(f"{where}: {len(cell.nodes)} nodes; {space.name} cells have {expected}")
    for n, node in enumerate(cell.nodes, first):
        want = fmt.pairs_per_node or n
        if len(node) != want:
            raise GradnasError(f"{where}, node {n}: {len(node)} pairs; expected {want}")
        for k, pair in enumerate(node, 1):
            here = f"{where}, node {n}, pair {k}"
            op, src = _pair(pair, here)
            _check_op(op, space, here)
            if fmt.pairs_per_node and not 0 <= src < n:
                raise GradnasError(f"{here}: source {src} out of range; node {n} takes sources 0..{n - 1}")
            if not fmt.pairs_per_node and src != k - 1:
                raise GradnasError(f"{here}: source {src}, expected {k - 1} "
                                   f"(node {n} reads sources 0..{n - 1} in order)")
    concat, last = tuple(cell.concat), first + len(cell.nodes) - 1
    if fmt.pairs_per_node is None:  # the cell's output is its last node
        if concat != (last,):
            raise GradnasError(f"{where}: concat {list(concat)}; {space.name} cells output node {last}, concat [{last}]")
    # Cell inputs are not concatenable: in a reduction cell they have the wrong resolution.
    elif not (concat and len(set(concat)) == len(concat) and all(first <= c <= last for c in concat)):
        raise GradnasError(f"{where}: concat {list(concat)} must name distinct intermediate nodes from {first}..{last}")


def _pair(obj: object, where: str) -> Pair:
    """An (op, source) pair from a tuple or a JSON list."""
    if (isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[0], str)
            and isinstance(obj[1], int) and not isinstance(obj[1], bool)):
        return obj[0], obj[1]
    raise GradnasError(f"{where}: expected an (op, source) pair, got {obj!r}")


def _check_op(op: str, space: SearchSpace, where: str) -> None:
    allowed = space.cell.allowed_ops()
    if op in allowed:
        return
    if op in space.ops:
        raise GradnasError(f"{where}: op {op!r} is not allowed in a {space.name} genotype")
    other = next((s for s in SPACES if SPACES[s].ops is not space.ops and op in SPACES[s].ops), None)
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


def with_concat(g: Genotype, concat: Sequence[int]) -> Genotype:
    """``g`` with every cell concatenating ``concat`` (a search cell's output nodes, e.g. the last
    ``multiplier`` of a DARTS cell)."""
    concat = tuple(concat)
    cell = lambda c: c if c is None else CellGenotype(c.nodes, concat)
    cells = None if g.cells is None else tuple(map(cell, g.cells))
    return validate(Genotype(g.space, cell(g.normal), cell(g.reduce), cells))


def nb201_from_edges(ops: Sequence[str]) -> Genotype:
    """The NB201 genotype with ``ops[e]`` on edge e, in docs/methods.md §1.2 edge order (1←0, 2←0, 2←1, 3←0,
    3←1, 3←2)."""
    if len(ops) != 6:
        raise GradnasError(f"genotype: an nb201 cell has 6 edges, got {len(ops)} ops")
    nodes = tuple(tuple((ops[start + i], i) for i in range(j)) for j, start in ((1, 0), (2, 1), (3, 3)))
    return validate(Genotype("nb201", CellGenotype(nodes, NB201_CONCAT)))


def _darts_cell(spec: str, concat: tuple[int, ...] | None = None) -> CellGenotype:
    """A darts cell from the docs/methods.md §8 shorthand: nodes split by '|', pairs 'short source' by ','; concat
    by default every node."""
    full = {short: op for op, short in SHORT_NAMES.items()}
    nodes = tuple(tuple((full[op], int(src)) for op, src in (p.split() for p in node.split(",")))
                  for node in spec.split("|"))
    return CellGenotype(nodes, concat or darts_concat(len(nodes)))


def _darts(normal: str, reduce: str, normal_concat: tuple[int, ...] | None = None,
           reduce_concat: tuple[int, ...] | None = None) -> Genotype:
    return validate(Genotype("darts", _darts_cell(normal, normal_concat), _darts_cell(reduce, reduce_concat)))


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
    """Any genotype as text: its space's text form (the DARTS text form, an NB201 arch string), or (per-cell
    genotypes, and spaces without one) one line per cell with its pairs and concat."""
    form = text_form(g)
    if form is not None:
        return form.format(g)
    if g.cells is None:
        named = [("normal", g.normal)] + ([("reduce", g.reduce)] if g.reduce is not None else [])
    else:
        reductions = reduction_indices(len(g.cells))
        named = [(f"cell {i}{' (reduction)' if i in reductions else ''}", c) for i, c in enumerate(g.cells)]
    return "\n".join(f"{name}: {_pairs_text(c)} concat {list(c.concat)}" for name, c in named)


def parse_darts(text: str) -> Genotype:
    """Parse the DARTS text form without evaluating code: every argument must be a literal or range(...)."""
    where = "DARTS genotype text"
    try:
        call = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise GradnasError(f"{where}: invalid syntax at column {e.offset}: {e.msg}") from None
    except (RecursionError, MemoryError) as err:
        raise parse_error(err, where) from None
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
        if node.keywords or not 1 <= len(bounds) == len(node.args) <= 3 or 0 in bounds[2:]:
            raise GradnasError(f"{where}: range(...) takes 1 to 3 integer literals (a step other than 0)")
        if len(range(*bounds)) > MAX_NODES:  # a concat names nodes: no more than a cell may have
            raise GradnasError(f"{where}: range(...) spans more than {MAX_NODES} nodes")
        return list(range(*bounds))
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise GradnasError(f"{where}: not a literal: {ast.unparse(node)[:60]}") from None
    return check_parsed(value, where)


def _text_cell(pairs: object, concat: object, where: str) -> CellGenotype:
    """As the DARTS code reads it: consecutive pairs feed one node each, so the cell has len(pairs) / 2 nodes."""
    if not isinstance(pairs, (list, tuple)) or not pairs or len(pairs) % 2:
        n = len(pairs) if isinstance(pairs, (list, tuple)) else "no"
        raise GradnasError(f"{where}: {n} (op, source) pairs; darts cells have 2 for each node (8 for nodes 2..5)")
    flat = [_pair(p, f"{where}, pair {i + 1}") for i, p in enumerate(pairs)]
    return CellGenotype(tuple(tuple(flat[i:i + 2]) for i in range(0, len(flat), 2)),
                        _int_tuple(concat, f"{where}_concat"))


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
            if not (tilde and src.isascii() and src.isdigit() and len(src) <= 4):
                raise GradnasError(f"{where}: node {n}, pair {k}: {piece!r} is not op~source")
            pairs.append((op, int(src)))
        nodes.append(tuple(pairs))
    return validate(Genotype("nb201", CellGenotype(tuple(nodes), NB201_CONCAT)), where)


# ---------------------------------------------------------------------------------------------- text forms

@dataclass(frozen=True)
class TextForm:
    """A one-line text form of a space's shared genotypes, named by the space (``SearchSpace.text_form``)."""
    prefix: str                          # how a genotype in this form starts, to tell the forms apart
    format: Callable[[Genotype], str]
    parse: Callable[[str], Genotype]
    json_key: str                        # the read-only copy a genotype JSON file carries


TEXT_FORMS: Registry[TextForm] = Registry("genotype text form")
TEXT_FORMS.register("darts")(TextForm("Genotype(", format_darts, parse_darts, "darts"))
TEXT_FORMS.register("nb201")(TextForm("|", format_arch_string, parse_arch_string, "arch"))


def text_form(g: Genotype) -> TextForm | None:
    """The text form ``g`` can be written in: its space's, for a shared (not per-cell) genotype."""
    name = space_of(validate(g)).text_form
    return TEXT_FORMS[name] if name is not None and g.cells is None else None


# ---------------------------------------------------------------------------------------------- JSON

FORMAT, VERSION = "gradnas-genotype", 1


def genotype_to_dict(g: Genotype) -> dict:
    """The versioned JSON form; the text form's copy ("darts", "arch") is a read-only convenience that loading
    ignores."""
    validate(g)
    d: dict = {"format": FORMAT, "version": VERSION, "space": g.space, "normal": _cell_dict(g.normal),
               "reduce": _cell_dict(g.reduce) if g.reduce is not None else None, "cells": None}
    if g.cells is not None:
        reductions = reduction_indices(len(g.cells))
        d["cells"] = [{**_cell_dict(c), "reduction": i in reductions} for i, c in enumerate(g.cells)]
    elif (form := text_form(g)) is not None:
        d[form.json_key] = form.format(g)
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
    write_atomic(path, json.dumps(genotype_to_dict(g), indent=1) + "\n")
    return path


def load_genotype(path: str | Path) -> Genotype:
    path = Path(path)
    text = read_text(path, "genotype file")
    try:
        d = check_parsed(json.loads(text), str(path))
    except json.JSONDecodeError as e:
        raise GradnasError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except (RecursionError, MemoryError) as err:
        raise parse_error(err, f"genotype file {path}") from None
    return genotype_from_dict(d, str(path))


# ---------------------------------------------------------------------------------------------- any spec

def parse_genotype(spec: str) -> Genotype:
    """A published name, a genotype JSON file, a run directory holding genotype.json, a DARTS text form or
    an NB201 arch string."""
    text = check_text(spec, "genotype").strip()
    if text.lower() in PUBLISHED:
        return PUBLISHED[text.lower()]
    form = next((TEXT_FORMS[name] for name in TEXT_FORMS if text.startswith(TEXT_FORMS[name].prefix)), None)
    if form is not None:
        return form.parse(text)
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
    # The NASNet-A and AmoebaNet-A cells in the DARTS code's DARTS-format transcription (5 nodes each).
    "nasnet": _darts("sep5 1, sep3 0 | sep5 0, sep3 0 | avg 1, skip 0 | avg 0, avg 0 | sep3 1, skip 1",
                     "sep5 1, sep7 0 | max 1, sep7 0 | avg 1, sep5 0 | skip 3, avg 2 | sep3 2, max 1",
                     (2, 3, 4, 5, 6), (4, 5, 6)),
    "amoebanet": _darts("avg 0, max 1 | sep3 0, sep5 2 | sep3 0, avg 3 | sep3 1, skip 1 | skip 0, avg 1",
                        "avg 0, sep3 1 | max 0, sep7 2 | sep7 0, avg 1 | max 0, max 1 | conv7x1 0, sep3 5",
                        (4, 5, 6), (3, 4, 6)),
    "nb201_is_darts": parse_arch_string(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"),
    "nb201_i_darts": parse_arch_string(
        "|skip_connect~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"),
    "nb201_s_darts": parse_arch_string(
        "|skip_connect~0|+|skip_connect~0|none~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"),
    "nb201_all_skip": nb201_from_edges(["skip_connect"] * 6),
}
