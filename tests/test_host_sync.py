"""No step of any method waits for the device: no .item(), nonzero, copy between host and device, ... inside the
weight step or the architecture step (first and second order), for every preset on both executors, nor in the
training step, each as it is captured (capturable optimisers, device tensors for rates). On the CPU the guard
sees every such op and call."""
import pytest
import torch
import torch.nn as nn

from gradnas.config import resolve_config
from gradnas.methods import PRESETS
import gradnas.train.trainer as trainer
from gradnas.optim import CapturableSGD
from gradnas.profiling import DispatchCounter, HostSyncError, HostSyncGuard
from gradnas.search.bilevel import ARCH_UPDATES
from gradnas.search.loop import build_search_model, weight_step
from gradnas.train import Trainer, resolve_train_config
from helpers import capturable_adam_on_cpu

resolve_config({})  # registers the presets
TINY = {"darts": {"channels": 8, "layers": 3}, "nb201": {"channels": 8, "layers": 1}}


def steps(method: str, space: str, order: int, executor: str):
    """A search's step as a captured run builds it: the capturable SGD and Adam."""
    config = resolve_config({"method": method, "space": space, **TINY[space], "partial_k": 2 if method != "darts"
                             and "pc" in method or method == "dnas" else None, "progress": False,
                             "executor": executor})
    torch.manual_seed(0)
    model = build_search_model(config, 10).to(memory_format=torch.channels_last).train()
    weights = list(model.weight_parameters())
    sgd = CapturableSGD(weights, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                        nesterov=config.nesterov)
    update = ARCH_UPDATES[config.arch_update](model, criterion=nn.CrossEntropyLoss(), order=order,
                                              lr=config.arch_lr, betas=config.arch_betas,
                                              weight_decay=config.arch_weight_decay, capturable=True)
    size = 64 if config.imagenet_stem else 16  # the 224-px search stems down-sample 8-fold before the cells
    batch = lambda: (torch.randn(4, 3, size, size).contiguous(memory_format=torch.channels_last),
                     torch.randint(0, 10, (4,)))
    train, val = batch(), batch()

    def step():
        if update.active(10**6):
            update.arch_step(train, val, sgd)
        weight_step(model, nn.CrossEntropyLoss(), sgd, weights, train, config.grad_clip)

    step()  # optimiser state exists from here on
    return step


# Every preset in the DARTS space at first order; the NB201 space and second order where a method's step
# differs there (the unrolled step's extra forwards, random channel subsets, DNAS's skip dropout).
# GDAS reads its sampled ops back every forward (docs/methods.md §14): tested apart below.
READS_BACK = {"gdas"}
CASES = ([(m, "darts", 1) for m in PRESETS.names() if m not in READS_BACK]
         + [("darts", "nb201", 1), ("is-darts", "nb201", 1), ("darts", "darts", 2), ("pc-darts", "darts", 2),
            ("dnas", "darts", 2), ("g-darts-a", "darts", 2)])


@pytest.mark.parametrize("executor", ["per-edge", "batched"])
@pytest.mark.parametrize("method,space,order", CASES)
def test_step_never_synchronises_with_the_host(method, space, order, executor, monkeypatch):
    capturable_adam_on_cpu(monkeypatch)
    step = steps(method, space, order, executor)
    with HostSyncGuard():
        step()


def test_gdas_reads_back_only_its_sampled_ops(monkeypatch):
    """Its one read-back is the forward's copy of the sampled op indices (the guard stops at the first)."""
    capturable_adam_on_cpu(monkeypatch)
    step = steps("gdas", "darts", 1, "per-edge")
    with pytest.raises(HostSyncError, match=r"tolist\(\)"):
        with HostSyncGuard():
            step()


def test_training_step_never_synchronises_with_the_host(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "capture_mode", lambda *a: True)  # as captured: the rate and drop path in tensors
    config = resolve_train_config({"genotype": "darts_v2", "data": "digits", "auxiliary": False, "channels": 4,
                                   "layers": 3, "batch_size": 8, "drop_path": 0.2, "grad_clip": 5.0,
                                   "progress": False, "out": str(tmp_path / "train")})
    run = Trainer(config)
    run.model.train()
    x, y = next(iter(run.train_loader))
    run.step(x, y)  # the optimiser's state exists from here on
    with HostSyncGuard():
        run.step(x, y)
    run.release()


def test_guard_catches_a_read_back():
    x = torch.randn(3)
    with pytest.raises(HostSyncError, match="_local_scalar_dense"):
        with HostSyncGuard():
            float(x.sum())
    with pytest.raises(HostSyncError, match="boolean-mask"):
        with HostSyncGuard():
            x[x > 0]
    with pytest.raises(HostSyncError, match="nonzero"):
        with HostSyncGuard():
            x.nonzero()


@pytest.mark.parametrize("name,read", [
    ("tolist", lambda x: x.tolist()), ("cpu", lambda x: x.cpu()), ("numpy", lambda x: x.numpy()),
    ("to cpu", lambda x: x.to("cpu")), ("to device=cpu", lambda x: x.to(device="cpu")),
    ("list index", lambda x: x[[0, 2]]), ("list index in a tuple", lambda x: x[None, [0, 2]]),
    ("list assignment", lambda x: x.__setitem__([0, 1], 0.0)), ("tensor(list)", lambda x: torch.tensor([1.0, 2.0])),
    ("as_tensor(list)", lambda x: torch.as_tensor([1, 2])),
    ("repeat_interleave(tensor)", lambda x: torch.repeat_interleave(torch.ones(3, dtype=torch.long))),
    ("x.repeat_interleave(tensor)", lambda x: x.repeat_interleave(torch.ones(3, dtype=torch.long), 0))])
def test_guard_catches_copies_between_host_and_device_on_the_cpu(name, read):
    x, index, repeats = torch.randn(3), torch.tensor([0, 2]), torch.ones(3, dtype=torch.long)
    with pytest.raises(HostSyncError):
        with HostSyncGuard():
            read(x)
    with HostSyncGuard():  # what a step may do instead: device tensors, known sizes
        x[index], x.to(torch.float64), x.to(x.device), x.repeat_interleave(repeats, 0, output_size=3)


def test_counter_excludes_views_and_allocations():
    x = torch.randn(4, 4)
    with DispatchCounter() as counter:
        y = x.view(16)[:3].unsqueeze(0)  # views only
        torch.empty(5)
        (y + 1).relu()
        x.t().reshape(16)  # a copy: the transpose is not contiguous
    assert dict(counter.by_op) == {"add": 1, "relu": 1, "clone": 1}
