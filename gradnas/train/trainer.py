"""Training a found architecture from scratch: one readable loop with the run machinery of the search.

Per iteration: forward (under autocast with ``--amp``), the main loss plus the weighted auxiliary loss,
backward, gradient-norm clip, SGD step. Per epoch: set the learning rate and the drop-path probability,
train, evaluate on the test split every ``eval_every`` epochs, log a JSON line and TensorBoard scalars,
write an atomic checkpoint (with RNG and loader states, so a resumed run is bit-identical on CPU).
At the end: ``model.pt`` (the deployable network, :func:`gradnas.load_model`) and ``eval.json``.

Under torchrun the network is wrapped in DistributedDataParallel (its bucketed all-reduce overlaps the
backward pass; unlike the bilevel search, training needs gradients of all parameters at once), each rank
trains on its slice of every global batch of ``batch_size × world_size`` images, the logged train loss and
accuracy are summed over ranks, and rank 0 alone writes logs, checkpoints and the model.
"""
from __future__ import annotations

import contextlib
import json
import time
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..capture import CapturedStep, capture_mode
from ..data import (Data, DeviceLoader, ImageDataset, StreamData, StreamLoader, as_image_dataset, load_dataset,
                    training_augment)
from ..distributed import convert_sync_batchnorm, init_from_env
from ..errors import GradnasError, first_line
from ..genotypes import Genotype, genotype_from_dict, genotype_to_dict, parse_genotype, save_genotype
from ..models import count_parameters
from ..optim import CapturableSGD, plain_rates, set_lr
from ..models.saved import FILENAME, build_network, model_record
from ..runlog import RunLog, environment, log
from ..config import resumed_config
from ..rundir import RunDir, RunOwner, write_atomic
from ..runtime import FiniteGuard, autocast_dtype, resolve_device, stopped, warn_if_at_chance
from ..search.checkpoint import load_checkpoint, nonfinite, rng_state, save_atomic, seed_everything, set_rng_state
from .evaluate import count_macs, eval_loader, evaluate
from .recipes import RESUMABLE, TrainConfig, check_train_config, drop_path_prob, learning_rate

CHECKPOINT = "train_checkpoint.pt"  # not the search's checkpoint.pt: `gradnas bench` tells the runs apart by it
REQUIRED = ("epoch", "config", "genotype", "model", "optimizer", "scaler", "train_loader", "rng", "history")


@dataclass
class TrainResult:
    model: nn.Module
    genotype: Genotype
    history: list[dict[str, Any]]
    metrics: dict[str, Any]                      # final test metrics, parameters, multiply-accumulates
    paths: dict[str, Path] = field(default_factory=dict)


def network_kwargs(c: TrainConfig, data: ImageDataset) -> dict[str, Any]:
    """Constructor arguments of the configured network besides the genotype."""
    if c.network == "nb201":
        return {"C": c.channels, "N": c.layers, "num_classes": data.num_classes, "in_channels": data.in_channels}
    return {"C": c.channels, "layers": c.layers, "num_classes": data.num_classes, "in_channels": data.in_channels,
            "auxiliary": c.auxiliary, "drop_path_prob": 0.0}


def check_image_size(model: nn.Module, in_channels: int, size: int) -> None:
    """Fail with one line, before training, when the images are too small for the network or its auxiliary
    head (an average pool of 5×5 without padding). One eval-mode forward of one image: no state changes."""
    head_input: list[int] = []
    hook = None
    if getattr(model, "auxiliary_head", None) is not None:
        hook = model.cells[model.aux_index].register_forward_hook(lambda m, i, out: head_input.append(out.shape[-1]))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_channels, size, size))
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[0]
        raise GradnasError(f"{size}×{size} images do not fit this network ({reason}); use larger images "
                           "(--image-size) or fewer cells") from None
    finally:
        model.train(was_training)
        if hook is not None:
            hook.remove()
    if head_input and head_input[0] < 5:
        raise GradnasError(f"the auxiliary head needs at least 5×5 features after cell {model.aux_index}, but "
                           f"{size}×{size} images give {head_input[0]}×{head_input[0]}: pass --no-auxiliary "
                           "or larger images (--image-size)")


class Trainer(RunOwner):
    """Holds the state of one training run; :meth:`run` executes it (resuming when asked)."""

    def __init__(self, config: TrainConfig, dataset: Data | None = None, resume: bool = False,
                 overwrite: bool = False, changes: dict[str, Any] | None = None):
        """``dataset``: see :func:`train_data`. ``resume``: continue the run in ``config.out`` under its saved
        configuration, with ``changes`` (only :data:`~gradnas.train.recipes.RESUMABLE` options may differ).
        ``overwrite``: replace the run it holds."""
        self.out = Path(config.out)
        self.checkpoint_path = self.out / CHECKPOINT
        if (self.out / "checkpoint.pt").is_file():  # its log, config and diagrams would be overwritten
            raise GradnasError(f"{self.out} holds a search run; train into another directory (--out)")
        state = load_checkpoint(self.checkpoint_path, REQUIRED) if resume else None
        if state is not None:  # the run's own configuration; only where it writes and the safe options may change
            where = f"checkpoint {self.checkpoint_path}"
            self.genotype = genotype_from_dict(state["genotype"], where)
            config = resumed_config(TrainConfig, state["config"], {"out": str(self.out), "progress": config.progress,
                                    **(changes or {})}, RESUMABLE, where)
            check_train_config(config, self.genotype)
            if config.epochs < state["epoch"]:
                raise GradnasError(f"epochs ({config.epochs}) is fewer than the {state['epoch']} the run has done")
        elif config.genotype:
            self.genotype = parse_genotype(config.genotype)
        else:
            raise GradnasError("no genotype to train (set TrainConfig.genotype, or resume a run)")
        self.config = c = config
        seed_everything(c.seed, c.deterministic)
        self.device, self.dist = init_from_env(resolve_device(c.device))
        self.claim_and_setup(RunDir(self.out, resume, overwrite) if self.dist.is_main else None,
                             lambda: self._setup(dataset, state))

    def _setup(self, dataset: Data | None, state: dict[str, Any] | None) -> None:
        c = self.config
        self.data = d = (train_data(dataset) if dataset is not None
                         else load_dataset(c.data, c.data_root, image_size=c.image_size))

        self.network_kwargs = network_kwargs(c, d)
        self.model = build_network(c.network, self.genotype, **self.network_kwargs)
        check_image_size(self.model, d.in_channels, d.image_size)
        if c.sync_bn and self.dist.enabled:
            convert_sync_batchnorm(self.model, self.device.type)
        # Channels-last runs the depthwise and dilated convs of DARTS cells several times faster on CPU.
        self.memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=self.memory_format)
        self.amp_dtype = autocast_dtype(c.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)
        self.params = list(self.model.parameters())
        # The network as stepped: DDP averages the gradients over ranks during the backward pass.
        self.train_model = (nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device.index]
                                                                if self.device.type == "cuda" else None)
                            if self.dist.enabled else self.model)
        unsafe = ("data-parallel runs (DDP's all-reduce is not captured)" if self.dist.enabled else
                  "float16 loss scaling (the scaler reads its overflow flag back)" if self.scaler.is_enabled() else None)
        self.capture = capture_mode(c.cuda_graph, self.device, unsafe)
        # One graph for the whole run: the rate and the drop-path probability live in device tensors.
        sgd = partial(CapturableSGD, device=self.device) if self.capture else torch.optim.SGD
        self.optimizer = sgd(self.params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                             weight_decay=c.weight_decay)
        self.captured = CapturedStep(self.step) if self.capture else None
        if hasattr(self.model, "drop_path_prob") and c.drop_path:  # DARTS nets; NB201's has none
            self.model.drop_path_prob = torch.zeros((), device=self.device)
        stream = isinstance(d, StreamData)
        n_train = len(d.dataset) if stream else len(d.y_train)
        if n_train < c.batch_size * self.dist.world_size:
            raise GradnasError(f"batch size {c.batch_size} × {self.dist.world_size} ranks exceeds the "
                               f"{n_train} training images of {d.name}; pass a smaller --batch-size")
        shard = (self.dist.rank, self.dist.world_size)
        if stream:
            self.train_loader = StreamLoader(d, None, c.batch_size, self.device, c.seed, shard)
            self.test_loader = StreamLoader(d.test, None, c.batch_size, self.device, shuffle=False)
            self.test_images = len(d.test.dataset)
        else:
            augment = training_augment(d, c.cutout)
            self.train_loader = DeviceLoader(d.x_train, d.y_train, c.batch_size, d.mean, d.std, augment,
                                             device=self.device, seed=c.seed, shard=shard)
            self.test_loader = eval_loader(d.x_test, d.y_test, d.mean, d.std, c.batch_size, self.device)
            self.test_images = len(d.y_test)
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        if state is not None:
            try:
                self._restore(state)
            except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
                raise GradnasError(f"checkpoint {self.checkpoint_path} does not fit the run it describes: "
                                   f"{first_line(err)}") from None
        self.log = RunLog(self.out, self.start_epoch) if self.run_dir is not None else None  # rank 0 writes

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self, next_epoch: int) -> dict[str, Any]:
        return {"epoch": next_epoch, "config": self.config.to_dict(), "genotype": genotype_to_dict(self.genotype),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "train_loader": self.train_loader.state_dict(),
                "rng": rng_state(), "history": self.history}

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if not self.capture:  # a checkpoint written while capturing holds its rates as tensors
            plain_rates(self.optimizer)
        self.scaler.load_state_dict(state["scaler"])
        self.train_loader.load_state_dict(state["train_loader"])
        set_rng_state(state["rng"])
        self.start_epoch, self.history = state["epoch"], state["history"]

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        try:
            return self._run()
        finally:
            self.release()

    def _run(self) -> TrainResult:
        c, main = self.config, self.dist.is_main
        paths = {"genotype": self.out / "genotype.json", "log": self.out / "log.jsonl",
                 "checkpoint": self.checkpoint_path, "config": self.out / "config.yaml"}
        if main:
            env = environment(self.device, c.seed, c.deterministic) | {"world_size": self.dist.world_size}
            write_atomic(self.out / "env.json", json.dumps(env, indent=2))
            save_genotype(self.genotype, paths["genotype"])
        steps = min(len(self.train_loader), c.steps_per_epoch or len(self.train_loader))
        bar = tqdm(total=(c.epochs - self.start_epoch) * steps, disable=not (c.progress and main), unit="step",
                   dynamic_ncols=True, leave=False)
        try:
            for epoch in range(self.start_epoch, c.epochs):
                started = time.perf_counter()
                lr = learning_rate(c, epoch)
                for group in self.optimizer.param_groups:
                    set_lr(group, lr)
                record: dict[str, Any] = {"epoch": epoch, "lr": lr}
                if hasattr(self.model, "drop_path_prob"):  # DARTS nets; NB201's has none
                    record["drop_path"] = drop_path_prob(c, epoch)
                    if torch.is_tensor(self.model.drop_path_prob):
                        self.model.drop_path_prob.fill_(record["drop_path"])
                record.update(self.train_epoch(epoch, steps, bar))
                if (epoch + 1) % c.eval_every == 0 or epoch + 1 == c.epochs:
                    record.update(self.evaluate())
                record["seconds"] = round(time.perf_counter() - started, 3)
                self.history.append(record)
                state = self.state_dict(epoch + 1)
                bad = nonfinite(state)
                if bad:  # a kept checkpoint must be one to resume from
                    raise GradnasError(stopped(f"non-finite {bad[0]} after epoch {epoch + 1}", self.checkpoint_path,
                                               "train", "--lr"))
                if not main:
                    continue
                warn_if_at_chance(self.history, self.data.num_classes, c.epochs)
                self.log.write(record)
                self.save_checkpoint(state, self.checkpoint_path)
                log.info("epoch %d/%d %s", epoch + 1, c.epochs,
                         " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
        finally:
            bar.close()
            if self.log is not None:
                self.log.close()
        metrics = self.final_metrics()
        paths["model"], paths["eval"] = self.out / FILENAME, self.out / "eval.json"
        if not main:
            return TrainResult(self.model, self.genotype, self.history, metrics, paths)
        save_atomic(model_record(c.network, self.network_kwargs, self.genotype, self.model, self.model_meta()),
                    paths["model"])
        write_atomic(paths["eval"], json.dumps(metrics, indent=2) + "\n")
        return TrainResult(self.model, self.genotype, self.history, metrics, paths)

    def train_epoch(self, epoch: int, steps: int, bar: tqdm) -> dict[str, float]:
        c = self.config
        self.train_model.train()
        totals = torch.zeros(2, device=self.device)  # summed main-head loss, correct predictions
        n = 0
        guard = FiniteGuard(self.device)
        step_fn = self.captured or self.step
        for step, (x, y) in enumerate(self.train_loader):
            if step >= steps:
                break
            loss, total, logits = step_fn(x.contiguous(memory_format=self.memory_format), y)
            totals += torch.stack([loss * len(y), (logits.argmax(1) == y).sum()])
            n += len(y)
            guard.update(step, total)
            if (step + 1) % c.log_every == 0 or step + 1 == steps:
                guard.check(epoch, self.checkpoint_path, "train", "--lr")
                bar.set_description(f"epoch {epoch + 1}/{c.epochs}")
                loss_sum, correct = totals.tolist()
                bar.set_postfix(loss=f"{loss_sum / n:.3f}", acc=f"{100 * correct / n:.1f}")
            bar.update(1)
        if self.dist.enabled:  # the epoch's figures over every rank's images
            totals = torch.cat([totals, totals.new_tensor([n])])
            torch.distributed.all_reduce(totals)
            loss_sum, correct, n = totals.tolist()
        else:
            loss_sum, correct = totals.tolist()
        return {"train_loss": loss_sum / n, "train_acc": 100 * correct / n}

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One SGD step; returns the detached main-head loss, the total loss and the logits."""
        c = self.config
        with self.autocast():
            logits, aux = self.train_model(x)
            loss = self.criterion(logits, y)
            total = loss if aux is None else loss + c.auxiliary_weight * self.criterion(aux, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if c.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.params, c.grad_clip)
        self.scaler.step(self.optimizer)  # a plain optimizer step unless float16 needs loss scaling
        self.scaler.update()
        return loss.detach(), total.detach(), logits.detach()

    def evaluate(self) -> dict[str, float]:
        return evaluate(self.model, self.test_loader, self.memory_format, self.amp_dtype)

    def final_metrics(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        scores = ({k: v for k, v in last.items() if k.startswith("test_")}
                  if last.get("epoch") == self.config.epochs - 1 and "test_acc" in last else self.evaluate())
        shape = (1, self.data.in_channels, self.data.image_size, self.data.image_size)
        return {"data": self.data.name, "images": self.test_images, **scores,
                "params": count_parameters(self.model), "macs": count_macs(self.model, shape, self.device)}

    def model_meta(self) -> dict[str, Any]:
        d, c = self.data, self.config
        path = Path(c.data).expanduser()
        data = str(path.resolve()) if path.exists() else c.data  # a data path stays valid from any directory
        return {"data": data, "data_root": c.data_root, "dataset": d.name, "num_classes": d.num_classes,
                "in_channels": d.in_channels, "image_size": d.image_size, "mean": list(d.mean), "std": list(d.std),
                "recipe": c.recipe, "epochs": c.epochs}


def train_data(data: Data) -> ImageDataset | StreamData:
    """What training reads: an ImageDataset as it is; tensors ``(x, y)`` or a map-style Dataset held in memory
    (:func:`gradnas.data.as_image_dataset`); streamed data (:func:`gradnas.data.stream_data`) with a test split."""
    if isinstance(data, DataLoader):
        raise GradnasError("training streams a DataLoader with its test split: pass stream_data(loader, test=...)")
    if isinstance(data, StreamData):
        if data.test is None:
            raise GradnasError("streamed training data needs a test split: stream_data(loader, test=test_loader)")
        return data
    return as_image_dataset(data)


def train(config: TrainConfig, dataset: Data | None = None, resume: bool = False, overwrite: bool = False,
          changes: dict[str, Any] | None = None) -> TrainResult:
    """Train (or resume training) the configured genotype and return the model, history and final metrics; see
    :class:`Trainer` for ``resume``, ``overwrite`` and ``changes``, and :func:`train_data` for ``dataset``."""
    return Trainer(config, dataset, resume, overwrite, changes).run()


__all__ = ["CHECKPOINT", "TrainResult", "Trainer", "check_image_size", "network_kwargs", "train", "train_data"]
