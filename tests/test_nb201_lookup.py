"""NAS-Bench-201 table look-ups: docs/methods.md §7 oracles on the packaged table, ranking and errors on small ones."""
from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from gradnas.benchmarks import NB201Table, format_entry
from gradnas.benchmarks.nb201 import PACKAGED, decode, encode
from gradnas.errors import GradnasError
from gradnas.genotypes import PUBLISHED, nb201_from_edges, parse_arch_string
from gradnas.spaces.ops import NB201_OPS

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
IS_DARTS = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
HEADER = "index,arch,cifar10_test,cifar100_test,imagenet16_120_test\n"


@pytest.fixture(scope="module")
def table() -> NB201Table:
    return NB201Table.from_path()  # the table shipped in the package


def test_packaged_table_loads_fast_in_little_memory(monkeypatch):
    monkeypatch.delenv("GRADNAS_NB201_TABLE", raising=False)
    assert PACKAGED.stat().st_size < 300_000
    tracemalloc.start()
    started = time.perf_counter()
    table = NB201Table.from_path()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(table) == 15_625 and seconds < 0.5 and peak < 5_000_000


def test_packaged_table_equals_the_csv(table, shared_file, tmp_path):
    """The shipped arrays hold exactly what the CSV release holds, and save → load round-trips."""
    csv = NB201Table.from_path(shared_file("nb201_accuracy.csv"))
    for name in ("index", "codes", "acc"):
        np.testing.assert_array_equal(getattr(table, name), getattr(csv, name))
    csv.save(tmp_path / "t.npz")
    again = NB201Table.from_path(tmp_path / "t.npz")
    assert again.lookup(BEST) == csv.lookup(BEST) == table.lookup(BEST)


def one_hot(arch: str) -> np.ndarray:
    probs = np.zeros((6, 5))
    for e, (op, _) in enumerate(parse_arch_string(arch).normal.pairs):
        probs[e, NB201_OPS.index(op)] = 1.0
    return probs


def small_table(tmp_path: Path, rows: list[tuple[str, float]]) -> Path:
    path = tmp_path / "nb201.csv"
    path.write_text(HEADER + "".join(f"{i},{arch},{acc},{acc - 20},{acc - 40}\n" for i, (arch, acc) in enumerate(rows)))
    return path


def test_table_is_complete_and_memory_light(table):
    assert len(table) == 15_625 and sorted(table.codes) == list(range(15_625))
    assert table.acc.dtype == np.float32 and table.acc.shape == (15_625, 3)
    assert all(isinstance(v, np.ndarray) for v in vars(table).values())
    assert sum(v.nbytes for v in vars(table).values()) < 1_000_000  # the CSV is 1.8 MB


def test_best_cifar10_is_a_tie_of_6111_and_13714(table):
    best = table.lookup(BEST)
    assert (best.index, best.arch, best.cifar10, best.rank_cifar10) == (6111, BEST, 94.3733, 1)
    assert best.percentile_cifar10 == pytest.approx(100 * 15_623 / 15_625)
    other = table.lookup(decode(int(table.codes[table.index == 13714][0])))
    assert (other.cifar10, other.rank_cifar10) == (best.cifar10, 1)
    assert round(best.cifar10, 2) == 94.37


def test_reference_architectures(table):
    skip = table.lookup(PUBLISHED["nb201_all_skip"])
    assert (skip.index, round(skip.cifar10, 2)) == (1835, 54.30)
    e = table.lookup(IS_DARTS)
    assert e.index == 9930 and (round(e.cifar10, 2), round(e.cifar100, 2), round(e.imagenet16, 2)) == (94.36, 73.51, 46.34)
    assert e.rank_cifar10 == table.rank(IS_DARTS) == 3 and table.rank(IS_DARTS, "cifar100") == 1
    i_darts, s_darts = table.lookup(PUBLISHED["nb201_i_darts"]), table.lookup(PUBLISHED["nb201_s_darts"])
    assert (i_darts.index, round(i_darts.cifar10, 2), round(i_darts.imagenet16, 2)) == (13436, 93.31, 43.84)
    assert (s_darts.index, round(s_darts.cifar10, 2), round(s_darts.cifar100, 2)) == (2299, 70.92, 38.97)
    line = format_entry(e)
    assert "#9930" in line and IS_DARTS in line and "94.36" in line and "rank 3" in line and "\n" not in line


def test_top_k_matches_the_probability_product(table):
    first, second = table.top_k(one_hot(IS_DARTS), k=2)
    assert first[0] == 1.0 and first[1].index == 9930 and second[0] == 0.0
    assert table.top_k(torch.tensor(one_hot(BEST)), k=1)[0][1].index == 6111
    probs = np.random.default_rng(0).dirichlet(np.ones(5), size=6)
    top = table.top_k(probs, k=10)
    argmax = nb201_from_edges([NB201_OPS[i] for i in probs.argmax(1)])
    assert top[0][1].arch == table.lookup(argmax).arch
    for p, entry in top:  # each probability is the product of its edges' probabilities
        codes = [NB201_OPS.index(op) for op, _ in parse_arch_string(entry.arch).normal.pairs]
        assert p == pytest.approx(np.prod(probs[np.arange(6), codes]))
    assert [p for p, _ in top] == sorted((p for p, _ in top), reverse=True)
    assert len(table.top_k(probs, k=20_000)) == 15_625


def test_encoding_follows_the_edge_order():
    assert encode("|none~0|+|none~0|none~1|+|none~0|none~1|avg_pool_3x3~2|") == 4
    assert encode("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|") == 5 ** 5
    assert all(decode(encode(decode(c))) == decode(c) for c in (0, 1, 777, 15_624))


def test_ranks_share_ties_and_percentiles_count_strictly_worse(tmp_path):
    archs = [decode(c) for c in (0, 1, 2, 3)]
    t = NB201Table.from_path(small_table(tmp_path, list(zip(archs, [90.0, 95.0, 95.0, 80.0]))))
    entries = [t.lookup(a) for a in archs]
    assert [e.rank_cifar10 for e in entries] == [3, 1, 1, 4]
    assert [e.percentile_cifar10 for e in entries] == [25.0, 50.0, 50.0, 0.0]
    assert t.rank(archs[0], "imagenet16") == 3
    with pytest.raises(GradnasError, match="no entry for"):
        t.lookup(decode(4))
    with pytest.raises(GradnasError, match="unknown dataset 'svhn'"):
        t.rank(archs[0], "svhn")


def test_table_location_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("GRADNAS_NB201_TABLE", raising=False)
    assert len(NB201Table.from_path()) == 15_625  # the packaged table
    with pytest.raises(GradnasError, match="does not exist"):
        NB201Table.from_path(tmp_path / "absent.csv")
    monkeypatch.setenv("GRADNAS_NB201_TABLE", str(small_table(tmp_path, [(decode(7), 91.0)])))
    assert NB201Table.from_path().lookup(decode(7)).cifar10 == 91.0


@pytest.mark.parametrize("body, message", [
    ("0,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,1,2,3\n1,|none~0|+|bogus~0|none~1|+|none~0|none~1|none~2|,1,2,3\n",
     "line 3: NB201 arch string: cell, node 2, pair 1: unknown op 'bogus'"),
    ("0,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,1,x,3\n", "line 2: could not convert"),
    ("0,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,1,nan,3\n", "line 2: non-finite accuracy 1, nan, 3"),
    ("0,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,1\n", "line 2: 3 fields, the header has 5"),
    ("0,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,1,2,3\n1,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,4,5,6\n",
     "appears more than once"),
    ("", "the table has no rows"),
])
def test_malformed_tables_are_rejected(tmp_path, body, message):
    path = tmp_path / "t.csv"
    path.write_text(HEADER + body)
    with pytest.raises(GradnasError, match=message.replace("|", r"\|")):
        NB201Table.from_path(path)


def test_bad_inputs_are_rejected(tmp_path):
    t = NB201Table.from_path(small_table(tmp_path, [(decode(0), 50.0)]))
    with pytest.raises(GradnasError, match=r"shape \(6, 5\), got \(5, 6\)"):
        t.top_k(np.ones((5, 6)))
    with pytest.raises(GradnasError, match="finite and non-negative"):
        t.top_k(-np.ones((6, 5)))
    with pytest.raises(GradnasError, match="k must be at least 1"):
        t.top_k(np.ones((6, 5)), k=0)
    with pytest.raises(GradnasError, match="darts genotypes have no NB201 arch string"):
        t.lookup(PUBLISHED["darts_v2"])
    (tmp_path / "cols.csv").write_text("index,arch,cifar10_test\n")
    with pytest.raises(GradnasError, match="missing column\\(s\\) cifar100_test, imagenet16_120_test"):
        NB201Table.from_path(tmp_path / "cols.csv")


def test_malformed_npz_tables_are_rejected(tmp_path):
    np.savez(tmp_path / "a.npz", index=np.arange(2), codes=np.arange(2))
    with pytest.raises(GradnasError, match="missing array"):
        NB201Table.from_path(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", index=np.arange(1), codes=np.array([5 ** 6]), acc=np.ones((1, 3)))
    with pytest.raises(GradnasError, match=r"codes must lie in \[0, 5\^6\)"):
        NB201Table.from_path(tmp_path / "b.npz")
