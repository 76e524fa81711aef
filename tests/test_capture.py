"""Captured iterations (``--cuda-graph``): the capturable SGD, the capture wrapper and the loops that use it.

On the CPU a stand-in backend does what a CUDA graph does to the loop: capture records the step and runs
nothing, a replay runs it on the static inputs and writes its results into the same output tensors. A search
and a training run through it must end exactly where the eager run ends. The last test captures for real on
a GPU, where one is present.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import gradnas.capture
import gradnas.search.loop as loop
import gradnas.train.trainer as trainer
from gradnas.capture import CapturedStep, capture_mode
from gradnas.cli import main
from gradnas.config import resolve_config
from gradnas.errors import GradnasError
from gradnas.optim import CapturableSGD, set_lr
from gradnas.profiling import HostSyncGuard
from gradnas.search.bilevel import ARCH_UPDATES
from gradnas.search.loop import Searcher, capture_unsafe
from gradnas.train import Trainer
from gradnas.train import resolve_train_config

pytestmark = pytest.mark.usefixtures("one_thread")


class StandIn:
    """A CUDA graph's behaviour, on the CPU."""

    def __init__(self):
        self.warmups = self.captures = self.replays = 0

    def warm_up(self, fn, inputs):
        self.warmups += 1
        return fn(*inputs)

    def capture(self, fn, static_inputs):
        self.captures += 1
        return {"fn": fn, "inputs": static_inputs, "out": None}, None

    def replay(self, graph, _):
        self.replays += 1
        results = graph["fn"](*graph["inputs"])
        if graph["out"] is None:
            graph["out"] = tuple(r.clone() for r in results)
        else:
            for static, r in zip(graph["out"], results):
                static.copy_(r)
        return graph["out"]


# -- the optimiser ---------------------------------------------------------------------------------------------

class RateDtypes(TorchDispatchMode):
    """The dtypes of the scalar tensors that multiply a list of tensors."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket is torch.ops.aten._foreach_mul and torch.is_tensor(args[1]):
            self.seen.append((args[0][0].dtype, args[1].dtype))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options", [dict(momentum=0.9, nesterov=True, weight_decay=3e-4),
                                     dict(momentum=0.9, dampening=0.1), dict()])
def test_capturable_sgd_steps_as_sgd_does_and_reads_nothing_back(options, dtype):
    torch.manual_seed(0)
    tolerance = dict(rtol=1e-14, atol=1e-15) if dtype == torch.float64 else dict(rtol=2e-6, atol=1e-7)
    ref = [torch.randn(4, 3, dtype=dtype, requires_grad=True) for _ in range(3)]
    ours = [p.detach().clone().requires_grad_() for p in ref]
    a = torch.optim.SGD(ref, lr=0.1, foreach=True, **options)
    b = CapturableSGD(ours, lr=0.1, **options)
    sched_a = torch.optim.lr_scheduler.CosineAnnealingLR(a, 5, 1e-3)
    sched_b = torch.optim.lr_scheduler.CosineAnnealingLR(b, 5, 1e-3)
    for step in range(5):
        for p, q in zip(ref, ours):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        ours[2].grad = ref[2].grad = None if step == 1 else ref[2].grad  # a parameter skipped once keeps its buffer
        a.step()
        with HostSyncGuard(), RateDtypes() as rates:  # not even a step counter to allow
            b.step()
        assert rates.seen == [(dtype, dtype)]  # the rate in the weights' dtype: CUDA's one-kernel path
        sched_a.step()
        sched_b.step()
        for p, q in zip(ref, ours):
            torch.testing.assert_close(q, p, **tolerance)
    assert torch.is_tensor(b.param_groups[0]["lr"]) and float(b.param_groups[0]["lr"]) == pytest.approx(
        a.param_groups[0]["lr"], rel=1e-15)
    b.load_state_dict(a.state_dict())  # a plain SGD checkpoint: its number becomes the rate tensor again
    assert torch.is_tensor(b.param_groups[0]["lr"])
    set_lr(b.param_groups[0], 0.5)
    assert float(b.param_groups[0]["lr"]) == 0.5


# -- the wrapper -----------------------------------------------------------------------------------------------

def test_captured_step_warms_up_captures_once_and_replays_new_inputs():
    backend = StandIn()
    step = CapturedStep(lambda x: (x * 2, x.sum()), warmup=2, backend=backend)
    for k in range(5):
        x = torch.full((3,), float(k))
        doubled, total = step(x)
        assert torch.equal(doubled, 2 * x) and total.item() == 3 * k
    assert (backend.warmups, backend.captures, backend.replays) == (2, 1, 3)
    first = step(torch.ones(3))[0]
    assert step(torch.zeros(3))[0] is first  # the graph's own output, overwritten
    odd = step(torch.ones(4))  # another shape runs eagerly, outside the graph
    assert odd[0].shape == (4,) and backend.replays == 5


class Refuses(StandIn):
    """A capture that fails, as one that meets a host synchronisation does."""

    def capture(self, fn, static_inputs):
        self.captures += 1
        raise RuntimeError("operation not permitted when stream is capturing")


def test_a_failed_capture_falls_back_or_is_one_error(caplog):
    lenient = CapturedStep(lambda x: (x + 1,), warmup=0, backend=Refuses())
    assert lenient(torch.zeros(2))[0].tolist() == [1, 1] and lenient(torch.ones(2))[0].tolist() == [2, 2]
    assert "could not be captured" in caplog.text
    with pytest.raises(GradnasError, match="could not be captured as a CUDA graph"):
        CapturedStep(lambda x: (x,), warmup=0, strict=True, backend=Refuses())(torch.zeros(2))


def test_capture_mode_and_what_cannot_be_captured(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert capture_mode("auto", cpu, None) is None and capture_mode("off", gpu, None) is None
    assert capture_mode("auto", gpu, None) is False and capture_mode("on", gpu, None) is True
    assert capture_mode("auto", gpu, "data-parallel runs") is None
    with pytest.raises(GradnasError, match="cannot capture this run: data-parallel"):
        capture_mode("on", gpu, "data-parallel runs")
    with pytest.raises(GradnasError, match="need a CUDA device"):
        capture_mode("on", cpu, None)
    config = lambda **kw: resolve_config({"method": "dnas", **kw})
    assert capture_unsafe(config(), False, None) is None
    assert "data-parallel" in capture_unsafe(config(), True, None)
    assert "float16" in capture_unsafe(config(), False, torch.float16)
    assert "skip dropout" in capture_unsafe(config(order=2), False, None)
    assert "random channel" in capture_unsafe(config(partial_sampling="random"), False, None)
    assert capture_unsafe(resolve_config({"order": 2}), False, torch.bfloat16) is None
    monkeypatch.setattr(ARCH_UPDATES["bilevel"], "graph_safe", False)  # an update with per-step Python state
    assert "not graph-safe" in capture_unsafe(config(), False, None)


def test_cli_refuses_capture_without_cuda(tmp_path, capsys):
    assert main(["search", "--cuda-graph", "on", "--device", "cpu", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "gradnas: error: --cuda-graph on: cannot capture this run: device cpu (CUDA graphs need a CUDA device)"]
    assert main(["search", "--cuda-graph", "sometimes", "--out", str(tmp_path / "r")]) == 2
    assert "cuda_graph must be auto, on, off" in capsys.readouterr().err


# -- the loops, through the stand-in ---------------------------------------------------------------------------

def _search(tmp_path, name, monkeypatch, captured: bool, **options):
    backend = StandIn()
    monkeypatch.setattr(loop, "capture_mode", lambda *a: False)  # as on a GPU: capture, with the capturable SGD
    monkeypatch.setattr(gradnas.capture, "CudaGraphs", lambda: backend)
    monkeypatch.setattr(loop, "CapturedStep", CapturedStep if captured else (lambda fn, strict: fn))
    config = resolve_config({"batch_size": 16, "steps_per_epoch": 6, "progress": False, "seed": 3,
                             "out": str(tmp_path / name), **options})
    torch.manual_seed(0)
    result = Searcher(config).run()
    return result, backend


@pytest.mark.parametrize("options", [
    dict(space="nb201", channels=4, layers=1, epochs=2, order=2),  # an unrolled architecture step and a weight step
    dict(space="nb201", method="is-darts", channels=4, layers=1, epochs=5, shrink_rate=0.25, shrink_interval=1,
         iim_samples=16, lr_per_step=True),  # single-level, a rate per step, ops removed after each epoch
], ids=["darts-2nd-order", "is-darts"])
def test_captured_search_ends_where_the_eager_one_ends(tmp_path, monkeypatch, options):
    eager, _ = _search(tmp_path, "eager", monkeypatch, False, **options)
    captured, backend = _search(tmp_path, "captured", monkeypatch, True, **options)
    epochs = options["epochs"]
    assert backend.captures == epochs and backend.replays == epochs * (6 - 3)  # a new graph each epoch
    assert captured.genotype == eager.genotype
    for a, b in zip(eager.history, captured.history):
        assert {k: a[k] for k in a if k != "seconds"} == {k: b[k] for k in b if k != "seconds"}
    ref = eager.model.state_dict()
    for k, v in captured.model.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert eager.history[-1]["train_loss"] < eager.history[0]["train_loss"] + 0.5  # it is a real run


def test_a_search_whose_capture_fails_warns_once_and_goes_on_eagerly(tmp_path, monkeypatch, caplog):
    backend = Refuses()
    monkeypatch.setattr(loop, "capture_mode", lambda *a: False)
    monkeypatch.setattr(gradnas.capture, "CudaGraphs", lambda: backend)
    config = resolve_config({"space": "nb201", "channels": 4, "layers": 1, "epochs": 3, "batch_size": 16,
                             "steps_per_epoch": 5, "progress": False, "out": str(tmp_path / "run")})
    result = Searcher(config).run()
    assert [r["epoch"] for r in result.history] == [0, 1, 2]
    assert backend.captures == 1 and caplog.text.count("could not be captured") == 1


def test_captured_training_ends_where_the_eager_one_ends(tmp_path, monkeypatch):
    results = {}
    for captured in (False, True):
        backend = StandIn()
        monkeypatch.setattr(trainer, "capture_mode", lambda *a: False)
        monkeypatch.setattr(gradnas.capture, "CudaGraphs", lambda: backend)
        monkeypatch.setattr(trainer, "CapturedStep", CapturedStep if captured else (lambda fn, strict: fn))
        config = resolve_train_config({"genotype": "darts_v2", "data": "digits", "auxiliary": False, "channels": 4, "layers": 3, "epochs": 2,
                                       "batch_size": 16, "steps_per_epoch": 5, "drop_path": 0.2, "eval_every": 100, "progress": False,
                                       "out": str(tmp_path / f"train{captured}")})
        torch.manual_seed(0)
        results[captured] = (Trainer(config).run(), backend)
    (eager, _), (captured, backend) = results[False], results[True]
    assert backend.captures == 2 and backend.replays == 2 * (5 - 3)
    assert [r["train_loss"] for r in captured.history] == [r["train_loss"] for r in eager.history]
    ref = eager.model.state_dict()
    for k, v in captured.model.state_dict().items():
        assert torch.equal(v, ref[k]), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_real_cuda_graph_equals_the_eager_iteration(tmp_path):
    """On a GPU: a captured DARTS search (second order) ends close to the eager one (float32, TF32 convs)."""
    results = {}
    for mode in ("off", "on"):
        config = resolve_config({"space": "darts", "channels": 8, "layers": 3, "order": 2, "epochs": 2,
                                 "batch_size": 32, "steps_per_epoch": 8, "progress": False, "device": "cuda",
                                 "cuda_graph": mode, "out": str(tmp_path / mode)})
        torch.manual_seed(0)
        results[mode] = Searcher(config).run()
    ref = results["off"].model.state_dict()
    for k, v in results["on"].model.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=1e-3, atol=1e-4, msg=k)
    assert results["on"].genotype == results["off"].genotype
