"""The search loop: one readable loop for every method.

Per iteration: an architecture step (if the method has one and it is active), then a weight step.
Per epoch: derive and log the genotype, run the method's epoch hooks, write an atomic checkpoint.
Everything a method changes lives in the parts it is built from (edge, parameterisation, update, hooks).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
import yaml
from tqdm.auto import tqdm

from ..arch import ARCHITECTURES, EdgeNormalization, GroupAttention
from ..benchmarks.nb201 import NB201Table, search_report
from ..config import SearchConfig
from ..data import DeviceLoader, ImageDataset, load_dataset, search_split, training_augment
from ..distributed import average_, convert_sync_batchnorm, init_from_env
from ..edges import EDGES
from ..errors import GradnasError
from ..genotypes import Genotype, genotype_text, save_genotype
from ..profiling import saved_activation_bytes, state_bytes
from ..runlog import RunLog, environment, log
from ..runtime import FiniteGuard, autocast_dtype, resolve_device, warn_if_at_chance
from ..selection import derive_genotype
from ..spaces import DEFAULT_OPS, SPACES
from ..spaces.blocks import drop_running_stats
from ..viz import draw_genotype
from .bilevel import ARCH_UPDATES
from .checkpoint import load_checkpoint, rng_state, save_atomic, seed_everything, set_rng_state
from .hooks import build_hooks
from .model import SearchModel

CHECKPOINT = "checkpoint.pt"


@dataclass
class SearchResult:
    genotype: Genotype
    history: list[dict[str, Any]]
    paths: dict[str, Path] = field(default_factory=dict)
    model: SearchModel | None = None


def edge_choice(config: SearchConfig) -> tuple[str, dict[str, Any]]:
    """The edge kind and the options its factory reads from the configuration."""
    options_from_config = getattr(EDGES[config.edge], "options_from_config", lambda cfg: {})
    return config.edge, options_from_config(config)


def build_search_model(config: SearchConfig, num_classes: int, in_channels: int = 3) -> SearchModel:
    """Supernet of the configured space with the configured edge, bound to its parameterisation."""
    op_names = tuple(config.ops) if config.ops else DEFAULT_OPS[config.space]
    edge, edge_options = edge_choice(config)
    net = SPACES[config.space](C=config.channels, num_classes=num_classes, layers=config.layers,
                               in_channels=in_channels, op_names=op_names, edge=edge, edge_options=edge_options)
    arch_cls = ARCHITECTURES[config.arch]
    if arch_cls.per_cell and config.space != "darts":
        raise GradnasError(f"architecture {config.arch!r} gives one genotype per cell; only the darts space has those")
    arch = arch_cls(net.cell_types, net.op_names, net.in_degrees, **arch_cls.options_from_config(config))
    if not config.bn_running_stats:
        drop_running_stats(net)
    if config.edge_norm:
        arch.add(EdgeNormalization(net.cell_types, net.in_degrees))
    if config.group_attention:
        arch.add(GroupAttention(len(net.cell_types), arch.num_edges, config.groups, config.attention_spread,
                                config.attention_sigmoid))
    return SearchModel(net, arch)


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


def place_model(model: SearchModel, config: SearchConfig, device: torch.device) -> torch.memory_format:
    """Move the search model to ``device`` in the configured layout, precision and compilation; returns the
    memory format its inputs should have."""
    # Channels-last runs the supernet's many depthwise and dilated convs several times faster.
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    model.amp_dtype = autocast_dtype(config.amp, device)
    if config.compile:
        model.net.compile()  # in place: checkpoints keep the plain parameter names
    return memory_format


class Searcher:
    """Holds the state of one search run; :meth:`run` executes it (resuming when asked)."""

    def __init__(self, config: SearchConfig, dataset: ImageDataset | None = None, resume: bool = False):
        self.out = Path(config.out)
        self.checkpoint_path = self.out / CHECKPOINT
        state = load_checkpoint(self.checkpoint_path) if resume else None
        if state is not None:  # the run's own configuration; only where it writes and its display may change
            config = SearchConfig(**{**state["config"], "out": str(self.out), "progress": config.progress})
        self.config = config
        self.out.mkdir(parents=True, exist_ok=True)
        seed_everything(config.seed, config.deterministic)
        self.device, self.dist = init_from_env(resolve_device(config.device))
        self.data = dataset if dataset is not None else load_dataset(config.data, config.data_root)

        self.model = build_search_model(config, self.data.num_classes, self.data.in_channels)
        if config.sync_bn and self.dist.enabled:
            convert_sync_batchnorm(self.model.net, self.device.type)
        self.memory_format = place_model(self.model, config, self.device)
        self.criterion = nn.CrossEntropyLoss()
        self.weights = [p for p in self.model.weight_parameters()]
        self.optimizer = torch.optim.SGD(self.weights, lr=config.lr, momentum=config.momentum,
                                         nesterov=config.nesterov, weight_decay=config.weight_decay)
        self.update = ARCH_UPDATES[config.arch_update](
            self.model, criterion=self.criterion, order=config.order, lr=config.arch_lr,
            betas=config.arch_betas, weight_decay=config.arch_weight_decay, warmup_epochs=config.arch_warmup_epochs)
        self.reduce = partial(average_, context=self.dist) if self.dist.enabled else None
        self.update.reduce = self.reduce or self.update.reduce
        self.scaler = None
        if self.model.amp_dtype == torch.float16:
            if config.order == 2:
                raise GradnasError("--amp on a GPU without bfloat16 supports first-order search only")
            self.scaler, self.update.scaler = torch.amp.GradScaler(), torch.amp.GradScaler()
        self._build_loaders()
        self.steps = min(len(self.train_loader), config.steps_per_epoch or len(self.train_loader))
        # With lr_per_step (IS-DARTS) the cosine is annealed every iteration, so its period counts steps.
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, config.epochs * (self.steps if config.lr_per_step else 1), config.lr_min)
        self.hooks = build_hooks(config, self)
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        if state is not None:
            self._restore(state)
        self.log = RunLog(self.out, self.start_epoch) if self.dist.is_main else None  # rank 0 writes

    # -- setup ------------------------------------------------------------------------------------
    def _build_loaders(self) -> None:
        c, d = self.config, self.data
        augment = training_augment(d, c.cutout)
        n = len(d.y_train)
        if self.update.uses_validation:  # train_portion split, or two subsets (PC-DARTS ImageNet, METHODS.md §3)
            train_idx, val_idx = search_split(n, c.train_subset or c.train_portion, c.seed, c.val_subset)
        else:  # single-level methods train on all data (or on the train subset)
            train_idx = torch.arange(n) if c.train_subset is None else search_split(n, c.train_subset, c.seed)[0]
            val_idx = None
        shard = (self.dist.rank, self.dist.world_size)  # each rank takes its part of every global batch
        loader = lambda idx, seed: DeviceLoader(d.x_train[idx], d.y_train[idx], c.batch_size, d.mean, d.std,
                                                augment, device=self.device, seed=seed, shard=shard)
        if len(train_idx) < c.batch_size * self.dist.world_size:
            raise GradnasError(f"batch size {c.batch_size} × {self.dist.world_size} ranks exceeds the {len(train_idx)} training images "
                               f"of {d.name}; pass a smaller --batch-size")
        self.train_loader = loader(train_idx, c.seed)
        self.val_loader = loader(val_idx, c.seed + 1) if val_idx is not None else None

    def state_dict(self, next_epoch: int) -> dict[str, Any]:
        return {
            "epoch": next_epoch, "config": self.config.to_dict(), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "update": self.update.state_dict(), "hooks": [h.state_dict() for h in self.hooks],
            "train_loader": self.train_loader.state_dict(),
            "val_loader": self.val_loader.state_dict() if self.val_loader is not None else None,
            "rng": rng_state(), "history": self.history,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        for hook, hook_state in zip(self.hooks, state["hooks"]):
            hook.load_state_dict(hook_state)  # first: hooks may reshape the model (removed ops)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.update.load_state_dict(state["update"])
        self.train_loader.load_state_dict(state["train_loader"])
        if self.val_loader is not None:
            self.val_loader.load_state_dict(state["val_loader"])
        set_rng_state(state["rng"])
        self.start_epoch, self.history = state["epoch"], state["history"]

    # -- the loop ---------------------------------------------------------------------------------
    def genotype(self) -> Genotype:
        for hook in self.hooks:
            genotype = hook.genotype(self)
            if genotype is not None:
                return genotype
        return derive_genotype(self.model.arch, self.config.space, self.config.selection)

    def run(self) -> SearchResult:
        c, main = self.config, self.dist.is_main
        if main:
            (self.out / "config.yaml").write_text(yaml.safe_dump(c.to_dict(), sort_keys=False))
            env = environment(self.device, c.seed, c.deterministic) | {"world_size": self.dist.world_size}
            (self.out / "env.json").write_text(json.dumps(env, indent=2))
        steps = self.steps
        bar = tqdm(total=(c.epochs - self.start_epoch) * steps, disable=not (c.progress and main), unit="step",
                   dynamic_ncols=True, leave=False)
        try:
            for epoch in range(self.start_epoch, c.epochs):
                started = time.perf_counter()
                for hook in self.hooks:
                    hook.on_epoch_start(self, epoch)
                stats = self.train_epoch(epoch, steps, bar)
                record = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"], **stats}
                if not c.lr_per_step:
                    self.scheduler.step()
                for hook in self.hooks:
                    record.update(hook.on_epoch_end(self, epoch) or {})
                genotype = self.genotype()
                if genotype.cells is not None:  # per-cell search: how many different cells the network has now
                    record["distinct_cells"] = len(set(genotype.cells))
                record.update(genotype=genotype_text(genotype), arch=self.model.arch.summary(),
                              seconds=round(time.perf_counter() - started, 3))
                self.history.append(record)
                if main:
                    warn_if_at_chance(self.history, self.data.num_classes, c.epochs)
                    self.log.write(record)
                    save_atomic(self.state_dict(epoch + 1), self.checkpoint_path)
                    log.info("epoch %d/%d %s", epoch + 1, c.epochs, _brief(record))
        finally:
            bar.close()
            if main:
                self.log.close()
        genotype = self.genotype()
        paths = {"genotype": self.out / "genotype.json", "log": self.out / "log.jsonl",
                 "checkpoint": self.checkpoint_path, "config": self.out / "config.yaml"}
        if not main:
            return SearchResult(genotype, self.history, paths, self.model)
        save_genotype(genotype, paths["genotype"])
        paths["diagrams"] = draw_genotype(genotype, self.out)
        if c.space == "nb201":
            paths.update(self._nb201_report(genotype))
        return SearchResult(genotype, self.history, paths, self.model)

    def _nb201_report(self, genotype: Genotype) -> dict[str, Path]:
        """Table accuracies of the found cell and of the k most probable cells, when the table is at hand."""
        try:
            table = NB201Table.from_path(self.config.nb201_table)
        except GradnasError as err:
            log.warning("no NAS-Bench-201 look-up: %s", err)
            return {}
        probs = self.model.arch()[0].ops.detach()
        text = search_report(table, genotype, probs, self.config.top_k)
        path = self.out / "nb201.txt"
        path.write_text(text + "\n")
        return {"nb201": path}

    def train_epoch(self, epoch: int, steps: int, bar: tqdm) -> dict[str, float]:
        c, model = self.config, self.model
        model.train()
        arch_active = self.update.active(epoch)
        val_batches = _endless(self.val_loader) if arch_active else None
        totals = torch.zeros(5, device=self.device)  # train loss, train correct, val loss, val correct, images
        guard = FiniteGuard(self.device)
        for step, (x, y) in enumerate(self.train_loader):
            if step >= steps:
                break
            x = x.contiguous(memory_format=self.memory_format)
            if arch_active:
                xv, yv = next(val_batches)
                xv = xv.contiguous(memory_format=self.memory_format)
                val_loss, val_logits = self.update.arch_step((x, y), (xv, yv), self.optimizer)
                totals[2:4] += torch.stack([val_loss * len(yv), (val_logits.argmax(1) == yv).sum()])
            loss, logits = weight_step(model, self.criterion, self.optimizer, self.weights, (x, y), c.grad_clip,
                                       self.reduce, self.scaler)
            if c.lr_per_step:
                self.scheduler.step()
            totals[0:2] += torch.stack([loss * len(y), (logits.argmax(1) == y).sum()])
            totals[4] += len(y)
            guard.update(step, loss, *([val_loss] if arch_active else []))
            if (step + 1) % c.log_every == 0 or step + 1 == steps:
                guard.check(epoch, self.checkpoint_path, "lower --lr or --arch-lr")
                n = totals[4].item()
                bar.set_description(f"epoch {epoch + 1}/{c.epochs}")
                bar.set_postfix(loss=f"{totals[0].item() / n:.3f}", acc=f"{100 * totals[1].item() / n:.1f}")
            bar.update(1)
        if self.reduce is not None:
            self.reduce([totals])  # averaged sums: the ratios below are over all ranks' images
        n = totals[4].item()
        stats = {"train_loss": totals[0].item() / n, "train_acc": 100 * totals[1].item() / n}
        if arch_active:
            stats.update(val_loss=totals[2].item() / n, val_acc=100 * totals[3].item() / n)
        return stats


    def dry_run(self) -> dict[str, Any]:
        """Build everything and take one iteration: the sizes and memory a user needs to pick a batch size."""
        x, y = next(iter(self.train_loader))
        x = x.contiguous(memory_format=self.memory_format)
        self.model.train()
        activations, _ = saved_activation_bytes(self.model, lambda: self.model(x))
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        if self.update.active(self.config.arch_warmup_epochs):
            xv, yv = next(iter(self.val_loader))
            self.update.arch_step((x, y), (xv.contiguous(memory_format=self.memory_format), yv), self.optimizer)
        weight_step(self.model, self.criterion, self.optimizer, self.weights, (x, y), self.config.grad_clip,
                    self.reduce, self.scaler)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        report = {
            "weights": sum(p.numel() for p in self.model.weight_parameters()),
            "arch_parameters": sum(p.numel() for p in self.model.arch_parameters()),
            "batch_size": self.config.batch_size, "device": str(self.device),
            "step_seconds": round(time.perf_counter() - started, 3), "activation_bytes": activations,
        }
        if self.device.type == "cuda":
            report["peak_bytes"] = torch.cuda.max_memory_allocated(self.device)
        else:  # no allocator statistics on the CPU: activations plus parameters, gradients, optimiser state
            report["estimated_peak_bytes"] = activations + state_bytes(self.model, self.optimizer)
        return report


def _endless(loader: DeviceLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches without end, a new shuffled pass after each: the validation part may hold fewer batches than
    the training part (PC-DARTS's ImageNet subsets, 2.5 % vs 10 %, METHODS.md §3)."""
    while True:
        yield from loader


def _brief(record: dict[str, Any]) -> str:
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "distinct_cells", "seconds")
    return " ".join(f"{k}={record[k]:.4g}" for k in keys
                    if isinstance(record.get(k), (int, float)) and math.isfinite(record[k]))


def final_edge_probabilities(checkpoint: Path) -> torch.Tensor:
    """The first cell's op weights under a saved search's architecture (NB201: its per-edge softmax)."""
    state = load_checkpoint(checkpoint)
    config = SearchConfig(**state["config"])
    num_classes = state["model"]["net.classifier.weight"].shape[0]
    in_channels = state["model"]["net.stem.0.weight"].shape[1]
    model = build_search_model(config, num_classes, in_channels)
    model.load_state_dict(state["model"])
    with torch.no_grad():
        return model.arch()[0].ops


def search(config: SearchConfig, dataset: ImageDataset | None = None, resume: bool = False) -> SearchResult:
    """Run (or resume) a search and return its genotype, per-epoch history and output paths."""
    return Searcher(config, dataset, resume).run()
