"""bench/search_step.py: its quick JSON mode runs the library's steps and reports every field."""
import argparse
import json
from pathlib import Path

import pytest
import torch

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
    rows = (("darts-b64", ("weight", "arch-1", "arch-2")), ("pc-darts-k4-b64", ("weight", "arch-1")))
    steps = [(row, step, executor) for row, kinds in rows for executor in ("per-edge", "batched") for step in kinds]
    iters = [(row, "iter-" + step[-1], executor) for row, step, executor in steps if step != "weight"]
    assert [(r["row"], r["step"], r["executor"]) for r in records] == steps + iters  # the baseline always runs
    timed = {(r["row"], r["step"], r["executor"]): r for r in records}
    for row, step, executor in iters:  # one timed step: the iteration is the weight step plus the arch step
        parts = [timed[row, kind, executor]["ms_per_step"] for kind in ("weight", "arch-" + step[-1])]
        assert timed[row, step, executor]["ms_per_step"] == pytest.approx(sum(parts), abs=2e-3)
    records = records[:len(steps)]
    assert all(r["speedup_vs_per_edge"] > 0 for r in records if r["executor"] == "batched")
    records = [r for r in records if r["executor"] == "per-edge"]
    base, pc = records[0], records[3]
    assert base["ratio_saved_bytes"] == 1.0 and pc["method"] == "pc-darts" and pc["batch"] == base["batch"] == 8
    assert 0 < pc["saved_bytes"] < base["saved_bytes"] and pc["ratio_saved_bytes"] < 1
    assert all(r["ms_per_step"] > 0 and r["images_per_s"] > 0 for r in records)


def test_rows_are_data_and_names_are_unique(search_step):
    names = [r.name for r in search_step.ROWS]
    assert len(set(names)) == len(names) and search_step.BASELINE in names
    assert all(set(r.steps) <= set(search_step.STEPS) for r in search_step.ROWS)


def test_rows_hold_every_method_preset(search_step):
    """Both bench/search_step.py and bench/dispatch_count.py (its rows) set the default executor against per-edge
    for every preset; a single-level preset has no architecture step to time."""
    from gradnas.config import resolve_config
    from gradnas.methods import PRESETS
    from gradnas.search.bilevel import ARCH_UPDATES
    assert {r.method for r in search_step.ROWS} == set(PRESETS.names())
    for r in search_step.ROWS:
        bilevel = ARCH_UPDATES[resolve_config({"space": r.space, "method": r.method}).arch_update].uses_validation
        assert bilevel == any(step.startswith("arch-") for step in r.steps), r.name


@pytest.fixture
def nb201_compare(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import nb201_compare
    return nb201_compare


def test_search_step_speed_options_reach_the_model(search_step, capsys, monkeypatch):
    placed = []

    def recording(model, config, device):
        placed.append((config.amp, config.compile, config.channels_last))
        return place_model(model, config, device)

    place_model = search_step.place_model
    monkeypatch.setattr(search_step, "place_model", recording)
    assert search_step.main(["--quick", "--steps", "1", "--warmup", "0", "--rows", "nb201-darts-b64",
                             "--no-channels-last", "--amp"]) == 0
    assert "amp, no-channels-last" in capsys.readouterr().out
    assert placed == [(True, False, False)] * 4  # the baseline row and the chosen one, with both executors


def test_shared_budget_scales_each_schedule(nb201_compare):
    pc = nb201_compare.budget_options("pc-darts", 10, 64)
    assert pc["arch_warmup_epochs"] == 3 and pc["lr"] == pytest.approx(0.1 * 64 / 256)  # 15 of 50; 0.1 at 256
    assert nb201_compare.budget_options("is-darts", 15, 64)["shrink_interval"] == 1  # 2 of 30
    assert nb201_compare.budget_options("darts", 12, 64) == {"epochs": 12, "batch_size": 64}


def test_set_options_reach_every_run(nb201_compare, tmp_path, monkeypatch):
    commands = []

    class Run:
        returncode = 0

        def __init__(self, cmd, **_):
            commands.append(cmd)

        def communicate(self):
            return ("",)

    monkeypatch.setattr(nb201_compare.subprocess, "Popen", Run)
    args = argparse.Namespace(runs=str(tmp_path), data="d.npz", table="t.csv", published=False, channels=8, layers=2,
                              epochs=12, batch_size=64, threads=1, set=[nb201_compare.option("iim-samples=0")])
    (tmp_path / "is-darts-s0").mkdir()
    nb201_compare.run_one("is-darts", 0, args)
    assert "--iim-samples=0" in commands[0] and "--shrink-interval=1" in commands[0]
    with pytest.raises(argparse.ArgumentTypeError):
        nb201_compare.option("iim_samples")


def test_collapsed_cells_are_reported_with_their_weights(nb201_compare, tmp_path):
    arch = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    probabilities = [[0.1, 0.6, 0.1, 0.1, 0.1]] * 6
    (tmp_path / "log.jsonl").write_text(json.dumps({"epoch": 0, "arch": {"normal": probabilities}}) + "\n")
    row = {"method": "darts", "seed": 0, "out": tmp_path, "arch": arch}
    lines = nb201_compare.skip_heavy([row, {**row, "arch": arch.replace("skip_connect", "nor_conv_1x1")}])
    assert lines[0] == "- darts seed 0: 5 of 6 edges skip; selection weights per edge:"
    assert sum(line.startswith("  | 1←0 | 0.100 | 0.600") for line in lines) == 1  # the second row is not reported


def test_dispatch_count_counts_every_step_of_an_iteration(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCH))
    import dispatch_count
    assert dispatch_count.main(["--quick", "--json", "--rows", "is-darts-nb201"]) == 0
    records = {(r["row"], r["executor"]): r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert records["darts-b64", "batched"]["ratio_vs_per_edge"] < 0.5
    records = {row: r for (row, executor), r in records.items() if executor == "per-edge"}
    darts, isdarts = records["darts-b64"], records["is-darts-nb201"]  # the baseline is always counted
    assert darts["iteration_ops"] == darts["weight_ops"] + darts["arch_ops"] and darts["ratio_vs_baseline"] == 1
    assert "arch_ops" not in isdarts and isdarts["iteration_ops"] == isdarts["weight_ops"]  # single level
    assert darts["by_op"]["convolution_backward"] > 0 and sum(darts["by_op"].values()) == darts["iteration_ops"]


def test_iteration_bench_times_the_loops_own_iteration(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCH))
    import iteration
    assert iteration.main(["--quick", "--json", "--steps", "1", "--rows", "pc-darts-k4-b64"]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (record["row"], record["mode"], record["precision"], record["batch"]) == ("pc-darts-k4-b64", "eager", "fp32", 8)
    assert record["arch_step"] and record["speedup_vs_eager_fp32"] == 1.0 and record["images_per_s"] > 0
    assert record["aten_ops"] > 1000  # an architecture and a weight step of a 3-cell supernet


def test_gpu_check_smoke_mode_checks_replays_equality_and_the_failure_line(monkeypatch, capsys):
    """bench/gpu_check.py --cpu: the GPU checks through the CPU stand-in; a missed replay or a departing run
    fails its check."""
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_check
    checks = ["beta-darts", "streamed", "training", "forced-failure"]
    assert gpu_check.main(["--cpu", "--checks", *checks]) == 0
    records = {r["check"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert list(records) == checks and all(r["ok"] for r in records.values())
    assert records["streamed"]["captures"] == 1 and records["streamed"]["replays"] == 2 * 5 - 3
    assert records["beta-darts"]["max_abs_diff"] == 0  # the CPU stand-in replays the very same operations
    assert "rerun with --cuda-graph off" in records["forced-failure"]["error"]
    monkeypatch.setattr(gpu_check.CapturedStep, "_fits", lambda self, inputs: False)  # every call eager, unseen
    assert gpu_check.main(["--cpu", "--checks", "training"]) == 1
    assert json.loads(capsys.readouterr().out)["replays"] == 1  # the call that captured


def test_step_ops_times_every_operator_of_both_executors(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCH))
    import step_ops
    assert step_ops.main(["--quick", "--rows", "darts-b64", "--kinds", "weight", "--top", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("darts-b64 weight: per-edge") and "batched" in lines[0]
    rows = [line.split() for line in lines[2:7]]
    assert len(rows) == 5 and all(float(r[1]) >= 0 and int(r[2]) >= 0 and int(r[4]) >= 0 for r in rows)
    assert any(r[0] == "convolution_backward" and int(r[4]) < int(r[2]) for r in rows)  # wide convs: fewer calls


def test_cpu_kernels_compares_forms_that_compute_the_same(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCH))
    import cpu_kernels
    assert cpu_kernels.main(["--quick"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[0] for r in rows] == [name for name, _, _ in cpu_kernels.CASES]
    assert all(float(r[-3]) > 0 and float(r[-2]) > 0 and float(r[-1]) > 0 for r in rows)
    torch.manual_seed(0)
    pointwise, phased = cpu_kernels.pw_filter_grad(2, 4, 3, 3), cpu_kernels.phased_5x5(2, 3, 4)
    torch.testing.assert_close(pointwise["new"]().reshape(12, 4, 1, 1), pointwise["old"]()[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(phased["new"]()[1], phased["old"]()[1], rtol=1e-4, atol=1e-4)


def test_isdarts_cells_measures_each_cell_before_the_first_step(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCH))
    import isdarts_cells
    m = isdarts_cells.main(["--data", "digits", "--epochs", "5", "--channels", "4", "--layers", "1",
                            "--batch-size", "16", "--edges", "3←0", "1←0", "--threads", "0"])
    F, mean = m["F"], m["mean"]
    assert F.shape == (3, 6, 5) and m["after_epoch"] == 1 and len(m["scales"]) == 3
    assert torch.isinf(F[:, :, 0]).all() and torch.isfinite(F[:, :, 1:]).all() and (F[:, :, 1:] > 0).all()
    assert torch.allclose(mean[:, 1:], F[:, :, 1:].mean(0))  # every cell saw the same images
    # a skip's output is its cell's input: the same map, so the same F, on every edge leaving node 0
    assert torch.allclose(F[:, 0, 1], F[:, 3, 1]) and torch.allclose(F[:, 0, 4], F[:, 1, 4])
    out = capsys.readouterr().out
    assert out.count("| mean |") == 2 and "edge 3←0" in out and "edge 1←0" in out


ORIGINAL = BENCH / ".original"
ORIGINAL_CODE = (ORIGINAL / "darts" / "cnn" / "model_search.py", ORIGINAL / "pc-darts" / "model_search.py")


@pytest.fixture
def original_code(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import original_code
    return original_code


@pytest.mark.skipif(not all(p.is_file() for p in ORIGINAL_CODE),
                    reason="the original DARTS and PC-DARTS code is not in bench/.original (git clone: see "
                           "bench/original_code.py)")
def test_original_code_runs_beside_both_executors_on_the_same_supernet(original_code, capsys):
    assert original_code.main(["--quick", "--json", "--ops", "3"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["row"], r["side"]) for r in records] == [(row, side) for row in ("darts", "pc-darts")
                                                        for side in ("original", "batched", "per-edge")]
    darts, pc = records[0], records[3]  # each checkout's own network: PC-DARTS adds β, 14 per cell type
    assert (darts["arch_parameters"], pc["arch_parameters"]) == (224, 252) and pc["weights"] < darts["weights"]
    assert all(r["same_supernet"] and r["batch"] == 2 and r["steps"] == 1 for r in records)
    assert all(r["iteration_ops"] == r["arch_ops"] + r["weight_ops"] and r["arch_ops"] > 1000 for r in records)
    assert all(r["ms_per_iteration"] > 0 and r["cpu_ms_per_iteration"] >= 0 for r in records)
    for original, batched, per_edge in (records[:3], records[3:]):
        assert original["original_over_ops"] == original["original_over_wall"] == 1
        assert batched["iteration_ops"] < per_edge["iteration_ops"] < original["iteration_ops"]
        assert batched["original_over_ops"] == pytest.approx(original["iteration_ops"] / batched["iteration_ops"], 1e-3)
    for r in records:  # timed op by op: every dispatched op, views too, each with its time
        assert sum(calls for _, calls in r["operators"].values()) >= r["iteration_ops"]
        assert r["operators"]["convolution"][0] > 0 and r["operators"]["convolution_backward"][1] > 0
    lines = original_code.operator_table(records, 3).splitlines()
    assert [line.split(":")[0] for line in lines if line.endswith("adds to each call)")] == ["darts", "pc-darts"]
    assert len(lines) == 2 * (1 + 2 + 3) and lines[2].split()[1:5:3] == ["original", "batched"]


def test_original_code_names_a_missing_checkout(original_code, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        original_code.main(["--rows", "darts", "--darts", str(tmp_path)])
    assert exit.value.code == 2 and f"{tmp_path} holds no original darts code" in capsys.readouterr().err
