"""Cell diagrams: the matplotlib fallback always, the graphviz path where ``dot`` is installed."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gradnas import viz
from gradnas.cli import main
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


@pytest.mark.parametrize("name", ["darts_v1", "darts_v2", "pc_darts_cifar", "pc_darts_image", "is_darts"])
def test_fallback_op_labels_overlap_nothing(name):
    """Every op label of the matplotlib diagram is clear of the other labels and of the node boxes."""
    for cell in (PUBLISHED[name].normal, PUBLISHED[name].reduce):
        graph = cell_graph(cell, "darts")
        fig = viz._cell_figure(graph, name)
        ax = fig.axes[0]
        labels = [t for t in ax.texts if t.get_bbox_patch() is not None]
        assert len(labels) == sum(1 for _, _, op in graph[1] if op)
        fig.draw_without_rendering()
        boxes = [p.get_window_extent() for p in ax.patches if isinstance(p, viz.FancyBboxPatch)]
        extents = [t.get_window_extent() for t in labels]
        for i, a in enumerate(extents):
            assert not any(a.overlaps(b) for b in boxes + extents[i + 1:]), (name, labels[i].get_text())


def test_show_writes_where_out_says_and_names_only_with_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["show", "nb201_is_darts"]) == 0
    assert "pass --out DIR" in capsys.readouterr().out and list(tmp_path.iterdir()) == []
    assert main(["show", "nb201_is_darts", "--out", str(tmp_path / "figs")]) == 0
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["cell.png", "cell.svg"]
