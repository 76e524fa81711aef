"""``gradnas plot``: heat-maps and per-edge lines of a run's architecture weights and importance, and the
heat-maps written to TensorBoard during the search."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gradnas.cli import main
from gradnas.config import resolve_config
from gradnas.plots import edge_names, heatmaps, read_run, run_series
from gradnas.search.loop import search
from gradnas.spaces import DARTS_OPS, NB201_OPS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def darts_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("plots") / "run"
    search(resolve_config({"space": "darts", "channels": 4, "layers": 3, "epochs": 2, "batch_size": 16,
                           "steps_per_epoch": 2, "progress": False, "out": str(out)}))
    return out


def fake_run(path, space, records, ops=None):
    """A run directory with only what ``gradnas plot`` reads."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"space": space, "ops": ops}))
    (path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_weights_follow_the_log_and_the_heatmap_shows_them(darts_run):
    space, ops, history, _ = read_run(darts_run)
    (weights,) = run_series(space, ops, history)
    assert list(weights.values) == ["normal", "reduce"] and list(weights.epochs) == [1, 2]
    for t, record in enumerate(history):
        np.testing.assert_array_equal(weights.values["normal"][t], record["arch"]["normal"])
    assert weights.edges[:3] == ["0→2", "1→2", "0→3"] and weights.ops == DARTS_OPS
    last = {k: v[-1] for k, v in weights.values.items()}
    fig = heatmaps(last, weights, "t")
    shown = [t.get_text() for t in fig.axes[0].texts]
    assert shown == [f"{v:.3f}" for v in np.asarray(history[-1]["arch"]["normal"]).ravel()]


def test_tensorboard_gets_the_heatmaps_every_epoch(darts_run):
    events = EventAccumulator(str(darts_run / "tensorboard"), size_guidance={"images": 0}).Reload()
    images = events.Images("arch/weights")
    assert [i.step for i in images] == [0, 1] and all(i.encoded_image_string.startswith(PNG_MAGIC) for i in images)


def test_per_cell_searches_get_a_grid_of_every_cell(tmp_path):
    ops = [op for op in DARTS_OPS if op != "none"]
    rng = np.random.default_rng(0)
    cells = [{f"cell{k}": rng.random((14, 7)).round(4).tolist() for k in range(3)} for _ in range(2)]
    run = fake_run(tmp_path / "dnas", "darts", [{"epoch": e, "arch": {**c, "stats": {"x": 1.0}}}
                                                for e, c in enumerate(cells)], ops)
    (weights,) = run_series(*read_run(run))
    assert list(weights.values) == ["cell0", "cell1", "cell2"] and weights.values["cell2"].shape == (2, 14, 7)
    np.testing.assert_array_equal(weights.values["cell1"][1], cells[1]["cell1"])
    fig = heatmaps({k: v[-1] for k, v in weights.values.items()}, weights, "t")
    assert [ax.get_title() for ax in fig.axes[:3]] == ["cell0", "cell1", "cell2"]


def test_cli_plot_of_importance_with_removed_ops_writes_where_out_says(tmp_path, capsys):
    importance = {"normal": {"0>1:skip_connect": 0.5, "2>3:nor_conv_3x3": 0.25}}
    run = fake_run(tmp_path / "is", "nb201", [{"epoch": 0, "arch": {"normal": np.ones((6, 5)).tolist()},
                                               "importance": importance}])
    weights, iim = run_series(*read_run(run))
    m = iim.values["normal"][0]
    assert iim.log_scale and m[0, NB201_OPS.index("skip_connect")] == 0.5
    assert m[edge_names("nb201").index("2→3"), NB201_OPS.index("nor_conv_3x3")] == 0.25
    assert np.isnan(m).sum() == 28  # every other op: removed, or not measured
    assert main(["plot", str(run), "--out", str(tmp_path / "figs")]) == 0
    names = [f"{s}_{kind}.png" for s in ("weights", "importance") for kind in ("final", "epochs", "edges_normal")]
    assert capsys.readouterr().out.split()[1::2] == [str(tmp_path / "figs" / n) for n in names]
    assert all((tmp_path / "figs" / n).read_bytes().startswith(PNG_MAGIC) for n in names)


def test_plot_of_a_non_run_is_one_error_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gradnas: error:") and "not a search run directory" in err and len(err.splitlines()) == 1
