"""Plots of a search's architecture over the run, from its ``log.jsonl`` and ``config.yaml``.

Two series: the selection weights each epoch logs under ``arch`` (softmax α, α weighted by β, IS-DARTS's
masks, DNAS's ψ; one E×|O| matrix per cell type, or per cell for per-cell searches) and IS-DARTS's
``importance`` (IIM per op, absent where an op was removed). Each becomes heat-maps per cell type at the
last epoch (for per-cell searches a grid of every cell), heat-maps at a few epochs over the run, and one line
per op over the epochs for every edge. :class:`EpochImages` renders one epoch's heat-maps for TensorBoard
during the search. matplotlib (the ``plot`` extra) is imported on first use.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GradnasError, first_line
from .extras import require
from .genotypes import SHORT_NAMES
from .limits import check_parsed
from .spaces import SPACES

MAX_EPOCH_PANELS = 6  # heat-maps shown over the run: the first, the last and evenly spaced ones between


@dataclass
class Series:
    """One quantity over the run: ``values[key]`` is (epochs, E, |O|), NaN where an op has no value."""
    name: str                      # file stem: "weights" or "importance"
    label: str                     # colour-bar label
    epochs: np.ndarray             # completed epochs (1-based) of the records holding the quantity
    values: dict[str, np.ndarray]  # "normal" / "reduce", or "cell0".. for per-cell searches
    edges: list[str]               # "source→target" per edge, nodes numbered as in genotypes
    ops: tuple[str, ...]
    log_scale: bool = False


def edge_names(space: str, steps: int | None = None) -> list[str]:
    """``steps``: intermediate nodes of a cell (default: the space's)."""
    return [f"{s}→{n}" for s, n in SPACES[space].edges(steps)]


def read_run(run: str | Path) -> tuple[str, tuple[str, ...], list[dict[str, Any]], int | None]:
    """A search run's space, op names, per-epoch records and DARTS node count (None: the default)."""
    run = Path(run)
    log, config = run / "log.jsonl", run / "config.yaml"
    if not log.is_file() or not config.is_file():
        raise GradnasError(f"{run} is not a search run directory (no log.jsonl and config.yaml)")
    from .config import read_config_file  # the configuration imports the search, which imports this module

    cfg = read_config_file(config)
    space = cfg.get("space", "darts")
    if not isinstance(space, str) or space not in SPACES:
        raise GradnasError(f"{config}: unknown search space {space!r}")
    try:
        lines = log.read_text().splitlines()  # one record per epoch: no bound on its length beyond the run's
    except UnicodeDecodeError as err:
        raise GradnasError(f"{log} is not UTF-8 text (byte {err.start})") from None
    history = [_record(line, f"{log}, line {n}") for n, line in enumerate(lines, 1) if line.strip()]
    if not history:
        raise GradnasError(f"{log} has no epochs yet")
    return space, tuple(cfg.get("ops") or SPACES[space].default_ops), history, cfg.get("steps")


def _record(line: str, where: str) -> dict[str, Any]:
    try:
        record = check_parsed(json.loads(line), where)
    except (ValueError, RecursionError) as err:
        raise GradnasError(f"{where} is not a JSON record ({first_line(err, 80)})") from None
    if not isinstance(record, dict):
        raise GradnasError(f"{where} is not a JSON record")
    return record


def weight_matrices(arch: dict[str, Any], n_edges: int, n_ops: int) -> dict[str, np.ndarray]:
    """The E×|O| selection-weight matrices of one record's ``arch`` entry (other entries are summaries)."""
    out = {}
    for key, value in arch.items():
        if isinstance(value, list) and len(value) == n_edges and all(
                isinstance(row, list) and len(row) == n_ops for row in value):
            out[key] = np.asarray(value, np.float64)
    return out


def importance_matrices(importance: dict[str, dict[str, float]], edges: list[str],
                        ops: tuple[str, ...]) -> dict[str, np.ndarray]:
    """IS-DARTS's per-op importance (keys ``source>target:op``) as E×|O| matrices, NaN for removed ops."""
    row = {e.replace("→", ">"): i for i, e in enumerate(edges)}
    col = {op: j for j, op in enumerate(ops)}
    out = {}
    for kind, values in importance.items():
        m = np.full((len(edges), len(ops)), np.nan)
        for label, v in values.items():
            edge, op = label.split(":")
            m[row[edge], col[op]] = v
        out[kind] = m
    return out


def run_series(space: str, ops: tuple[str, ...], history: list[dict[str, Any]],
               steps: int | None = None) -> list[Series]:
    """The weight series and, when the run measured it, the importance series."""
    edges = edge_names(space, steps)
    series = []
    weights = [(r["epoch"] + 1, weight_matrices(r.get("arch", {}), len(edges), len(ops))) for r in history]
    weights = [(e, m) for e, m in weights if m]
    if weights:
        series.append(_stack("weights", "selection weight", weights, edges, ops, log_scale=False))
    importance = [(r["epoch"] + 1, importance_matrices(r["importance"], edges, ops))
                  for r in history if "importance" in r]
    if importance:
        series.append(_stack("importance", "IIM = 1/F", importance, edges, ops, log_scale=True))
    if not series:
        raise GradnasError("the run's log holds no architecture weights")
    return series


def _stack(name: str, label: str, records: list[tuple[int, dict[str, np.ndarray]]], edges: list[str],
           ops: tuple[str, ...], log_scale: bool) -> Series:
    keys = list(records[-1][1])
    values = {k: np.stack([m.get(k, np.full((len(edges), len(ops)), np.nan)) for _, m in records]) for k in keys}
    return Series(name, label, np.array([e for e, _ in records]), values, edges, ops, log_scale)


def plot_run(run: str | Path, out: str | Path | None = None) -> list[Path]:
    """Write every plot of a search run into ``out`` (default ``RUN/plots``); return the files."""
    space, ops, history, steps = read_run(run)
    out = Path(out) if out is not None else Path(run) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for s in run_series(space, ops, history, steps):
        last = {k: v[-1] for k, v in s.values.items()}
        files.append(_save(heatmaps(last, s, f"{s.label} after epoch {s.epochs[-1]}"), out / f"{s.name}_final.png"))
        files.append(_save(heatmaps_over_epochs(s), out / f"{s.name}_epochs.png"))
        files += [_save(edge_lines(s, key), out / f"{s.name}_edges_{key}.png") for key in s.values]
    return files


# ------------------------------------------------------------------------------------------------ figures
def _figure(width: float, height: float):
    # A bare Figure renders through Agg and never touches a display or pyplot's global state.
    return require("matplotlib.figure", "plotting").Figure(figsize=(width, height))


def _norm(s: Series, arrays: list[np.ndarray]):
    colors = require("matplotlib.colors", "plotting")
    finite = np.concatenate([a[np.isfinite(a) & ((a > 0) if s.log_scale else True)] for a in arrays])
    if finite.size == 0:
        return colors.Normalize(0, 1)
    lo, hi = float(finite.min()), float(finite.max())
    if s.log_scale:
        return colors.LogNorm(lo, hi if hi > lo else lo * 10)
    return colors.Normalize(lo, hi if hi > lo else lo + 1e-6)  # the data's range: early α differ by little


def _cmap():
    # grey for removed ops (NaN) and, on a log scale, zeros
    return require("matplotlib", "plotting").colormaps["viridis"].with_extremes(bad="0.85")


def _panel(ax, m: np.ndarray, s: Series, norm, title: str, annotate: bool, ticks: bool, fontsize: float) -> Any:
    shown = np.where(m > 0, m, np.nan) if s.log_scale else m
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=_cmap(), norm=norm, aspect="auto",
                      interpolation="nearest")
    ax.set_title(title, fontsize=fontsize + 1)
    ax.set_xticks(range(len(s.ops)), [SHORT_NAMES.get(op, op) for op in s.ops] if ticks else [],
                  rotation=90, fontsize=fontsize)
    ax.set_yticks(range(len(s.edges)), s.edges if ticks else [], fontsize=fontsize)
    ax.tick_params(length=0)
    if annotate:
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                text = f"{v:.2g}" if s.log_scale else f"{v:.3f}"
                light = norm(v) < 0.5 if (v > 0 or not s.log_scale) else False
                ax.text(j, i, text, ha="center", va="center", fontsize=fontsize * 0.8,
                        color="white" if light else "black")
    return image


def heatmaps(mats: dict[str, np.ndarray], s: Series, title: str, values: bool = True) -> Any:
    """One E×|O| heat-map per key and one shared colour scale, with the ``values`` written in the cells when
    there are at most 2 keys; per-cell searches get a grid of every cell, in network order."""
    keys = list(mats)
    cols = min(len(keys), 7)
    rows = math.ceil(len(keys) / cols)
    annotate = values and len(keys) <= 2
    pw, ph = (0.5 * len(s.ops) + 1.0, 0.3 * len(s.edges) + 1.0) if len(keys) <= 2 else (0.3 * len(s.ops) + 0.6,
                                                                                          0.16 * len(s.edges) + 0.6)
    fig = _figure(cols * pw + 1.2, rows * ph + 0.8)
    norm = _norm(s, list(mats.values()))
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(len(keys))]
    for i, (ax, key) in enumerate(zip(axes, keys)):
        image = _panel(ax, mats[key], s, norm, f"{key} cell" if not key.startswith("cell") else key,
                       annotate, ticks=len(keys) <= 2 or i % cols == 0 or i >= len(keys) - cols,
                       fontsize=8 if len(keys) <= 2 else 5)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(top=1 - 0.6 / fig.get_figheight())  # room for the title above the panels' own
    fig.colorbar(image, ax=axes, shrink=min(0.8, 4 / fig.get_figheight()), label=s.label)
    return fig


def heatmaps_over_epochs(s: Series) -> Any:
    """Rows: cell types (or cells); columns: up to MAX_EPOCH_PANELS epochs from the first to the last."""
    picks = np.unique(np.linspace(0, len(s.epochs) - 1, min(len(s.epochs), MAX_EPOCH_PANELS)).round().astype(int))
    keys = list(s.values)
    pw, ph = 0.28 * len(s.ops) + 0.5, 0.16 * len(s.edges) + 0.5
    fig = _figure(len(picks) * pw + 1.8, len(keys) * ph + 0.8)
    norm = _norm(s, list(s.values.values()))
    axes = []
    for r, key in enumerate(keys):
        for c, t in enumerate(picks):
            ax = fig.add_subplot(len(keys), len(picks), r * len(picks) + c + 1)
            image = _panel(ax, s.values[key][t], s, norm, f"epoch {s.epochs[t]}" if r == 0 else "",
                           annotate=False, ticks=True, fontsize=5)
            if c > 0:
                ax.set_yticks([])
            if r < len(keys) - 1:
                ax.set_xticks([])
            if c == 0:
                ax.set_ylabel(key, fontsize=7)
            axes.append(ax)
    fig.suptitle(f"{s.label} over the run", fontsize=10)
    fig.subplots_adjust(top=1 - 0.6 / fig.get_figheight())
    fig.colorbar(image, ax=axes, shrink=min(0.8, 4 / fig.get_figheight()), label=s.label)
    return fig


def edge_lines(s: Series, key: str) -> Any:
    """One panel per edge of ``key``'s cell, one line per op over the epochs (colour = op)."""
    values = s.values[key]
    cols = 7 if len(s.edges) > 6 else 3
    rows = math.ceil(len(s.edges) / cols)
    fig = _figure(2.1 * cols, 1.7 * rows + 0.9)
    ticker = require("matplotlib.ticker", "plotting")
    finite = values[np.isfinite(values) & ((values > 0) if s.log_scale else True)]
    for e, edge in enumerate(s.edges):
        ax = fig.add_subplot(rows, cols, e + 1)
        for o, op in enumerate(s.ops):
            ys = values[:, e, o]
            if s.log_scale:
                ys = np.where(ys > 0, ys, np.nan)
            ax.plot(s.epochs, ys, color=f"C{o}", linewidth=1.1, marker="." if len(s.epochs) < 12 else None,
                    markersize=3, label=SHORT_NAMES.get(op, op))
        if s.log_scale:
            ax.set_yscale("log")
        if finite.size:  # one y range for every panel, so edges compare at a glance
            lo, hi = float(finite.min()), float(finite.max())
            pad = 0.05 * (hi - lo) + 1e-6 * max(abs(hi), 1e-12)
            ax.set_ylim(*((lo / 1.5, hi * 1.5) if s.log_scale else (lo - pad, hi + pad)))
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set_title(f"edge {edge}", fontsize=8)
        ax.tick_params(labelsize=6)
        if e % cols == 0:
            ax.set_ylabel(s.label, fontsize=7)
        if e >= len(s.edges) - cols:
            ax.set_xlabel("epoch", fontsize=7)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7, frameon=False)
    fig.suptitle(f"{s.label} per edge, {key}" + (" cell" if not key.startswith("cell") else ""), fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.98, top=1 - 0.5 / fig.get_figheight(),
                        bottom=0.75 / fig.get_figheight(), hspace=0.55, wspace=0.3)
    return fig


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def to_image(fig: Any, dpi: float = 72) -> np.ndarray:
    """An H×W×3 uint8 rendering of ``fig``."""
    canvas = require("matplotlib.backends.backend_agg", "plotting").FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class EpochImages:
    """TensorBoard images of one epoch's record: its selection-weight (and importance) heat-maps, without the
    values in the cells (rendering those would cost more than a small search epoch; ``gradnas plot`` has them)."""

    def __init__(self, space: str, ops: tuple[str, ...], steps: int | None = None):
        self.space, self.ops, self.steps = space, tuple(ops), steps

    def __call__(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
        images = {}
        measured = "arch" in record or "importance" in record
        for s in run_series(self.space, self.ops, [record], self.steps) if measured else []:
            last = {k: v[-1] for k, v in s.values.items()}
            images[f"arch/{s.name}"] = to_image(heatmaps(last, s, f"{s.label}, epoch {s.epochs[-1]}", values=False))
        return images
