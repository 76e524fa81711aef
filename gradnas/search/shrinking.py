"""The progressive-shrinking hook of IS-DARTS (docs/methods.md §5.3) and its importance plot.

After the scheduled epochs it measures every alive candidate (``importance``: the Fisher term F of op outputs
for IS-DARTS, α for the S-DARTS ablation), averages the statistic over the cells sharing a mask (F itself, not
IIM = 1/F, as the authors' code does), removes each comparison subset's least important candidates (the
largest mean F) and drops them from the edges, so removed ops are no longer computed. The genotype is the
survivors. Between steps it also measures every ``iim_every`` epochs, for the per-epoch log, TensorBoard and
``importance.png`` (the paper's Figure 4).
The alive masks and the measurements so far are the hook's state, so a resumed run shrinks exactly as an
uninterrupted one.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import torch

from ..data import DeviceLoader
from ..errors import GradnasError
from ..extras import missing_extra
from ..runlog import log
from ..genotypes import Genotype, validate
from ..options import Option, declare
from ..rundir import write_atomic
from ..spaces.space import cell_edges
from ..selection.importance import IMPORTANCE, mean_per_type, mixed_op
from ..selection.shrinking import (Subset, comparable, comparison_subsets, shrink, shrink_epochs, survivor_cell,
                                   survivors)
from .hooks import HOOKS, Hook, SearchContext

Scores = dict[str, torch.Tensor]  # cell type → (E, |O|) importance, NaN where removed
PLOT = "importance.png"


@HOOKS.register("shrinking")
class ProgressiveShrinking(Hook):
    def __init__(self, context: SearchContext):
        super().__init__(context)
        config = context.config
        self.model, self.out = context.model, context.out
        arch = self.model.arch
        self.space, self.op_names, self.cell_types = config.space, arch.op_names, arch.cell_types
        self.types = tuple(dict.fromkeys(arch.cell_types))
        self.subsets = comparison_subsets(config.space, arch.in_degrees, len(arch.op_names))
        self.schedule = shrink_epochs(config.epochs, config.shrink_rate, config.shrink_interval, config.shrink_window)
        self.measure = IMPORTANCE[config.importance]
        if config.iim_every < 0:
            raise GradnasError(f"iim_every must be >= 0, got {config.iim_every}")
        self.samples = self._samples(context) if config.importance == "fisher" else None
        self.labels = _labels(arch.in_degrees, arch.op_names)
        self.alive = {t: torch.ones(arch.num_edges, len(arch.op_names), dtype=torch.bool) for t in self.types}
        self.steps_done = 0
        self.history: list[tuple[int, Scores]] = []  # (completed epoch, scores) of every measurement

    def _samples(self, context: SearchContext) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """docs/methods.md §5.1: N fixed images of the validation data (else the training data), unaugmented, in
        near-equal batches of at most ``batch_size``; N = 0 or None: one pass over the training loader, as
        the authors' code does."""
        n, c = self.config.iim_samples, self.config
        if not n:
            return context.train_loader
        pool = context.val_loader or context.train_loader
        if not isinstance(pool, DeviceLoader):
            raise GradnasError("iim_samples draws fixed images from data in memory; with streamed data pass "
                               "iim_samples 0 (one pass over the training loader)")
        if not 0 < n <= len(pool.y):
            raise GradnasError(f"iim_samples must lie in 1..{len(pool.y)} (the images it draws from), got {n}")
        pick = torch.randperm(len(pool.y), generator=torch.Generator().manual_seed(c.seed))[:n].to(pool.x.device)
        batch = math.ceil(n / math.ceil(n / c.batch_size))
        data = context.data
        return DeviceLoader(pool.x[pick], pool.y[pick], batch, data.mean, data.std, augment=None, shuffle=False,
                            drop_last=False, device=context.device)

    # -- measurement and removal ----------------------------------------------------------------------------
    def statistic(self, context: SearchContext) -> Scores:
        """The measure's statistic of every alive candidate (F or α), averaged over the cells of each type."""
        batches = None
        if self.samples is not None:
            fmt = context.memory_format
            batches = ((x.contiguous(memory_format=fmt), y) for x, y in self.samples)
        totals = self.measure.collect(self.model, batches)
        if context.reduce is not None:  # data parallel: the mean sums over the mean counts are the global mean
            context.reduce(list(totals))
        means = mean_per_type(tuple(t.cpu() for t in totals), self.cell_types)
        return {t: m.masked_fill(~self.alive[t], math.nan) for t, m in means.items()}

    def on_epoch_end(self, context: SearchContext, epoch: int) -> dict[str, Any] | None:
        done = epoch + 1  # the schedule counts completed epochs from 1
        steps = [s for s, at in enumerate(self.schedule) if at == done]
        every = self.config.iim_every
        if not steps and not (every and done % every == 0):
            return None
        stat = self.statistic(context)
        scores = {t: self.measure.importance(s) for t, s in stat.items()}
        self.history.append((done, scores))
        record = self._record(scores, stat)
        if steps:
            removed: dict[str, list[str]] = {t: [] for t in self.types}
            for step in steps:
                for t in self.types:
                    key = self.measure.rank_key(stat[t])
                    kept = shrink(comparable(self.space, key, self.op_names), self.alive[t], self.subsets,
                                  len(self.schedule), step)
                    removed[t] += [self.labels[e][o] for e, o in (self.alive[t] & ~kept).nonzero().tolist()]
                    self.alive[t] = kept
                self.steps_done = step + 1
            self._apply()
            record.update(shrink_step=self.steps_done, removed=removed)
        if done == self.config.epochs:
            try:
                plot_importance(self.history, self.schedule, self.subsets, self.labels, self.op_names,
                                self.out / PLOT, self.measure.label, log_scale=self.measure.largest_removed)
            except ImportError as err:  # the core runs without the plot extra
                log.warning("no importance plot: %s", missing_extra(err, "plotting importance"))
        return record

    def _record(self, scores: Scores, stat: Scores) -> dict[str, Any]:
        """Per op: the importance and, for the Fisher measure, the mean F it comes from (null where infinite)."""
        per_op = lambda values: {t: {self.labels[e][o]: float(s[e, o]) for e, o in self.alive[t].nonzero().tolist()}
                                 for t, s in values.items()}
        record: dict[str, Any] = {"importance": per_op(scores)}
        if self.config.importance == "fisher":
            record["fisher"] = {t: {k: v if math.isfinite(v) else None for k, v in ops.items()}
                                for t, ops in per_op(stat).items()}
        return record

    def _apply(self) -> None:
        """Drop removed candidates from every cell's edges, and from the architecture's masks when it has any."""
        for cell, kind in zip(self.model.net.cells, self.cell_types):
            for e, edge in enumerate(cell.edges):
                op = mixed_op(edge)
                for o in (~self.alive[kind][e]).nonzero().flatten().tolist():
                    op.remove(o)
        set_alive = getattr(self.model.arch, "set_alive", None)
        if set_alive is not None:
            for t in self.types:
                set_alive(t, self.alive[t])

    # -- genotype and state -----------------------------------------------------------------------------------
    def genotype(self, context: SearchContext) -> Genotype | None:
        """The survivors after the last step; before it, each subset's best alive candidates so far."""
        if self.samples is None:
            latest = {t: self.measure.importance(s) for t, s in self.statistic(context).items()}  # α: at any time
        elif self.history:
            latest = self.history[-1][1]
        else:
            return None
        cells = {t: survivor_cell(self.space, survivors(comparable(self.space, latest[t], self.op_names),
                                                        self.alive[t], self.subsets), self.subsets, self.op_names)
                 for t in self.types}
        return validate(Genotype(self.space, cells["normal"], cells.get("reduce")))

    def state_dict(self) -> dict[str, Any]:
        return {"alive": self.alive, "steps_done": self.steps_done, "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alive, self.steps_done, self.history = state["alive"], state["steps_done"], state["history"]
        self._apply()


def _labels(in_degrees: tuple[int, ...], op_names: tuple[str, ...]) -> list[list[str]]:
    """Per edge and op, ``source>target:op`` (nodes numbered as in genotypes)."""
    return [[f"{s}>{n}:{op}" for op in op_names] for s, n in cell_edges(in_degrees)]


def plot_importance(history: list[tuple[int, Scores]], schedule: list[int], subsets: list[Subset],
                    labels: list[list[str]], op_names: tuple[str, ...], path: Path, ylabel: str,
                    log_scale: bool = True) -> Path:
    """One panel per comparison subset and cell type, one line per candidate over the measured epochs (a line
    ends where its op was removed): colour = op, line style = source edge; dotted verticals mark the shrinking
    steps. ``none`` (IIM 0) is left out."""
    from matplotlib.figure import Figure  # a bare Figure renders through Agg and never touches a display
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, NullFormatter

    epochs = [e for e, _ in history]
    types = list(history[0][1])
    panels = [(t, s) for t in types for s in subsets]
    cols = min(len(panels), 4 if len(types) > 1 else 3)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.6 * cols, 2.8 * rows + 0.6))
    n_ops, styles = len(op_names), ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1))]
    for k, (t, subset) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        series = torch.stack([scores[t].flatten()[subset.index] for _, scores in history], 1)  # candidates × epochs
        for i, ys in zip(subset.index.tolist(), series.tolist()):
            op, source = i % n_ops, i // n_ops - subset.edges[0]
            if op_names[op] != "none":
                ax.plot(epochs, ys, color=f"C{op}", linestyle=styles[source % len(styles)], linewidth=1)
        for at in schedule:
            ax.axvline(at, color="grey", linestyle=":", linewidth=0.8)
        if log_scale:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}"))  # plain text: no mathtext
            ax.yaxis.set_minor_formatter(NullFormatter())
        where = f"edge {labels[subset.edges[0]][0].split(':')[0]}" if len(subset.edges) == 1 else f"node {subset.node}"
        ax.set_title(f"{t} cell, {where}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
    handles = [Line2D([], [], color=f"C{o}", label=name) for o, name in enumerate(op_names) if name != "none"]
    widest = max(len(s.edges) for s in subsets)
    if widest > 1:
        handles += [Line2D([], [], color="black", linestyle=styles[j % len(styles)], label=f"source {j}")
                    for j in range(widest)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.94, bottom=0.6 / fig.get_figheight() + 0.08, hspace=0.45,
                        wspace=0.3)
    write_atomic(path, lambda f: fig.savefig(f, format=Path(path).suffix[1:], dpi=100))
    return path


declare(
    "shrinking",
    Option("importance", str, 'fisher', 'shrinking: rank candidates by {choices}', choices=IMPORTANCE.names),
    Option("shrink_rate", float, 0.25, 'shrinking: rate r, S = round(1/r) steps'),
    Option("shrink_interval", int, 2, 'shrinking: epochs I between steps; the last step is I epochs before the end'),
    Option("shrink_window", int | None, None,
           "shrinking: put every step in the last W epochs (the paper's shrink-rate study: 20)"),
    Option("iim_samples", int | None, 200, 'images per importance measurement (0: the whole training loader)'),
    Option("iim_every", int, 1, 'also measure importance every k epochs, for the plot (0: at the steps only)'),
)
