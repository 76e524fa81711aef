"""End-to-end searches on tiny supernets: API, CLI, resume equivalence, NaN guard, config files."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from gradnas.cli import main
from gradnas.config import resolve_config
from gradnas.errors import GradnasError
from gradnas.genotypes import load_genotype
from gradnas.search.checkpoint import load_checkpoint
from gradnas.search.loop import Searcher, search
from helpers import killed_in_epoch, nan_after

TINY = {"darts": dict(channels=4, layers=3), "nb201": dict(channels=4, layers=1)}


def tiny_config(tmp_path, space="nb201", **kw):
    return resolve_config({"space": space, "epochs": 2, "batch_size": 16, "steps_per_epoch": 3,
                           "progress": False, "out": str(tmp_path / "run"), **TINY[space], **kw})


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_api_search_writes_every_artefact(tmp_path, space):
    result = search(tiny_config(tmp_path, space))
    out = tmp_path / "run"
    assert load_genotype(out / "genotype.json") == result.genotype
    assert [r["epoch"] for r in result.history] == [0, 1]
    for name in ("checkpoint.pt", "config.yaml", "env.json", "log.jsonl"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    assert all(p.stat().st_size > 0 for p in result.paths["diagrams"])
    record = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "genotype", "arch", "seconds", "lr"} <= set(record)
    env = json.loads((out / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["seed"] == 0


def test_second_order_search_runs(tmp_path):
    result = search(tiny_config(tmp_path, "darts", order=2, epochs=1, steps_per_epoch=2))
    assert result.genotype.space == "darts"


def test_cli_search_show_and_bench(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GRADNAS_NB201_TABLE", raising=False)  # the packaged table, with no option
    out = tmp_path / "cli"
    code = main(["search", "--space", "nb201", "--epochs", "1", "--channels", "4", "--layers", "1",
                 "--batch-size", "16", "--steps-per-epoch", "2", "--no-progress", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "genotype: |" in printed and "most probable" in printed
    assert (out / "nb201.txt").is_file()
    assert main(["bench", "nb201", str(out), "--top-k", "2"]) == 0
    assert main(["show", str(out)]) == 0
    assert "parameters" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["search", "--space", "nope"], "unknown search space"),
    (["search", "--method", "nope"], "unknown method"),
    (["search", "--data", "/no/such/data.npz"], "data.npz"),
    (["show", "sep_conv_9x9"], "genotype"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gradnas: error:") and message in err and len(err.splitlines()) == 1


def test_bad_command_line_exits_2(capsys):
    assert main(["search", "--epochs", "many"]) == 2
    assert capsys.readouterr().err.startswith("gradnas: error: argument --epochs: invalid int value")


def test_config_files_and_precedence(tmp_path):
    (tmp_path / "c.yaml").write_text("space: nb201\nepochs: 7\nlr: 0.1\n")
    (tmp_path / "c.toml").write_text('space = "nb201"\nbatch-size = 8\n')
    config = resolve_config({"lr": 0.2}, tmp_path / "c.yaml")
    assert (config.space, config.epochs, config.lr, config.nesterov, config.weight_decay) == ("nb201", 7, 0.2, True, 5e-4)
    assert resolve_config({}, tmp_path / "c.toml").batch_size == 8
    (tmp_path / "bad.yaml").write_text("epoch: 3\n")
    with pytest.raises(GradnasError, match="unknown option"):
        resolve_config({}, tmp_path / "bad.yaml")


def test_effective_config_is_saved(tmp_path):
    search(tiny_config(tmp_path, epochs=1, lr=0.05))
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["lr"] == 0.05 and saved["space"] == "nb201"


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_resumed_run_ends_exactly_like_an_uninterrupted_one(tmp_path, monkeypatch, space):
    full = search(tiny_config(tmp_path / "a", space, epochs=3))
    cut = tiny_config(tmp_path / "b", space, epochs=3)
    with killed_in_epoch(monkeypatch, Searcher, 2):
        search(cut)
    assert load_checkpoint(tmp_path / "b" / "run" / "checkpoint.pt")["epoch"] == 2
    resumed = search(cut, resume=True)
    assert resumed.genotype == full.genotype
    for a, b in zip(full.model.arch_parameters(), resumed.model.arch_parameters()):
        assert torch.equal(a, b)
    for a, b in zip(full.model.weight_parameters(), resumed.model.weight_parameters()):
        assert torch.equal(a, b)
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2]


def test_sigkilled_cli_run_resumes(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "gradnas", "search", "--space", "nb201", "--channels", "4", "--layers", "1",
           "--batch-size", "16", "--epochs", "6", "--steps-per-epoch", "8", "--no-progress", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600  # generous: only a loaded machine is this slow, and then it must not fail
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoint.pt").exists(), f"no checkpoint before the kill: {proc.stderr.read().decode()[-2000:]}"
    done = load_checkpoint(out / "checkpoint.pt")["epoch"]
    assert 1 <= done < 6
    result = subprocess.run([sys.executable, "-m", "gradnas", "search", "--resume", str(out), "--no-progress"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 6
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()] == list(range(6))


def test_nan_loss_stops_with_one_line_and_keeps_the_checkpoint(tmp_path, monkeypatch, capsys):
    config = tiny_config(tmp_path, epochs=3)
    searcher = Searcher(config)
    searcher.criterion = searcher.update.criterion = nan_after(searcher.criterion, 8)
    with pytest.raises(GradnasError, match=r"non-finite loss at epoch 2, step \d"):
        searcher.run()
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_corrupt_checkpoint_is_one_clear_error(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["search", "--resume", str(run)]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_real_cifar_subset_search(tmp_path, shared_file):
    data = shared_file("cifar10_subset.npz")
    result = search(tiny_config(tmp_path, "nb201", data=str(data), epochs=1, steps_per_epoch=2))
    assert result.history[0]["train_loss"] > 0
