"""No step of any method waits for the device: no .item(), nonzero, copy to the host, ... inside the weight step
or the architecture step (first and second order), for every preset. On the CPU the guard sees every such op."""
import pytest
import torch
import torch.nn as nn

from gradnas.config import resolve_config
from gradnas.methods import PRESETS
from gradnas.profiling import DispatchCounter, HostSyncError, HostSyncGuard, optimizer_host_tensors
from gradnas.search.bilevel import ARCH_UPDATES
from gradnas.search.loop import build_search_model, weight_step

resolve_config({})  # registers the presets
TINY = {"darts": {"channels": 8, "layers": 3}, "nb201": {"channels": 8, "layers": 1}}


def steps(method: str, space: str, order: int):
    config = resolve_config({"method": method, "space": space, **TINY[space], "partial_k": 2 if method != "darts"
                             and "pc" in method or method == "dnas" else None, "progress": False})
    torch.manual_seed(0)
    model = build_search_model(config, 10).to(memory_format=torch.channels_last).train()
    weights = list(model.weight_parameters())
    sgd = torch.optim.SGD(weights, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    update = ARCH_UPDATES[config.arch_update](model, criterion=nn.CrossEntropyLoss(), order=order,
                                              lr=config.arch_lr, betas=config.arch_betas,
                                              weight_decay=config.arch_weight_decay)
    size = 64 if config.imagenet_stem else 16  # the 224-px search stems down-sample 8-fold before the cells
    batch = lambda: (torch.randn(4, 3, size, size).contiguous(memory_format=torch.channels_last),
                     torch.randint(0, 10, (4,)))
    train, val = batch(), batch()

    def step():
        if update.active(10**6):
            update.arch_step(train, val, sgd)
        weight_step(model, nn.CrossEntropyLoss(), sgd, weights, train, config.grad_clip)

    step()  # optimiser state exists from here on
    return step, [sgd] + ([update.optimizer] if hasattr(update, "optimizer") else [])


# Every preset in the DARTS space at first order; the NB201 space and second order where a method's step
# differs there (the unrolled step's extra forwards, random channel subsets, DNAS's skip dropout).
CASES = ([(m, "darts", 1) for m in PRESETS.names()]
         + [("darts", "nb201", 1), ("is-darts", "nb201", 1), ("darts", "darts", 2), ("pc-darts", "darts", 2),
            ("dnas", "darts", 2), ("g-darts-a", "darts", 2)])


@pytest.mark.parametrize("method,space,order", CASES)
def test_step_never_synchronises_with_the_host(method, space, order):
    step, optimizers = steps(method, space, order)
    with HostSyncGuard(optimizer_host_tensors(*optimizers)):
        step()


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


def test_counter_excludes_views_and_allocations():
    x = torch.randn(4, 4)
    with DispatchCounter() as counter:
        y = x.view(16)[:3].unsqueeze(0)  # views only
        torch.empty(5)
        (y + 1).relu()
        x.t().reshape(16)  # a copy: the transpose is not contiguous
    assert dict(counter.by_op) == {"add": 1, "relu": 1, "clone": 1}
