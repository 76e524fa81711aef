"""A lean core: the package data (digits, NB201 table) ship inside it, and every optional dependency that is
missing gives one line naming its extra while the core keeps working."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradnas.cli import main
from gradnas.config import resolve_config
from gradnas.data import load_dataset
from gradnas.data.datasets import DIGITS
from gradnas.search.loop import search

ROOT = Path(__file__).resolve().parents[1]
# sha256 of scikit-learn's load_digits() images (values 0..16) and targets, both as uint8: the shipped copy is
# that data unchanged.
DIGITS_SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"


def without(monkeypatch, *packages: str) -> None:
    """Make ``packages`` (and every gradnas module, re-imported on demand) look uninstalled."""
    for name in list(sys.modules):
        if name.split(".")[0] in packages or name in ("gradnas.viz", "gradnas.plots"):
            monkeypatch.delitem(sys.modules, name)
    for package in packages:
        monkeypatch.setitem(sys.modules, package, None)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("gradnas: error:") and len(err.splitlines()) == 1, err
    return err


def test_digits_ship_in_the_package_unchanged():
    with np.load(DIGITS) as d:
        images, target = d["images"], d["target"]
    assert images.shape == (1797, 8, 8) and images.dtype == target.dtype == np.uint8 and images.max() == 16
    assert hashlib.sha256(images.tobytes() + target.tobytes()).hexdigest() == DIGITS_SHA256
    assert np.bincount(target).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    d = load_dataset("digits")
    assert int(d.x_train.max()) == 255 and d.y_test.tolist()[:5] == target[-359:][:5].tolist()


def test_core_imports_none_of_the_extras():
    blocked = ["matplotlib", "tensorboard", "graphviz", "PIL", "onnx", "nats_bench", "sklearn", "scipy"]
    code = ("import sys; sys.modules.update(dict.fromkeys(%r)); import gradnas.cli, gradnas.search.loop, "
            "gradnas.train.trainer; gradnas.cli.build_parser(); print('ok')" % blocked)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_a_search_runs_without_plot_and_tensorboard(tmp_path, monkeypatch, caplog):
    without(monkeypatch, "matplotlib", "tensorboard")
    with caplog.at_level(logging.WARNING, "gradnas"):
        result = search(resolve_config({"space": "nb201", "channels": 4, "layers": 1, "epochs": 1, "batch_size": 16,
                                        "steps_per_epoch": 2, "progress": False, "out": str(tmp_path / "run")}))
    assert result.paths["genotype"].is_file() and "diagrams" not in result.paths
    assert not (tmp_path / "run" / "tensorboard").exists() and (tmp_path / "run" / "log.jsonl").is_file()
    warnings = [r.getMessage() for r in caplog.records]
    assert any("gradnas[plot]" in w for w in warnings) and any("gradnas[tensorboard]" in w for w in warnings)


@pytest.mark.parametrize("package, argv, extra", [
    ("matplotlib", ["plot", "{run}"], "plot"),
    ("PIL", ["search", "--data", "{tmp}/a", "--epochs", "1"], "images"),
])
def test_a_missing_extra_is_one_line_naming_it(tmp_path, monkeypatch, capsys, package, argv, extra):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("space: nb201\n")
    (run / "log.jsonl").write_text(json.dumps({"epoch": 0, "arch": {"normal": [[0.2] * 5] * 6}}) + "\n")
    (tmp_path / "a" / "cat").mkdir(parents=True)  # an image folder
    without(monkeypatch, package)
    assert main([a.format(tmp=tmp_path, run=run) for a in argv]) == 2
    assert f"pip install 'gradnas[{extra}]'" in one_error_line(capsys)


def test_installed_package_carries_its_data(tmp_path):
    """Install from a copy of the source tree, as pip does, and use the data from the installed files."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "runs", "*.egg-info",
                                                             "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(tmp_path / "site"), str(src)], check=True, capture_output=True, timeout=300)
    code = ("import gradnas, gradnas.benchmarks.nb201 as b, gradnas.data.datasets as d; "
            "t = b.NB201Table.from_path(); print(gradnas.__file__, len(t), len(d.load_dataset('digits').x_train))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path / "site"), "GRADNAS_NB201_TABLE": "",
                               "OMP_NUM_THREADS": "1"})
    where, rows, digits = done.stdout.split()
    assert where.startswith(str(tmp_path / "site")) and (rows, digits) == ("15625", "1438")
    assert (tmp_path / "site" / "gradnas" / "benchmarks" / "data" / "README.md").is_file()
