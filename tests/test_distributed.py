"""Data-parallel search on CPU with the gloo backend, two processes started by torchrun from the test."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from gradnas import load_model
from gradnas.search.checkpoint import load_checkpoint

WORKER = Path(__file__).with_name("dist_worker.py")


def torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-port", str(29500 + os.getpid() % 1000), *args]


def kill_run(proc: subprocess.Popen, out: Path) -> None:
    """SIGKILL torchrun and its workers, which run in sessions of their own (so ``killpg`` would leave them
    running, holding the run directory's lock): every process whose command line names ``out``."""
    pids = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if str(out) in _cmdline(pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    deadline = time.time() + 30
    while any(str(out) in _cmdline(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.1)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def run_worker(tmp_path, name, nproc, **overrides):
    out = tmp_path / name
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(torchrun(nproc, str(WORKER), str(out), json.dumps(overrides)),
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(nproc)]


def test_two_ranks_stay_bit_identical(tmp_path):
    r0, r1 = run_worker(tmp_path, "ddp", 2, batch_size=8)
    assert all(torch.equal(a, b) for a, b in zip(r0["arch"], r1["arch"]))
    assert all(torch.equal(a, b) for a, b in zip(r0["weights"], r1["weights"]))
    assert r0["genotype"] == r1["genotype"]
    assert (tmp_path / "ddp" / "checkpoint.pt").is_file() and not list((tmp_path / "ddp").glob("*.tmp"))


def test_sync_bn_two_ranks_match_one_process_with_the_whole_batch(tmp_path):
    single, = run_worker(tmp_path, "one", 1, batch_size=16, sync_bn=True)
    r0, r1 = run_worker(tmp_path, "two", 2, batch_size=8, sync_bn=True)
    for a, b in zip(single["arch"], r0["arch"]):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    assert single["genotype"] == r0["genotype"] == r1["genotype"]


def test_killed_two_rank_run_resumes(tmp_path):
    out = tmp_path / "killed"
    cli = ["-m", "gradnas", "search", "--space", "nb201", "--channels", "4", "--layers", "1", "--batch-size", "8",
           "--epochs", "10", "--steps-per-epoch", "6", "--no-progress", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(torchrun(2, "--no-python", sys.executable) + cli, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    kill_run(proc, out)
    assert 1 <= load_checkpoint(out / "checkpoint.pt")["epoch"] < 10
    resumed = subprocess.run(torchrun(2, "--no-python", sys.executable) + ["-m", "gradnas", "search", "--resume",
                             str(out), "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 10


def test_two_rank_training_with_sync_bn_matches_one_process(tmp_path):
    """`torchrun ... gradnas train`: DDP over 2 ranks at per-rank batch B/2 equals one process at batch B."""
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"
    common = ["-m", "gradnas", "train", arch, "--data", "digits", "--channels", "4", "--layers", "1", "--epochs", "2",
              "--steps-per-epoch", "4", "--eval-every", "2", "--sync-bn", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *common, "--batch-size", "16", "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=300)
    two = subprocess.run(torchrun(2, "--no-python", sys.executable) + common +
                         ["--batch-size", "8", "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0 and two.returncode == 0, (one.stderr + two.stderr)[-3000:]
    assert two.stdout.count("saved:") == 1  # rank 0 alone reports
    a, b = load_model(tmp_path / "one").state_dict(), load_model(tmp_path / "two").state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-4), key
    logs = [[json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
            for run in ("one", "two")]
    assert [r["train_acc"] for r in logs[0]] == [r["train_acc"] for r in logs[1]]


def test_batched_executor_under_two_ranks_matches_the_per_edge_path(tmp_path):
    """The batched executor under data parallelism, with BN statistics per rank and synced over the ranks: the
    same weights, architecture, BN running statistics and genotype as per-edge."""
    out = tmp_path / "executors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    darts = {"space": "darts", "channels": 4, "layers": 3}  # pools with BN: normalised once per source
    runs = [{"batch_size": 8, "epochs": 1, "sync_bn": sync, "executor": executor, **space}
            for space, sync in (({}, False), ({}, True), (darts, True)) for executor in ("per-edge", "batched")]
    done = subprocess.run(torchrun(2, str(WORKER), str(out), json.dumps(runs)),  # all in one launch
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [[torch.load(out / str(i) / f"rank{r}.pt", weights_only=False) for r in range(2)]
               for i in range(len(runs))]
    for per_edge, batched in (results[0:2], results[2:4], results[4:6]):
        assert all(r["batched"] for r in batched) and not any(r["batched"] for r in per_edge)  # no fallback
        for ref, got in zip(per_edge, batched):
            for key in ("arch", "weights", "buffers"):
                assert len(got[key]) == len(ref[key])
                for a, b in zip(ref[key], got[key]):
                    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
            assert got["genotype"] == ref["genotype"]
        assert all(torch.equal(a, b) for a, b in zip(batched[0]["weights"], batched[1]["weights"]))
    # synced statistics are the same on both ranks; per-rank ones are not
    running = [[b for b in r["buffers"] if b.is_floating_point()] for r in (*results[1], *results[3], *results[5])]
    assert not all(torch.allclose(a, b) for a, b in zip(running[0], running[1]))
    for rank0, rank1 in (running[2:4], running[4:6]):
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(rank0, rank1))
