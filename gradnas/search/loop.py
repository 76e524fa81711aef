"""The search loop: one readable loop for every method.

Per iteration: an architecture step (if the method has one and it is active), then a weight step.
Per epoch: derive and log the genotype, run the method's epoch hooks, write an atomic checkpoint.
Everything a method changes lives in the parts it is built from (edge, parameterisation, update, hooks).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..arch import ARCHITECTURES, EdgeNormalization, GroupAttention
from ..benchmarks.nb201 import ENV_VAR as NB201_TABLE_ENV, NB201Table, search_report
from ..capture import CapturedStep, capture_mode
from ..config import RESUMABLE, SearchConfig, check_config, resumed_config
from ..data import (Data, DeviceLoader, ImageDataset, StreamData, StreamLoader, as_image_dataset, load_dataset,
                    search_split, stream_data, training_augment)
from ..distributed import average_, convert_sync_batchnorm, init_from_env
from ..edges import EDGES
from ..edges.batched import batched_fallback, use_batched_nodes
from ..edges.mixed import MixedOp
from ..errors import GradnasError, first_line
from ..extras import require
from ..genotypes import Genotype, genotype_text, save_genotype, with_concat
from ..optim import CapturableSGD, plain_rates, set_lr
from ..plots import EpochImages
from ..profiling import saved_activation_bytes, state_bytes
from ..runlog import RunLog, environment, log
from ..rundir import RunDir, RunOwner, write_atomic
from ..runtime import FiniteGuard, autocast_dtype, resolve_device, stopped, warn_if_at_chance
from ..selection import derive_genotype
from ..spaces import NB201_OPS, SPACES
from ..spaces.blocks import drop_running_stats
from .bilevel import ARCH_UPDATES, weight_step  # noqa: F401  (weight_step: benchmarks and tests call it here)
from .checkpoint import load_checkpoint, nonfinite, rng_state, seed_everything, set_rng_state
from .hooks import SearchContext, build_hooks
from .model import SearchModel

CHECKPOINT = "checkpoint.pt"
REQUIRED = ("epoch", "config", "model", "optimizer", "scheduler", "update", "hooks", "train_loader", "val_loader",
            "rng", "history")


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
    space = SPACES[config.space]
    op_names = tuple(config.ops) if config.ops else space.default_ops
    edge, edge_options = edge_choice(config)
    net = space.supernet(C=config.channels, num_classes=num_classes, layers=config.layers, in_channels=in_channels,
                         op_names=op_names, edge=edge, edge_options=edge_options, **space.supernet_options(config))
    arch_cls = ARCHITECTURES[config.arch]
    if arch_cls.per_cell and not space.per_cell:
        per_cell = ", ".join(s for s in SPACES if SPACES[s].per_cell)
        raise GradnasError(f"architecture {config.arch!r} gives one genotype per cell; only {per_cell} genotypes have those")
    arch = arch_cls(net.cell_types, net.op_names, net.in_degrees, **arch_cls.options_from_config(config))
    if not config.bn_running_stats:
        drop_running_stats(net)
    elif not config.cell_bn_running_stats:  # IS-DARTS: stem, residual blocks and final BN keep theirs
        drop_running_stats(net.cells)
    if config.edge_norm and arch.weighs_edges:
        raise GradnasError(f"architecture {config.arch!r} weighs every edge itself; edge_norm would weigh it twice")
    if config.edge_norm:  # β per cell type, or per cell when every cell has its own weights (pc-darts-global)
        owners = [f"cell{i}" for i in range(len(net.cell_types))] if arch.per_cell else net.cell_types
        arch.add(EdgeNormalization(owners, net.in_degrees))
    if config.group_attention:
        arch.add(GroupAttention(len(net.cell_types), arch.num_edges, config.groups, config.attention_spread,
                                config.attention_sigmoid))
    if config.executor == "batched":
        reason = batched_fallback(config)
        if reason is None:
            use_batched_nodes(net, space.edges(len(net.in_degrees)))
        else:
            log.warning("executor batched does not handle %s: the supernet runs edge by edge", reason)
    return SearchModel(net, arch)


def check_image_size(model: SearchModel, in_channels: int, size: int) -> None:
    """One line, before any work, when ``size``×``size`` images are too small for the supernet's reductions: an
    eval-mode forward of two blank images, with the random state put back (PC-DARTS draws channels)."""
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model.eval()(torch.zeros(2, in_channels, size, size))
    except RuntimeError as err:
        raise GradnasError(f"{size}×{size} images do not fit this supernet ({first_line(err)}); use larger images "
                           "(an .npz or image folder at a larger size) or fewer cells") from None
    finally:
        model.train()


def weight_lr_schedule(optimizer: torch.optim.Optimizer, config: SearchConfig,
                       steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine from ``lr`` to ``lr_min``, stepped every epoch, or every iteration with ``lr_per_step`` (IS-DARTS;
    the period then counts steps). With ``lr_warmup_epochs`` = k the first k epochs (their steps) instead
    climb linearly, lr·(e+1)/k, and the cosine goes on from epoch k as if uninterrupted (PC-DARTS's ImageNet
    search overrides the cosine's rate for those epochs)."""
    per = steps if config.lr_per_step else 1
    period, warm = config.epochs * per, config.lr_warmup_epochs * per
    if not warm:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, period, config.lr_min)
    floor = config.lr_min / config.lr if config.lr else 0.0

    def factor(t: int) -> float:
        return (t + 1) / warm if t < warm else floor + (1 - floor) * (1 + math.cos(math.pi * t / period)) / 2
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def place_model(model: SearchModel, config: SearchConfig, device: torch.device) -> torch.memory_format:
    """Move the search model to ``device`` in the configured layout, precision and compilation; returns the
    memory format its inputs should have."""
    # Channels-last runs the supernet's many depthwise and dilated convs several times faster.
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    model.amp_dtype = autocast_dtype(config.amp, device)
    if config.compile:
        compile_cells(model.net)
    return memory_format


def compile_cells(net: nn.Module, **options: Any) -> None:
    """``torch.compile`` the supernet's repeated unit, its cells, rather than the whole supernet: the cell's
    parameters are graph inputs, so every cell of the same structure and shapes replays one compiled graph and
    compilation costs a few cells, not the whole network (which took over 25 minutes for PC-DARTS on a CPU).
    In place, so checkpoints keep the plain parameter names. The cell's forward is compiled, not its call: an
    executor's bookkeeping (the batched plan for the active ops, its views of the BN buffers) runs eagerly in a
    forward pre-hook before it, so the graph only guards on it and a removal of ops recompiles a cell once."""
    for cell in net.cells:
        if hasattr(cell.node_sum, "prepare"):
            cell.register_forward_pre_hook(lambda cell, args: cell.node_sum.prepare(cell.edges, args[0].device))
        cell.forward = torch.compile(cell.forward, **options)


class Searcher(RunOwner):
    """Holds the state of one search run; :meth:`run` executes it (resuming when asked)."""

    def __init__(self, config: SearchConfig, dataset: Data | None = None, resume: bool = False,
                 overwrite: bool = False, changes: dict[str, Any] | None = None, claim: bool = True):
        """``dataset``: anything :func:`search_data` takes; default: ``config.data`` loaded into memory.
        ``resume``: continue the run in ``config.out`` under its saved configuration, with ``changes`` (only
        :data:`~gradnas.config.RESUMABLE` options may differ). ``overwrite``: replace the run ``config.out`` holds.
        ``claim=False`` (a dry run) leaves the run directory alone."""
        self.out = Path(config.out)
        self.checkpoint_path = self.out / CHECKPOINT
        state = load_checkpoint(self.checkpoint_path, REQUIRED) if resume else None
        if state is not None:  # the run's own configuration; only where it writes and the safe options may change
            config = resumed_config(SearchConfig, state["config"], {"out": str(self.out), "progress": config.progress,
                                    **(changes or {})}, RESUMABLE, f"checkpoint {self.checkpoint_path}")
            check_config(config)
            if config.epochs < state["epoch"]:
                raise GradnasError(f"epochs ({config.epochs}) is fewer than the {state['epoch']} the run has done")
        self.config = config
        seed_everything(config.seed, config.deterministic)
        self.device, self.dist = init_from_env(resolve_device(config.device))
        self.claim_and_setup(RunDir(self.out, resume, overwrite) if claim and self.dist.is_main else None,
                             lambda: self._setup(dataset, state))

    def _setup(self, dataset: Data | None, state: dict[str, Any] | None) -> None:
        config = self.config
        # A table named (by the option or $GRADNAS_NB201_TABLE) must be sound before the search starts.
        named = SPACES[config.space].benchmark == "nb201" and (config.nb201_table or os.environ.get(NB201_TABLE_ENV))
        self.nb201_table = NB201Table.from_path(config.nb201_table) if named else None
        self.data = (search_data(dataset) if dataset is not None
                     else load_dataset(config.data, config.data_root, image_size=config.image_size))

        self.model = build_search_model(config, self.data.num_classes, self.data.in_channels)
        if config.sync_bn and self.dist.enabled:  # before any forward: the batched executor's plans hold the BNs
            convert_sync_batchnorm(self.model.net, self.device.type)
        check_image_size(self.model, self.data.in_channels, self.data.image_size)
        self.memory_format = place_model(self.model, config, self.device)
        self.criterion = nn.CrossEntropyLoss()
        self.weights = [p for p in self.model.weight_parameters()]
        self.capture = capture_mode(config.cuda_graph, self.device, capture_unsafe(config, self.dist.enabled,
                                                                                     self.model.amp_dtype))
        sgd = partial(CapturableSGD, device=self.device) if self.capture else torch.optim.SGD
        self.optimizer = sgd(self.weights, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                             weight_decay=config.weight_decay)
        self.update = ARCH_UPDATES[config.arch_update](
            self.model, criterion=self.criterion, order=config.order, lr=config.arch_lr,
            betas=config.arch_betas, weight_decay=config.arch_weight_decay, warmup_epochs=config.arch_warmup_epochs,
            grad_clip=config.arch_grad_clip,
            capturable=self.capture)  # step counters on the device
        self.reduce = partial(average_, context=self.dist) if self.dist.enabled else None
        self.update.reduce = self.reduce or self.update.reduce
        self.scaler = None
        if self.model.amp_dtype == torch.float16:
            if config.order == 2:
                raise GradnasError("--amp on a GPU without bfloat16 supports first-order search only")
            self.scaler, self.update.scaler = torch.amp.GradScaler(), torch.amp.GradScaler()
        self._build_loaders()
        self.steps = min(len(self.train_loader), config.steps_per_epoch or len(self.train_loader))
        self.scheduler = weight_lr_schedule(self.optimizer, config, self.steps)
        self.context = SearchContext(config, self.model, self.out, self.device, self.memory_format, self.data,
                                     self.train_loader, self.val_loader, self.reduce)
        self.hooks = build_hooks(self.context)
        self.captured = CapturedStep() if self.capture else None  # one graph for the run, captured anew on change
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        if state is not None:
            try:
                self._restore(state)
            except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
                raise GradnasError(f"checkpoint {self.checkpoint_path} does not fit the run it describes "
                                   f"({config.space} space): {first_line(err)}") from None
        # rank 0 writes; the α heat-maps go to TensorBoard as images
        self.log = (RunLog(self.out, self.start_epoch,
                           images=EpochImages(config.space, self.model.net.op_names, config.steps))
                    if self.run_dir is not None else None)

    # -- setup ------------------------------------------------------------------------------------
    def _build_loaders(self) -> None:
        c, d = self.config, self.data
        n = len(d.dataset) if isinstance(d, StreamData) else len(d.y_train)
        if self.update.uses_validation:  # train_portion split, or two subsets (PC-DARTS ImageNet, docs/methods.md §3)
            train_idx, val_idx = search_split(n, c.train_subset or c.train_portion, c.seed, c.val_subset)
        else:  # single-level methods train on all data (or on the train subset)
            train_idx = torch.arange(n) if c.train_subset is None else search_split(n, c.train_subset, c.seed)[0]
            val_idx = None
        shard = (self.dist.rank, self.dist.world_size)  # each rank takes its part of every global batch
        if isinstance(d, StreamData):
            loader = lambda idx, seed: StreamLoader(d, idx, c.batch_size, self.device, seed, shard)
        else:
            augment = training_augment(d, c.cutout)
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
        if not self.capture:  # a checkpoint written while capturing holds its rates as tensors
            plain_rates(self.optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        self.update.load_state_dict(state["update"])
        self.train_loader.load_state_dict(state["train_loader"])
        if self.val_loader is not None:
            self.val_loader.load_state_dict(state["val_loader"])
        set_rng_state(state["rng"])
        self.start_epoch, self.history = state["epoch"], state["history"]
        self._apply_changes(SearchConfig(**{**self.config.to_dict(), **state["config"]}))

    def _apply_changes(self, saved: SearchConfig) -> None:
        """After a resume that changed the rates or the length: the cosine goes on from where it stood, toward
        the new end, between the new rates. Left alone otherwise, so that a plain resume is bit-identical."""
        c, s = self.config, self.scheduler
        if (c.lr, c.lr_min, c.epochs) != (saved.lr, saved.lr_min, saved.epochs):
            s.base_lrs, s.eta_min = [c.lr], c.lr_min
            s.T_max = c.epochs * (self.steps if c.lr_per_step else 1)
            for group in self.optimizer.param_groups:
                group["initial_lr"] = c.lr
                set_lr(group, c.lr_min + (c.lr - c.lr_min) * (1 + math.cos(math.pi * s.last_epoch / s.T_max)) / 2)
        if c.arch_lr != saved.arch_lr and hasattr(self.update, "optimizer"):
            for group in self.update.optimizer.param_groups:
                group["lr"] = c.arch_lr

    # -- the loop ---------------------------------------------------------------------------------
    def genotype(self) -> Genotype:
        """A hook's genotype (shrinking: the survivors) or the selection rule's, with the supernet's concat."""
        genotype = next((g for g in (hook.genotype(self.context) for hook in self.hooks) if g is not None), None)
        genotype = genotype or derive_genotype(self.model.arch, self.config.space, self.config.selection)
        return with_concat(genotype, self.model.net.concat)

    def run(self) -> SearchResult:
        try:
            return self._run()
        finally:
            self.release()

    def _run(self) -> SearchResult:
        c, main = self.config, self.dist.is_main
        if main:
            env = environment(self.device, c.seed, c.deterministic) | {"world_size": self.dist.world_size}
            write_atomic(self.out / "env.json", json.dumps(env, indent=2))
        steps = self.steps
        bar = tqdm(total=(c.epochs - self.start_epoch) * steps, disable=not (c.progress and main), unit="step",
                   dynamic_ncols=True, leave=False)
        try:
            for epoch in range(self.start_epoch, c.epochs):
                started = time.perf_counter()
                for hook in self.hooks:
                    hook.on_epoch_start(self.context, epoch)
                stats = self.train_epoch(epoch, steps, bar)
                record = {"epoch": epoch, "lr": float(self.optimizer.param_groups[0]["lr"]), **stats}
                if not c.lr_per_step:
                    self.scheduler.step()
                for hook in self.hooks:
                    record.update(hook.on_epoch_end(self.context, epoch) or {})
                genotype = self.genotype()
                if genotype.cells is not None:  # per-cell search: how many different cells the network has now
                    record["distinct_cells"] = len(set(genotype.cells))
                record.update(genotype=genotype_text(genotype), arch=self.model.arch.summary(),
                              seconds=round(time.perf_counter() - started, 3))
                self.history.append(record)
                state = self.state_dict(epoch + 1)
                bad = nonfinite(state)
                if bad:  # a kept checkpoint must be one to resume from
                    raise GradnasError(stopped(f"non-finite {bad[0]} after epoch {epoch + 1}", self.checkpoint_path,
                                               "search", "--lr or --arch-lr"))
                if main:
                    warn_if_at_chance(self.history, self.data.num_classes, c.epochs)
                    self.log.write(record)
                    self.save_checkpoint(state, self.checkpoint_path)
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
        try:
            viz = require("gradnas.viz", "drawing the cells")
        except GradnasError as err:  # the core runs without the plot extra
            log.warning("no cell diagrams: %s", err)
        else:
            paths["diagrams"] = viz.draw_genotype(genotype, self.out)
        if SPACES[c.space].benchmark == "nb201":
            paths.update(self._nb201_report(genotype))
        return SearchResult(genotype, self.history, paths, self.model)

    def _nb201_report(self, genotype: Genotype) -> dict[str, Path]:
        """Table accuracies of the found cell and of the k most probable cells, when the table is at hand."""
        extra = [op for op in self.model.net.op_names if op not in NB201_OPS]
        if extra:
            log.warning("no NAS-Bench-201 look-up: op(s) %s are not in the benchmark", ", ".join(extra))
            return {}
        try:
            table = self.nb201_table or NB201Table.from_path()
        except GradnasError as err:
            log.warning("no NAS-Bench-201 look-up: %s", err)
            return {}
        probs = self.model.arch.distribution()[0]
        text = search_report(table, genotype, probs, self.config.top_k)
        path = write_atomic(self.out / "nb201.txt", text + "\n")
        return {"nb201": path}

    def train_epoch(self, epoch: int, steps: int, bar: tqdm) -> dict[str, float]:
        c, model = self.config, self.model
        model.train()
        arch_active = self.update.active(epoch)
        val_batches = _endless(self.val_loader) if arch_active else None
        totals = torch.zeros(5, device=self.device)  # train loss, train correct, val loss, val correct, images
        guard = FiniteGuard(self.device)
        iteration = partial(self.iteration, arch_active)
        if self.captured is not None:
            iteration = self.captured.bind(iteration, self.graph_key(arch_active))
        for step, (x, y) in enumerate(self.train_loader):
            if step >= steps:
                break
            batches = [x.contiguous(memory_format=self.memory_format), y]
            if arch_active:
                xv, yv = next(val_batches)
                batches += [xv.contiguous(memory_format=self.memory_format), yv]
            loss, logits, *val = iteration(*batches)  # a replay's outputs are overwritten by the next one
            if arch_active:
                val_loss, val_logits = val
                totals[2:4] += torch.stack([val_loss * len(yv), (val_logits.argmax(1) == yv).sum()])
            if c.lr_per_step:
                self.scheduler.step()
            totals[0:2] += torch.stack([loss * len(y), (logits.argmax(1) == y).sum()])
            totals[4] += len(y)
            guard.update(step, loss, *([val_loss] if arch_active else []))
            if (step + 1) % c.log_every == 0 or step + 1 == steps:
                guard.check(epoch, self.checkpoint_path, "search", "--lr or --arch-lr")
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

    def graph_key(self, arch_active: bool) -> tuple:
        """What a captured iteration bakes in besides tensor values: whether the architecture steps, and every
        mixed op's active ops (IS-DARTS removes some; the batched executor then rebuilds its plan)."""
        return arch_active, tuple((tuple(m.active), m.zero) for m in self.model.modules() if isinstance(m, MixedOp))

    def iteration(self, arch_active: bool, x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor | None = None,
                  yv: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """One search iteration: the architecture step on (xv, yv) when active, then the weight step on (x, y).
        Returns the training loss and logits, then the validation ones when the architecture stepped."""
        val = self.update.arch_step((x, y), (xv, yv), self.optimizer) if arch_active else ()
        loss, logits = self.update.weight_step((x, y), self.optimizer, self.weights, self.config.grad_clip,
                                               self.scaler)
        return (loss, logits, *val)

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
        self.update.weight_step((x, y), self.optimizer, self.weights, self.config.grad_clip, self.scaler)
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


def capture_unsafe(config: SearchConfig, distributed: bool, amp_dtype: torch.dtype | None) -> str | None:
    """Why a search iteration cannot be captured as a CUDA graph (docs/methods.md §13); None when it can."""
    if distributed:
        return "data-parallel runs (the gradients' all-reduce is not captured)"
    if amp_dtype == torch.float16:
        return "float16 loss scaling (the scaler reads its overflow flag back)"
    if config.compile:
        return "compile (compiled cells are measured apart from captured iterations)"
    if config.partial_k > 1 and config.partial_sampling == "random":
        return "random channel subsets (not yet checked under capture)"
    if config.order == 2 and (config.skip_dropout > 0 or ARCHITECTURES[config.arch].draws):
        return ("second order with random draws: skip dropout, samples (its finite differences replay the "
                "generator's state)")
    if ARCHITECTURES[config.arch].one_op_per_edge:
        return "one sampled op per edge (GDAS: the host reads which op each edge runs)"
    if not ARCH_UPDATES[config.arch_update].graph_safe:
        return f"architecture update {config.arch_update!r} (not graph-safe)"
    return None


def _endless(loader: DeviceLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches without end, a new shuffled pass after each: the validation part may hold fewer batches than
    the training part (PC-DARTS's ImageNet subsets, 2.5 % vs 10 %, docs/methods.md §3)."""
    while True:
        yield from loader


def _brief(record: dict[str, Any]) -> str:
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "distinct_cells", "seconds")
    return " ".join(f"{k}={record[k]:.4g}" for k in keys
                    if isinstance(record.get(k), (int, float)) and math.isfinite(record[k]))


def final_edge_probabilities(checkpoint: Path) -> torch.Tensor:
    """The first cell's op weights under a saved search's architecture (NB201: its per-edge softmax)."""
    state = load_checkpoint(checkpoint, ("epoch", "config", "model"))
    config = resumed_config(SearchConfig, state["config"], {}, RESUMABLE, f"checkpoint {checkpoint}")
    try:
        num_classes = state["model"]["net.classifier.weight"].shape[0]
        in_channels = state["model"]["net.stem.0.weight"].shape[1]
        model = build_search_model(config, num_classes, in_channels)
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as err:
        raise GradnasError(f"checkpoint {checkpoint} does not fit the run it describes ({config.space} space): "
                           f"{first_line(err)}") from None
    with torch.no_grad():
        return model.arch.distribution()[0]


def search_data(data: Data, num_classes: int | None = None) -> ImageDataset | StreamData:
    """What a search reads: an ImageDataset as it is; tensors ``(x, y)`` or a map-style Dataset held in memory
    (:func:`gradnas.data.as_image_dataset`); a DataLoader's dataset streamed through its workers."""
    if isinstance(data, (ImageDataset, StreamData)):
        return data  # a stream's test split, if any, is not used by a search
    return stream_data(data, num_classes) if isinstance(data, DataLoader) else as_image_dataset(data, num_classes)


def search(config: SearchConfig, dataset: Data | None = None, resume: bool = False, overwrite: bool = False,
           changes: dict[str, Any] | None = None) -> SearchResult:
    """Run (or resume) a search and return its genotype, per-epoch history and output paths; see :class:`Searcher`
    for ``resume``, ``overwrite`` and ``changes``.

    ``dataset`` overrides ``config.data``: an ImageDataset, tensors ``(x, y)``, a map-style torch Dataset
    (held in memory) or a DataLoader (streamed); see :func:`search_data`."""
    return Searcher(config, dataset, resume, overwrite, changes).run()
