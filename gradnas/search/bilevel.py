"""Architecture updates: DARTS's bilevel step, first or second order (docs/methods.md §2), or none at all.

The search loop calls ``update.arch_step(...)`` before each weight step; which objective the
architecture follows, whether it is frozen for warm-up epochs and how the gradient is approximated
all live here.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from ..capture import capturing
from ..options import Option, declare
from ..registry import Registry
from .model import SearchModel

Batch = tuple[torch.Tensor, torch.Tensor]
ARCH_UPDATES: Registry = Registry("architecture update")


def _grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [g if g is not None else torch.zeros_like(p)
            for g, p in zip(torch.autograd.grad(loss, params, allow_unused=True), params)]


def rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The generator states a forward may draw from: the CPU's and, on a CUDA device, that device's."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


@contextmanager
def replayed(state: tuple[torch.Tensor, torch.Tensor | None] | None, device: torch.device) -> Iterator[None]:
    """Run the block from the generator ``state`` (None: as is), then continue where the generators were."""
    if state is None:
        yield
        return
    current = rng_state(device)
    set_rng_state(state, device)
    try:
        yield
    finally:
        set_rng_state(current, device)


def weight_step(model: nn.Module, criterion, optimizer: torch.optim.Optimizer, weights: list[torch.Tensor],
                batch: tuple[torch.Tensor, torch.Tensor], grad_clip: float,
                reduce: Callable[[list[torch.Tensor]], Any] | None = None,
                scaler: torch.amp.GradScaler | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on the training loss with gradient-norm clipping; returns the detached loss and logits.

    ``reduce`` averages the gradients over data-parallel ranks; ``scaler`` scales a float16 loss.
    """
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)
    loss = criterion(logits, y)
    (loss if scaler is None else scaler.scale(loss)).backward(inputs=weights)  # no architecture gradients
    if reduce is not None:
        reduce([p.grad for p in weights if p.grad is not None])
    if scaler is not None:
        scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(weights, grad_clip)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    return loss.detach(), logits.detach()


@ARCH_UPDATES.register("none")
class NoArchUpdate:
    """Single-level training: the architecture is not learned by gradient (IS-DARTS).

    The update owns both steps of an iteration: ``weight_step`` (every method) and ``arch_step`` (bilevel
    methods), so a method that perturbs the weights or α around the weight step (SDARTS) is an update of its
    own, and the loop stays as it is.
    """

    uses_validation = False
    #: Its steps read every value that changes between iterations from tensors, so a CUDA graph may capture
    #: them (gradnas.capture); an update that keeps per-step values in Python sets this False.
    graph_safe = True

    def __init__(self, model: SearchModel, criterion: Callable | None = None, **_):
        self.model, self.criterion = model, criterion
        # Set by a data-parallel run to average every gradient over the ranks (in place).
        self.reduce: Callable[[list[torch.Tensor]], list[torch.Tensor]] = lambda grads: grads
        self.scaler: torch.amp.GradScaler | None = None  # float16 autocast only

    def active(self, epoch: int) -> bool:
        return False

    def weight_step(self, batch: Batch, optimizer: torch.optim.Optimizer, weights: list[torch.Tensor],
                    grad_clip: float, scaler: torch.amp.GradScaler | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the weights on the training loss (:func:`weight_step`); returns the loss and logits."""
        return weight_step(self.model, self.criterion, optimizer, weights, batch, grad_clip, self.reduce, scaler)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@ARCH_UPDATES.register("bilevel")
class Bilevel(NoArchUpdate):
    """One Adam step on α (and any other architecture parameter) per iteration, on a validation batch.

    ``order=2`` differentiates through one virtual SGD step of the weights and approximates the
    Hessian-vector product by finite differences, as DARTS does. A stochastic supernet (DNAS's skip dropout,
    random partial channels) draws new masks on every forward; the three forwards of L_train in one unrolled
    step replay the same generator state, so they differentiate one function (docs/methods.md §2).
    """

    uses_validation = True

    def __init__(self, model: SearchModel, criterion: Callable, order: int = 1, lr: float = 3e-4,
                 betas: tuple[float, float] = (0.5, 0.999), weight_decay: float = 1e-3, warmup_epochs: int = 0,
                 fd_radius: float = 1e-2, grad_clip: float = 0.0, capturable: bool = False):
        super().__init__(model, criterion)
        self.grad_clip = grad_clip  # > 0: clip the architecture gradient's norm (PC-DARTS's ImageNet search)
        self.fd_radius = fd_radius  # ε = fd_radius / ‖v‖ in the finite difference (0.01 in DARTS)
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order}")
        self.order, self.warmup_epochs = order, warmup_epochs
        groups = model.arch.param_groups()  # G-DARTS-A's attention: no weight decay
        self.arch_params = [p for g in groups for p in g["params"]]
        # capturable: Adam's step counters on the device, read by a captured graph (gradnas.capture)
        self.optimizer = torch.optim.Adam(groups, lr=lr, betas=tuple(betas), weight_decay=weight_decay,
                                          capturable=capturable)

    def active(self, epoch: int) -> bool:
        """PC-DARTS freezes the architecture for its warm-up epochs."""
        return epoch >= self.warmup_epochs

    def objective(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Validation loss plus any regulariser of the parameterisation; also returns the logits."""
        x, y = batch
        logits = self.model(x)
        loss = self.criterion(logits, y)
        extra = self.model.arch.regularizer()
        return (loss if extra is None else loss + extra), logits

    def grads(self, loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.reduce(_grads(loss, params))

    def arch_step(self, train: Batch, val: Batch,
                  weight_optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        if self.order == 1:
            loss, logits = self.objective(val)
            scaled = loss if self.scaler is None else self.scaler.scale(loss)
            grads = self.grads(scaled, self.arch_params)  # no weight gradients are computed for this step
        else:
            loss, logits, grads = self.unrolled_gradient(train, val, weight_optimizer)
        for p, g in zip(self.arch_params, grads):
            p.grad = g
        if self.grad_clip > 0:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.arch_params, self.grad_clip)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return loss.detach(), logits.detach()

    # -- second order ---------------------------------------------------------------------------
    def unrolled_gradient(self, train: Batch, val: Batch, weight_optimizer: torch.optim.Optimizer):
        """g_α = ∇_α L_val(w', α) − ξ · H·v, with w' one virtual SGD step from w (docs/methods.md §2)."""
        weights = [p for p in self.model.weight_parameters() if p.requires_grad]
        group = weight_optimizer.param_groups[0]
        xi, momentum, wd = group["lr"], group.get("momentum", 0.0), group.get("weight_decay", 0.0)
        buffers = [b.clone() for b in self.model.buffers()]
        originals = [p.detach().clone() for p in weights]
        device = weights[0].device
        # The train forward's random draws, replayed by the HVP. A generator's state cannot be read while a CUDA
        # graph captures, and a captured supernet draws nothing (gradnas.search.loop.capture_unsafe).
        draws = None if capturing() else rng_state(device)

        dw = self.grads(self.criterion(self.model(train[0]), train[1]), weights)
        with torch.no_grad():
            for p, g in zip(weights, dw):
                v = weight_optimizer.state.get(p, {}).get("momentum_buffer")
                step = g + wd * p if v is None else momentum * v + g + wd * p
                p.sub_(xi * step)

        loss, logits = self.objective(val)
        grads = self.grads(loss, self.arch_params + weights)
        g_alpha, g_w = grads[:len(self.arch_params)], grads[len(self.arch_params):]

        with torch.no_grad():
            torch._foreach_copy_(weights, originals)
        hvp = self.hessian_vector_product(g_w, train, weights, self.fd_radius, draws)
        with torch.no_grad():
            torch._foreach_copy_(list(self.model.buffers()), buffers)  # extra forwards must not move BN stats
        return loss, logits, [ga - xi * h for ga, h in zip(g_alpha, hvp)]

    def hessian_vector_product(self, vector: list[torch.Tensor], train: Batch, weights: list[torch.Tensor],
                               r: float, draws: tuple[torch.Tensor, torch.Tensor | None] | None = None
                               ) -> list[torch.Tensor]:
        """∇²_{α,w} L_train · vector by central differences with ε = r / ‖vector‖; w is left unchanged.
        Both forwards start from the generator state ``draws`` when given."""
        eps = r / torch.linalg.vector_norm(torch.stack(torch._foreach_norm(vector)))
        step = torch._foreach_mul(vector, eps)  # tensors throughout: no host synchronisation
        grads = []
        for sign in (1, -1):
            with torch.no_grad():
                torch._foreach_add_(weights, step, alpha=1 if sign > 0 else -2)  # w + εv, then w − εv
            with replayed(draws, weights[0].device):
                logits = self.model(train[0])
            grads.append(self.grads(self.criterion(logits, train[1]), self.arch_params))
        with torch.no_grad():
            torch._foreach_add_(weights, step)
        return [(gp - gn) / (2 * eps) for gp, gn in zip(*grads)]

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        saved, groups = state["optimizer"], self.optimizer.param_groups
        if len(saved["param_groups"]) == 1 < len(groups):  # saved with one group, in arch_parameters() order
            index = {p: i for i, p in enumerate(self.model.arch_parameters())}
            saved = {**saved, "param_groups": [{**saved["param_groups"][0], "weight_decay": g["weight_decay"],
                                                "params": [index[p] for p in g["params"]]} for g in groups]}
        # This run's capturable, not the saved run's: Adam then puts the step counters where this run reads them
        # (a captured run resumed eagerly, or the reverse, with --cuda-graph).
        capturable = groups[0]["capturable"]
        saved = {**saved, "param_groups": [{**g, "capturable": capturable} for g in saved["param_groups"]]}
        self.optimizer.load_state_dict(saved)


declare(
    "update",
    Option("arch_update", str, 'bilevel', 'architecture update: {choices}', choices=ARCH_UPDATES.names),
    Option("order", int, 1, 'DARTS approximation order: 1 or 2'),
    Option("arch_lr", float, 0.0003, 'architecture learning rate (Adam)'),
    Option("arch_betas", list[float], [0.5, 0.999], 'Adam betas of the architecture optimiser'),
    Option("arch_weight_decay", float, 0.001, 'weight decay of the architecture parameters'),
    Option("arch_warmup_epochs", int, 0, 'epochs with the architecture frozen at the start (PC-DARTS 15)'),
    Option("arch_grad_clip", float, 0.0,
           'gradient-norm clip of the architecture parameters (PC-DARTS ImageNet 5; 0: off)'),
)
