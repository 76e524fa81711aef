"""Genotype text forms, JSON files, validation messages and the published genotypes (docs/methods.md §1, §8)."""
from __future__ import annotations

import itertools
import json

import pytest
import torch

from gradnas.errors import GradnasError
from gradnas.genotypes import (PUBLISHED, CellGenotype, Genotype, format_arch_string, format_darts,
                               genotype_from_dict, genotype_text, genotype_to_dict, load_genotype, nb201_from_edges,
                               parse_arch_string, parse_darts, parse_genotype, per_cell_genotype,
                               reduction_indices, save_genotype, validate)
from gradnas.selection.rules import RULES
from gradnas.spaces.ops import DARTS_OPS, NB201_OPS

DARTS_V2_TEXT = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
NB201_ARCHS = {  # docs/methods.md §8
    "nb201_is_darts": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "nb201_i_darts": "|skip_connect~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "nb201_s_darts": "|skip_connect~0|+|skip_connect~0|none~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
    "nb201_all_skip": "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
}
DARTS_NAMES = [n for n in PUBLISHED if not n.startswith("nb201") and n not in ("nasnet", "amoebanet")]  # 4-node cells


def darts_text(normal: list, normal_concat: object = (2, 3, 4, 5), reduce: list | None = None) -> str:
    """The text form of arbitrary (possibly invalid) pairs, with DARTS_V2's reduction cell by default."""
    reduce = reduce if reduce is not None else PUBLISHED["darts_v2"].reduce.pairs
    return (f"Genotype(normal={normal!r}, normal_concat={list(normal_concat)}, reduce={reduce!r}, "
            f"reduce_concat=[2, 3, 4, 5])")


V2_NORMAL = PUBLISHED["darts_v2"].normal.pairs


def replaced(pairs: list, i: int, pair: object) -> list:
    return [pair if j == i else p for j, p in enumerate(pairs)]


def test_published_genotypes_are_valid_and_complete():
    assert set(PUBLISHED) == {"darts_v1", "darts_v2", "pc_darts_cifar", "pc_darts_image", "is_darts", *NB201_ARCHS,
                              "nasnet", "amoebanet"}  # the last two: tests/test_cell_formats.py
    for name, g in PUBLISHED.items():
        assert validate(g) is g
    for name in DARTS_NAMES:
        g = PUBLISHED[name]
        assert g.space == "darts" and g.cells is None and len(g.normal.pairs) == len(g.reduce.pairs) == 8
        assert g.normal.concat == g.reduce.concat == (2, 3, 4, 5)
    for name, arch in NB201_ARCHS.items():
        assert format_arch_string(PUBLISHED[name]) == arch


def test_darts_v2_text_form_is_the_original():
    assert format_darts(PUBLISHED["darts_v2"]) == DARTS_V2_TEXT
    assert parse_darts(DARTS_V2_TEXT) == PUBLISHED["darts_v2"]
    # The original code writes concat as range(2, 6).
    assert parse_darts(DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "range(2, 6)")) == PUBLISHED["darts_v2"]
    # Positional arguments, as a namedtuple accepts them.
    positional = DARTS_V2_TEXT.replace("normal=", "").replace("normal_concat=", "")
    assert parse_darts(positional) == PUBLISHED["darts_v2"]


@pytest.mark.parametrize("name", DARTS_NAMES)
def test_darts_text_and_json_round_trip(name, tmp_path):
    g = PUBLISHED[name]
    assert parse_darts(format_darts(g)) == g
    assert genotype_from_dict(genotype_to_dict(g)) == g
    assert load_genotype(save_genotype(g, tmp_path / "g.json")) == g


def test_other_concat_lists_round_trip(tmp_path):
    g = parse_darts(darts_text(V2_NORMAL, normal_concat=[3, 5]))
    assert g.normal.concat == (3, 5) and g.reduce.concat == (2, 3, 4, 5)
    assert "normal_concat=[3, 5]" in format_darts(g)
    assert parse_darts(format_darts(g)) == g
    assert load_genotype(save_genotype(g, tmp_path / "g.json")) == g


def test_json_layout_and_convenience_keys_are_ignored_on_load(tmp_path):
    d = genotype_to_dict(PUBLISHED["darts_v2"])
    assert (d["format"], d["version"], d["space"], d["cells"]) == ("gradnas-genotype", 1, "darts", None)
    assert d["normal"]["nodes"][3] == [["skip_connect", 0], ["dil_conv_3x3", 2]]
    assert d["reduce"]["concat"] == [2, 3, 4, 5] and d["darts"] == DARTS_V2_TEXT
    d["darts"] = "stale text nobody reads"
    assert genotype_from_dict(json.loads(json.dumps(d))) == PUBLISHED["darts_v2"]
    nb = genotype_to_dict(PUBLISHED["nb201_is_darts"])
    assert nb["arch"] == NB201_ARCHS["nb201_is_darts"] and nb["reduce"] is None and "darts" not in nb
    assert genotype_from_dict(nb) == PUBLISHED["nb201_is_darts"]


def test_per_cell_genotype_json_round_trip(tmp_path):
    cells = [PUBLISHED[DARTS_NAMES[i % len(DARTS_NAMES)]].normal for i in range(8)]
    cells[2], cells[5] = PUBLISHED["darts_v2"].reduce, PUBLISHED["is_darts"].reduce
    g = per_cell_genotype(cells)
    assert g.cells == tuple(cells) and g.normal == cells[0] and g.reduce == cells[2]
    assert [g.cell(i, reduction=i in (2, 5)) for i in range(8)] == cells
    d = genotype_to_dict(g)
    assert [c["reduction"] for c in d["cells"]] == [i in (2, 5) for i in range(8)]
    assert "darts" not in d
    assert load_genotype(save_genotype(g, tmp_path / "run" / "genotype.json")) == g
    with pytest.raises(GradnasError, match="per-cell genotypes have no DARTS text form"):
        format_darts(g)
    lines = genotype_text(g).splitlines()
    assert len(lines) == 8 and lines[2].startswith("cell 2 (reduction): [('max_pool_3x3', 0), ('max_pool_3x3', 1), ")
    assert lines[0].endswith("] concat [2, 3, 4, 5]")


def test_genotype_text_of_shared_genotypes():
    assert genotype_text(PUBLISHED["darts_v2"]) == DARTS_V2_TEXT
    assert genotype_text(PUBLISHED["nb201_s_darts"]) == NB201_ARCHS["nb201_s_darts"]


def test_reduction_indices_match_the_networks():
    assert reduction_indices(8) == (2, 5) and reduction_indices(14) == (4, 9) and reduction_indices(20) == (6, 13)


def test_all_nb201_arch_strings_round_trip_and_are_unique():
    strings = set()
    for ops in itertools.product(NB201_OPS, repeat=6):
        s = format_arch_string(nb201_from_edges(ops))
        g = parse_arch_string(s)
        assert format_arch_string(g) == s and [op for op, _ in g.normal.pairs] == list(ops)
        strings.add(s)
    assert len(strings) == 5 ** 6 == 15_625


def test_nb201_edge_order():
    ops = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "skip_connect"]
    assert format_arch_string(nb201_from_edges(ops)) == (
        "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|skip_connect~2|")


@pytest.mark.parametrize("text, message", [
    (darts_text(replaced(V2_NORMAL, 3, ("sep_conv_9x9", 1))),
     "normal cell, node 3, pair 2: unknown op 'sep_conv_9x9'; expected one of max_pool_3x3, "),
    (darts_text(replaced(V2_NORMAL, 7, ("nor_conv_3x3", 2))),
     "node 5, pair 2: unknown op 'nor_conv_3x3' (an op of the nb201 space)"),
    (darts_text(replaced(V2_NORMAL, 0, ("none", 0))), "node 2, pair 1: op 'none' is not allowed in a darts genotype"),
    (darts_text(replaced(V2_NORMAL, 1, ("sep_conv_3x3", 2))),
     "normal cell, node 2, pair 2: source 2 out of range; node 2 takes sources 0..1"),
    (darts_text(replaced(V2_NORMAL, 6, ("sep_conv_3x3", -1))), "node 5, pair 1: source -1 out of range"),
    (darts_text(V2_NORMAL, reduce=replaced(V2_NORMAL, 2, ("max_pool_3x3", 4))), "reduction cell, node 3, pair 1: source 4"),
    (darts_text(V2_NORMAL[:7]), "normal: 7 (op, source) pairs; darts cells have 2 for each node"),
    (darts_text(replaced(V2_NORMAL, 4, ("sep_conv_3x3",))), "normal, pair 5: expected an (op, source) pair"),
    (darts_text(V2_NORMAL, normal_concat=[2, 3, 4, 6]), "normal cell: concat [2, 3, 4, 6] must name distinct"),
    (darts_text(V2_NORMAL, normal_concat=[1, 2]), "concat [1, 2]"),
    (darts_text(V2_NORMAL, normal_concat=[]), "concat []"),
    (DARTS_V2_TEXT.replace("normal=[", "normal=__import__('os').listdir('.') or ["), "normal: not a literal"),
    (DARTS_V2_TEXT.replace("range", "").replace("[2, 3, 4, 5]", "range(x)", 1), "range(...) takes 1 to 3 integer"),
    (DARTS_V2_TEXT.replace("Genotype", "Foo"), "is not a published name"),
    (DARTS_V2_TEXT.replace(", reduce_concat=[2, 3, 4, 5]", ""), "missing reduce_concat"),
    (DARTS_V2_TEXT.replace("reduce_concat", "normal_concat"), "repeated argument 'normal_concat'"),
    (DARTS_V2_TEXT[:-1], "invalid syntax"),
    ("|sep_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|",
     "NB201 arch string: cell, node 1, pair 1: unknown op 'sep_conv_3x3' (an op of the darts space)"),
    ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", "node 2, pair 1: source 1, expected 0"),
    ("|none~0|+|none~0|none~1|", "2 nodes; nb201 cells have 3"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|", "node 3: 2 pairs; expected 3"),
    ("|none~0|+|none~0|none1|+|none~0|none~1|none~2|", "node 2, pair 2: 'none1' is not op~source"),
    ("|none~0|+none~0|none~1|+|none~0|none~1|none~2|", "node 2: 'none~0|none~1|' is not of the form"),
    ("not a genotype", "is not a published name (darts_v1, "),
])
def test_malformed_genotypes_are_rejected_with_a_located_message(text, message):
    with pytest.raises(GradnasError) as err:
        parse_genotype(text)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_validate_rejects_bad_genotype_objects():
    v2 = PUBLISHED["darts_v2"]
    with pytest.raises(GradnasError, match="needs a reduction cell"):
        validate(Genotype("darts", v2.normal))
    with pytest.raises(GradnasError, match="unknown space 'nb101'"):
        validate(Genotype("nb101", v2.normal))
    with pytest.raises(GradnasError, match="nb201 genotype is one cell"):
        validate(Genotype("nb201", PUBLISHED["nb201_all_skip"].normal, v2.normal))
    short = CellGenotype(v2.normal.nodes[:3], (2, 3, 4, 5))
    with pytest.raises(GradnasError, match=r"genotype: cell 3: concat \[2, 3, 4, 5\] must name distinct intermediate "
                                           r"nodes from 2..4"):
        per_cell_genotype([v2.normal] * 3 + [short] + [v2.normal] * 4)
    with pytest.raises(GradnasError, match="nb201 cells output node 3"):
        validate(Genotype("nb201", CellGenotype(PUBLISHED["nb201_all_skip"].normal.nodes, (2, 3))))
    with pytest.raises(GradnasError, match="nb201 genotypes have no DARTS text form"):
        format_darts(PUBLISHED["nb201_all_skip"])
    with pytest.raises(GradnasError, match="darts genotypes have no NB201 arch string"):
        format_arch_string(v2)


def _write(path, obj) -> str:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(version=2), "unsupported genotype version 2; this gradnas reads 1"),
    (lambda d: d.pop("version"), "unsupported genotype version None"),
    (lambda d: d.update(format="something-else"), "not a gradnas genotype"),
    (lambda d: d["normal"]["nodes"][0].__setitem__(1, ["sep_conv_3x3"]), "normal.nodes[0][1]: expected an (op, source)"),
    (lambda d: d["reduce"].update(concat="2345"), "reduce.concat: expected a list of node indices"),
    (lambda d: d["reduce"]["nodes"][1].__setitem__(0, ["avg_pool_3x3", 3]),
     "reduction cell, node 3, pair 1: source 3 out of range"),
    (lambda d: d.update(space="nb201"), "nb201 genotype is one cell"),
])
def test_bad_json_files_are_rejected(tmp_path, edit, message):
    d = genotype_to_dict(PUBLISHED["darts_v2"])
    edit(d)
    path = _write(tmp_path / "genotype.json", d)
    with pytest.raises(GradnasError) as err:
        parse_genotype(path)
    assert str(err.value).startswith(path) and message in str(err.value)


def test_unreadable_or_inconsistent_json_files_are_rejected(tmp_path):
    with pytest.raises(GradnasError, match=r"invalid JSON at line 1, column \d+"):
        load_genotype(_write(tmp_path / "bad.json", '{"format": '))
    with pytest.raises(GradnasError, match="cannot read genotype file"):
        load_genotype(tmp_path / "absent.json")
    d = genotype_to_dict(per_cell_genotype([PUBLISHED["darts_v1"].normal] * 8))
    d["cells"][3]["reduction"] = True
    with pytest.raises(GradnasError, match="cells\\[3\\]: reduction is True, but a 8-cell network reduces at cells 2 and 5"):
        genotype_from_dict(d)


def test_parse_genotype_dispatches_on_every_input_kind(tmp_path):
    v2 = PUBLISHED["darts_v2"]
    assert parse_genotype("darts_v2") is v2 and parse_genotype(" DARTS_V2 ") is v2
    assert parse_genotype(DARTS_V2_TEXT) == v2
    assert parse_genotype(NB201_ARCHS["nb201_i_darts"]) == PUBLISHED["nb201_i_darts"]
    path = save_genotype(PUBLISHED["pc_darts_cifar"], tmp_path / "run" / "genotype.json")
    assert parse_genotype(str(path)) == PUBLISHED["pc_darts_cifar"]
    assert parse_genotype(str(path.parent)) == PUBLISHED["pc_darts_cifar"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(GradnasError, match="has no genotype.json"):
        parse_genotype(str(tmp_path / "empty"))
    with pytest.raises(GradnasError, match=r"expected Genotype\(normal=\.\.\."):
        parse_darts(DARTS_V2_TEXT.replace("Genotype", "Foo"))


# -- selection rules ----------------------------------------------------------------------------------------------

def quark0_parse(W: list[list[float]], op_names: tuple[str, ...]) -> list[tuple[str, int]]:
    """quark0/darts ``Network.genotype._parse``, on plain Python floats (float64)."""
    none, gene, start = op_names.index("none"), [], 0
    for n in range(2, 6):
        rows = W[start:start + n]
        edges = sorted(range(n), key=lambda x: -max(w for k, w in enumerate(rows[x]) if k != none))[:2]
        for j in edges:
            k_best = None
            for k in range(len(rows[j])):
                if k != none and (k_best is None or rows[j][k] > rows[j][k_best]):
                    k_best = k
            gene.append((op_names[k_best], j))
        start += n
    return gene


def near_ties(E: int, O: int) -> torch.Tensor:
    """Distinct float64 weights that all round to the same float32 (0.5 + k·1e-13)."""
    g = torch.Generator().manual_seed(0)
    return 0.5 + 1e-13 * torch.randperm(E * O, generator=g).view(E, O).double()


def test_darts_rule_ranks_in_the_weights_precision_and_ignores_a_dominant_none():
    W = near_ties(14, 8)
    assert torch.unique(W.float()).numel() == 1 and torch.unique(W).numel() == 14 * 8
    W[:, DARTS_OPS.index("none")] += 1.0  # none strongest on every edge
    cell = RULES["darts"](W, DARTS_OPS, (2, 3, 4, 5))
    assert cell.pairs == quark0_parse(W.tolist(), DARTS_OPS)
    assert all(op != "none" for op, _ in cell.pairs)
    random = torch.rand(14, 8, dtype=torch.float64)
    random[:, 0] = 2.0
    assert RULES["darts"](random, DARTS_OPS, (2, 3, 4, 5)).pairs == quark0_parse(random.tolist(), DARTS_OPS)


def test_argmax_rule_ranks_in_the_weights_precision():
    W = near_ties(6, 5)
    cell = RULES["argmax"](W, NB201_OPS, (1, 2, 3))
    best = [max(range(5), key=row.__getitem__) for row in W.tolist()]
    assert [op for node in cell.nodes for op, _ in node] == [NB201_OPS[k] for k in best]
