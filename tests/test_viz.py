"""Cell diagrams: the matplotlib fallback always, the graphviz path where ``dot`` is installed."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gradnas import viz
from gradnas.errors import GradnasError
from gradnas.genotypes import PUBLISHED, per_cell_genotype
from gradnas.viz import cell_graph, draw_cell, draw_genotype

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")


def check_images(files: list[Path], names: list[str]) -> None:
    assert [f.name for f in files] == [f"{n}.{ext}" for n in names for ext in ("png", "svg")]
    for f in files:
        data = f.read_bytes()
        assert data.startswith(PNG_MAGIC) if f.suffix == ".png" else b"<svg" in data and data.rstrip().endswith(b"</svg>")


def test_cell_graph_nodes_and_edges():
    nodes, edges = cell_graph(PUBLISHED["darts_v2"].normal, "darts")
    assert [n for n, _, _ in nodes] == ["c_{k-2}", "c_{k-1}", "2", "3", "4", "5", "c_{k}"]
    assert ("c_{k-2}", "2", "sep_conv_3x3") in edges and ("2", "5", "dil_conv_3x3") in edges
    assert [e for e in edges if e[1] == "c_{k}"] == [(str(n), "c_{k}", "") for n in (2, 3, 4, 5)]
    nodes, edges = cell_graph(PUBLISHED["nb201_s_darts"].normal, "nb201")
    assert [(n, kind) for n, _, kind in nodes] == [("0", "input"), ("1", "inner"), ("2", "inner"), ("3", "output")]
    assert len(edges) == 5 and ("1", "2", "none") not in edges  # the none edge connects nothing


@pytest.mark.parametrize("backend", ["matplotlib", pytest.param("graphviz", marks=needs_dot)])
def test_darts_and_nb201_cells(tmp_path, backend):
    check_images(draw_genotype(PUBLISHED["darts_v2"], tmp_path, "v2", backend=backend), ["v2_normal", "v2_reduce"])
    check_images(draw_genotype(PUBLISHED["nb201_s_darts"], tmp_path, backend=backend), ["cell"])


@pytest.mark.parametrize("backend", ["matplotlib", pytest.param("graphviz", marks=needs_dot)])
def test_per_cell_genotype_draws_each_cell_and_an_overview(tmp_path, backend):
    g = per_cell_genotype([PUBLISHED["darts_v1"].normal, PUBLISHED["is_darts"].reduce, PUBLISHED["darts_v2"].reduce])
    files = draw_genotype(g, tmp_path / "diagrams", "dnas", backend=backend)
    check_images(files, ["dnas_00", "dnas_01", "dnas_02", "dnas_overview"])


def test_stem_with_a_dot_keeps_it(tmp_path):
    files = draw_cell(PUBLISHED["nb201_is_darts"].normal, "nb201", tmp_path / "cell.v2", "t", backend="matplotlib")
    check_images(files, ["cell.v2"])


def test_backend_choice(tmp_path, monkeypatch):
    with pytest.raises(GradnasError, match="unknown backend 'tikz'"):
        draw_genotype(PUBLISHED["nb201_all_skip"], tmp_path, backend="tikz")
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    with pytest.raises(GradnasError, match="needs the Graphviz 'dot' program"):
        draw_genotype(PUBLISHED["nb201_all_skip"], tmp_path, backend="graphviz")
    check_images(draw_genotype(PUBLISHED["nb201_all_skip"], tmp_path), ["cell"])  # falls back without dot
