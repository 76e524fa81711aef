"""Captured iterations (``--cuda-graph``): the capturable SGD, the capture wrapper and the loops that use it.

On the CPU the stand-in :class:`gradnas.capture.Tape` does what a CUDA graph does: capture records the
operations the step dispatches, a replay runs them again on the recorded tensors without the step's Python.
A search and a training run through it must end exactly where the eager run ends, and a value frozen into the
graph must show. The last test captures for real on a GPU, where one is present (bench/gpu_check.py checks
every captured configuration there).
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import gradnas.capture
import gradnas.viz
import gradnas.search.loop as loop
import gradnas.train.trainer as trainer
from gradnas.capture import CapturedStep, Tape, capture_mode
from gradnas.cli import main
from gradnas.config import resolve_config
from gradnas.errors import GradnasError
from gradnas.optim import CapturableSGD, set_lr
from gradnas.profiling import HostSyncGuard
from gradnas.search.bilevel import ARCH_UPDATES
from gradnas.search.checkpoint import load_checkpoint
from gradnas.search.loop import Searcher, build_search_model, capture_unsafe
from gradnas.train import Trainer
from gradnas.train import resolve_train_config
from helpers import capturable_adam_on_cpu

pytestmark = pytest.mark.usefixtures("one_thread")


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
    backend = Tape()
    step = CapturedStep(lambda x: (x * 2, x.sum()), warmup=2, backend=backend)
    for k in range(5):
        x = torch.full((3,), float(k))
        doubled, total = step(x)
        assert torch.equal(doubled, 2 * x) and total.item() == 3 * k
    assert (backend.warmups, backend.captures, backend.replays) == (2, 1, 3) and step.replays == 3
    first = step(torch.ones(3))[0]
    assert step(torch.zeros(3))[0] is first  # the graph's own output, overwritten
    odd = step(torch.ones(4))  # another shape runs eagerly, outside the graph
    assert odd[0].shape == (4,) and backend.replays == 5
    step.bind(step.fn, None)  # what the graph baked in is unchanged: it stays
    assert step(torch.ones(3))[0] is first and backend.captures == 1
    step.bind(lambda x: (x * 3, x.sum()), "tripled")  # changed: warm up again, capture anew
    assert [step(torch.ones(3))[0].tolist() for _ in range(3)] == [[3.0] * 3] * 3
    assert (backend.warmups, backend.captures, backend.released) == (4, 2, 1)


def test_the_tape_replays_operations_not_the_python_step():
    """A number the step reads on the host is frozen into the graph; a tensor it reads is not; random draws
    are new at every replay."""
    rate, tensor_rate = [1.0], torch.ones(())
    step = CapturedStep(lambda x: (x * rate[0], x * tensor_rate, torch.rand(2)), warmup=0, backend=Tape())
    first = [t.clone() for t in step(torch.ones(1))]
    rate[0] = 5.0
    tensor_rate.fill_(5.0)
    frozen, read, draws = step(torch.ones(1))
    assert frozen.item() == 1.0 and read.item() == 5.0 and not torch.equal(draws, first[2])


class Refuses(Tape):
    """A capture that fails from the ``fail_at``-th one on, as one that meets a host synchronisation does."""

    def __init__(self, fail_at: int = 1):
        super().__init__()
        self.fail_at, self.attempts = fail_at, 0

    def capture(self, fn, static_inputs):
        self.attempts += 1
        if self.attempts >= self.fail_at:
            raise RuntimeError("operation not permitted when stream is capturing")
        return super().capture(fn, static_inputs)


def test_a_failed_capture_is_one_error_that_says_how_to_go_on():
    with pytest.raises(GradnasError, match=r"could not be captured as a CUDA graph \(operation not permitted.*"
                                           r"rerun with --cuda-graph off"):
        CapturedStep(lambda x: (x,), warmup=0, backend=Refuses())(torch.zeros(2))
    with pytest.raises(GradnasError, match=r"aten._local_scalar_dense reads a value back"):  # the tape refuses it too
        CapturedStep(lambda x: (x * x.sum().item(),), warmup=0, backend=Tape())(torch.ones(2))


def test_what_the_warm_up_must_build_is_never_built_under_capture():
    """The batched executor's plan, its identity matrices, shared-norm statistics, wide BN buffers and batch
    counter are built once by an eager call; a capture that would build them fails, naming what."""
    config = resolve_config({"space": "nb201", "channels": 4, "layers": 1, "executor": "batched"})
    model = build_search_model(config, 10).train()
    step = lambda x: (model(x)[0].sum(),)
    with pytest.raises(GradnasError, match="the batched executor's plan built while a graph captures"):
        CapturedStep(step, warmup=0, backend=Tape())(torch.randn(2, 3, 8, 8))
    backend = Tape()
    warmed = CapturedStep(step, warmup=1, backend=backend)
    for _ in range(3):
        warmed(torch.randn(2, 3, 8, 8))
    assert backend.replays == 2


def test_cuda_graphs_capture_thread_locally_into_one_pool(monkeypatch):
    """A streamed loader's pin-memory thread calls CUDA during a capture: the capture must be thread-local.
    Recaptures reuse the first graph's pool, after its graph is released."""
    calls = []

    class Graph:
        def replay(self):
            pass

        def reset(self):
            calls.append("reset")

    class Capturing:
        def __init__(self, graph, pool, capture_error_mode):
            calls.append((pool, capture_error_mode))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", Capturing)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: object())
    backend = gradnas.capture.CudaGraphs()
    monkeypatch.setattr(backend, "warm_up", lambda fn, inputs: fn(*inputs))
    step = CapturedStep(lambda x: (x,), warmup=0, backend=backend)
    step(torch.ones(1))
    step.bind(step.fn, "another")
    step(torch.ones(1))
    assert calls == [(backend.pool, "thread_local"), "reset", (backend.pool, "thread_local")]


def test_capture_mode_and_what_cannot_be_captured(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert capture_mode("auto", cpu, None) is False and capture_mode("off", gpu, None) is False
    assert capture_mode("auto", gpu, None) is True and capture_mode("on", gpu, None) is True
    assert capture_mode("auto", gpu, "data-parallel runs") is False
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

def _as_on_a_gpu(monkeypatch, module, backend, captured: bool = True):
    """Capture as on a GPU (the capturable SGD), through ``backend``; ``captured=False``: the same run eagerly."""
    monkeypatch.setattr(module, "capture_mode", lambda *a: True)
    capturable_adam_on_cpu(monkeypatch)
    monkeypatch.setattr(gradnas.capture, "CudaGraphs", lambda: backend)
    if not captured:
        monkeypatch.setattr(module, "CapturedStep", lambda *a: CapturedStep(*a, warmup=float("inf")))


def _search(tmp_path, name, monkeypatch, captured: bool, backend=None, **options):
    backend = backend or Tape()
    _as_on_a_gpu(monkeypatch, loop, backend, captured)
    monkeypatch.setattr(gradnas.viz, "draw_genotype", lambda *a: {})  # most of a tiny run; tests/test_viz.py draws
    config = resolve_config({"batch_size": 16, "steps_per_epoch": 6, "progress": False, "seed": 3,
                             "out": str(tmp_path / name), **options})
    torch.manual_seed(0)
    result = Searcher(config).run()
    monkeypatch.undo()
    return result, backend


def _assert_same_run(eager, captured):
    assert captured.genotype == eager.genotype
    for a, b in zip(eager.history, captured.history):
        assert {k: a[k] for k in a if k != "seconds"} == {k: b[k] for k in b if k != "seconds"}
    ref = eager.model.state_dict()
    for k, v in captured.model.state_dict().items():
        assert torch.equal(v, ref[k]), k


NB201 = dict(space="nb201", channels=4, layers=1)
# (options, graphs captured): one graph for the run, captured anew when what it baked in changes.
SEARCHES = {
    "darts-2nd-order": (dict(NB201, epochs=2, order=2), 1),  # an unrolled architecture step and a weight step
    "is-darts": (dict(NB201, method="is-darts", epochs=5, shrink_rate=0.25, shrink_interval=1, iim_samples=16,
                      lr_per_step=True), 5),  # single-level, a rate per step, ops removed after epochs 0 to 3
    "pc-darts-warm-up": (dict(space="darts", channels=4, layers=3, method="pc-darts", epochs=2, batch_size=8,
                              arch_warmup_epochs=1), 2),  # the architecture step switches on in epoch 1
    "beta-darts": (dict(NB201, method="beta-darts", epochs=3), 1),  # λ rises every epoch, in a device tensor
    "dnas": (dict(space="darts", channels=4, layers=3, method="dnas", epochs=1, batch_size=8), 1),  # random draws
}


@pytest.mark.parametrize("executor", ["per-edge", "batched"])
@pytest.mark.parametrize("name", list(SEARCHES))
def test_captured_search_ends_where_the_eager_one_ends(tmp_path, monkeypatch, name, executor):
    options, graphs = SEARCHES[name]
    options = {**options, "executor": executor}
    eager, _ = _search(tmp_path, "eager", monkeypatch, False, **options)
    captured, backend = _search(tmp_path, "captured", monkeypatch, True, **options)
    assert backend.captures == graphs and backend.replays == options["epochs"] * 6 - 3 * graphs
    _assert_same_run(eager, captured)
    assert eager.history[-1]["train_loss"] < eager.history[0]["train_loss"] + 0.5  # it is a real run


def test_a_python_rate_frozen_into_the_graph_is_caught(tmp_path, monkeypatch):
    """Plain SGD with its rate a number, annealed every step: a graph replays the rate it captured, and the
    stand-in shows it (the run departs from the eager one); the capturable SGD's rate tensor does not."""
    sgd = lambda params, device, **kw: torch.optim.SGD(params, **kw)
    runs = {}
    for captured in (False, True):
        monkeypatch.setattr(loop, "CapturableSGD", sgd)
        runs[captured], _ = _search(tmp_path, f"plain{captured}", monkeypatch, captured, **NB201, epochs=1,
                                    lr_per_step=True)
    assert runs[True].history[0]["train_loss"] != runs[False].history[0]["train_loss"]


def test_a_capture_that_fails_is_one_error_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    backend = Refuses(fail_at=2)  # the second capture: when the architecture step switches on after a warm-up
    _as_on_a_gpu(monkeypatch, loop, backend)
    out = tmp_path / "run"
    code = main(["search", "--space", "nb201", "--channels", "4", "--layers", "1", "--epochs", "3",
                 "--batch-size", "16", "--steps-per-epoch", "5", "--arch-warmup-epochs", "1", "--no-progress",
                 "--out", str(out)])
    assert code == 2 and capsys.readouterr().err.strip().splitlines() == [
        "gradnas: error: the iteration could not be captured as a CUDA graph (operation not permitted when stream "
        "is capturing); rerun with --cuda-graph off (a run resumes with --resume DIR --cuda-graph off)"]
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    monkeypatch.undo()
    assert main(["search", "--resume", str(out), "--cuda-graph", "off", "--no-progress"]) == 0


def test_captured_training_ends_where_the_eager_one_ends(tmp_path, monkeypatch):
    results = {}
    for captured in (False, True):
        backend = Tape()
        _as_on_a_gpu(monkeypatch, trainer, backend, captured)
        config = resolve_train_config({"genotype": "darts_v2", "data": "digits", "auxiliary": False, "channels": 4,
                                       "layers": 3, "epochs": 3, "batch_size": 16, "steps_per_epoch": 5,
                                       "drop_path": 0.2, "eval_every": 100, "progress": False,
                                       "out": str(tmp_path / f"train{captured}")})
        torch.manual_seed(0)
        results[captured] = (Trainer(config).run(), backend)
        monkeypatch.undo()
    (eager, _), (captured, backend) = results[False], results[True]
    # one graph for three epochs of new rates and drop-path probabilities
    assert backend.captures == 1 and backend.replays == 3 * 5 - 3
    assert [r["drop_path"] for r in captured.history] == [0, 0.2 / 3, 0.4 / 3]
    assert [r["train_loss"] for r in captured.history] == [r["train_loss"] for r in eager.history]
    ref = eager.model.state_dict()
    for k, v in captured.model.state_dict().items():
        assert torch.equal(v, ref[k]), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_real_cuda_graph_equals_the_eager_iteration(tmp_path):
    """On a GPU: a captured DARTS search (second order) replays every call after its warm-ups and ends close to
    the eager one (float32, TF32 convs). bench/gpu_check.py checks every other captured configuration."""
    results = {}
    for mode in ("off", "on"):
        config = resolve_config({"space": "darts", "channels": 8, "layers": 3, "order": 2, "epochs": 2,
                                 "batch_size": 32, "steps_per_epoch": 8, "progress": False, "device": "cuda",
                                 "cuda_graph": mode, "out": str(tmp_path / mode)})
        torch.manual_seed(0)
        searcher = Searcher(config)
        results[mode] = searcher.run()
    assert (searcher.captured.captures, searcher.captured.replays) == (1, 2 * 8 - 3)
    ref = results["off"].model.state_dict()
    for k, v in results["on"].model.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=1e-3, atol=1e-4, msg=k)
    assert results["on"].genotype == results["off"].genotype
