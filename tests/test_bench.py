"""bench/search_step.py: its quick JSON mode runs the library's steps and reports every field."""
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def search_step(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import search_step
    return search_step


def test_quick_json_reports_every_measurement_with_ratios(search_step, capsys):
    assert search_step.main(["--quick", "--json", "--steps", "1", "--warmup", "0", "--rows", "pc-darts-k4-b64"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    keys = {"space", "method", "step", "batch", "ms_per_step", "images_per_s", "saved_bytes",
            "ratio_saved_bytes", "ratio_images_per_s"}
    assert all(keys <= set(r) for r in records)
    assert [(r["row"], r["step"]) for r in records] == [  # the baseline is always measured, for the ratios
        ("darts-b64", "weight"), ("darts-b64", "arch-1"), ("darts-b64", "arch-2"),
        ("pc-darts-k4-b64", "weight"), ("pc-darts-k4-b64", "arch-1")]
    base, pc = records[0], records[3]
    assert base["ratio_saved_bytes"] == 1.0 and pc["method"] == "pc-darts" and pc["batch"] == base["batch"] == 8
    assert 0 < pc["saved_bytes"] < base["saved_bytes"] and pc["ratio_saved_bytes"] < 1
    assert all(r["ms_per_step"] > 0 and r["images_per_s"] > 0 for r in records)


def test_rows_are_data_and_names_are_unique(search_step):
    names = [r.name for r in search_step.ROWS]
    assert len(set(names)) == len(names) and search_step.BASELINE in names
    assert all(set(r.steps) <= set(search_step.STEPS) for r in search_step.ROWS)
