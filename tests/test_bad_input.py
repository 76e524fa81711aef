"""Hostile but fair input, through the CLI (and the Python API where it differs): every case gets exit code 2,
exactly one ``gradnas: error:`` line, no traceback, and leaves every file of the run directory as it was.
Then the guarantees around a run directory: no code runs from a checkpoint, a diverged run keeps a finite
checkpoint and resumes with a lower learning rate, atomic writes, the lock, file modes, Ctrl-C."""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import shutil
import stat
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradnas.benchmarks.nb201 import decode
from gradnas.cli import main
from gradnas.config import resolve_config
from gradnas.errors import GradnasError
from gradnas.genotypes import parse_genotype, reduction_indices, save_genotype
from gradnas.rundir import PREVIOUS, TMP_SUFFIX, RunDir, read_manifest
from gradnas.search.checkpoint import load_checkpoint
from gradnas.search.loop import Searcher, search

NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
TINY_SEARCH = ["--space", "nb201", "--channels", "4", "--layers", "1", "--batch-size", "8", "--steps-per-epoch", "1",
               "--no-progress"]
TINY_TRAIN = ["--data", "digits", "--channels", "4", "--layers", "1", "--batch-size", "8", "--steps-per-epoch", "1",
              "--eval-every", "100", "--no-progress"]


class Payload:
    """Unpickling it would create ``path``: what a crafted checkpoint would do instead."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()} if d.is_dir() else {}


def assert_one_line(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("gradnas: error:"), err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------------------------------- shared run dirs
@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad_input")


@pytest.fixture(scope="module")
def search_run(root) -> Path:
    out = root / "search"
    assert main(["search", *TINY_SEARCH, "--epochs", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def train_run(root) -> Path:
    out = root / "train"
    assert main(["train", NB201_ARCH, *TINY_TRAIN, "--epochs", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def table(root) -> Path:
    """A complete synthetic NB201 table: every architecture, accuracies from its code."""
    path = root / "nb201.csv"
    rows = [f"{c},{decode(c)},{50 + c % 40},{20 + c % 50},{10 + c % 30}" for c in range(5 ** 6)]
    path.write_text("index,arch,cifar10_test,cifar100_test,imagenet16_120_test\n" + "\n".join(rows) + "\n")
    return path


def copy(run: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(run, tmp / run.name))


def edit_checkpoint(path: Path, edit) -> None:
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


def npz(path: Path, size: int = 8, labels=None, n: int = 32) -> Path:
    g = np.random.default_rng(0)
    y = np.arange(n) % 4 if labels is None else np.asarray(labels)
    np.savez(path, x_train=g.integers(0, 256, (n, 1, size, size), dtype=np.uint8), y_train=y,
             x_test=g.integers(0, 256, (8, 1, size, size), dtype=np.uint8), y_test=np.arange(8) % 4)
    return path


# ------------------------------------------------------------------------------------------------ the cases
# Each case builds its input in ``tmp`` (from the shared runs) and returns (argv, directory that must stay as it
# was, text the line must hold).
def _evil(command):
    def case(tmp, search_run, train_run, table):
        run = copy(train_run if command == "train" else search_run, tmp)
        name = "train_checkpoint.pt" if command == "train" else "checkpoint.pt"
        torch.save({"epoch": 1, "config": {}, "payload": Payload(tmp / "pwned")}, run / name)
        argv = (["bench", "nb201", str(run), "--nb201-table", str(table)] if command == "bench" else
                [command, "--resume", str(run)])
        return argv, run, "refused to load"
    return case


def _evil_model(tmp, search_run, train_run, table):
    run = copy(train_run, tmp)
    torch.save({"format": "gradnas-model", "payload": Payload(tmp / "pwned")}, run / "model.pt")
    return ["eval", str(run)], run, "model.pt"


def _resume_with(*flags, text, source="search"):
    def case(tmp, search_run, train_run, table):
        run = copy(search_run if source == "search" else train_run, tmp)
        return [source, "--resume", str(run), *flags], run, text
    return case


def _resume_config(body, text):
    def case(tmp, search_run, *_):
        run = copy(search_run, tmp)
        (tmp / "c.yaml").write_text(body)
        return ["search", "--resume", str(run), "--config", str(tmp / "c.yaml")], run, text
    return case


def _rerun(command, source):
    def case(tmp, search_run, train_run, table):
        run = copy(search_run if source == "search" else train_run, tmp)
        argv = (["search", *TINY_SEARCH, "--epochs", "1"] if command == "search" else
                ["train", NB201_ARCH, *TINY_TRAIN, "--epochs", "1"])
        return [*argv, "--out", str(run)], run, "not empty"
    return case


def _overwrite_with(command, source, *flags, text, data=None):
    """``--overwrite`` of a finished run with an input that is found bad: the run must stay whole."""
    def case(tmp, search_run, train_run, table):
        run = copy(search_run if source == "search" else train_run, tmp)
        extra = ["--data", str(data(tmp))] if data else []
        argv = (["search", *TINY_SEARCH, "--epochs", "1"] if command == "search" else
                ["train", NB201_ARCH, *TINY_TRAIN, "--epochs", "1"])
        return [*argv, *extra, *flags, "--out", str(run), "--overwrite"], run, text
    return case


def _empty_npz(tmp):
    np.savez(tmp / "empty.npz")
    return tmp / "empty.npz"


def _users_files(*names, link=False):
    """A directory that never held a gradnas run, with the user's own files under the names a run writes."""
    def case(tmp, *_):
        mine = tmp / "mine"
        mine.mkdir()
        (tmp / "elsewhere.txt").write_text("the user's")
        for name in names:
            (mine / name).symlink_to(tmp / "elsewhere.txt") if link else (mine / name).write_text("the user's")
        return ["search", *TINY_SEARCH, "--epochs", "1", "--out", str(mine), "--overwrite"], tmp, names[0]
    return case


def _export_over(name):
    def case(tmp, search_run, train_run, table):
        run = copy(train_run, tmp)
        text = "--overwrite" if "/" not in name else "cannot"
        return ["export", str(run), "--format", "torchscript", "--out", str(run / name)], run, text
    return case


def _rerun_as(command, source, text):
    def case(tmp, search_run, train_run, table):
        run = copy(search_run if source == "search" else train_run, tmp)
        return [command, "--resume", str(run)], run, text
    return case


def _cut_log(run: Path):
    with open(run / "log.jsonl", "a") as f:
        f.write('{"epoch": 1, "arch": [[[')
    return ["plot", str(run), "--out", str(run / "plots")], run, "line 2 is not a JSON record"


def _out_is_a_file(tmp, *_):
    (tmp / "file").write_text("mine")
    return ["search", *TINY_SEARCH, "--out", str(tmp / "file")], tmp, "existing file"


def _config(text_, body: str | bytes, command="search", name="c.yaml"):
    def case(tmp, *_):
        (tmp / name).write_bytes(body if isinstance(body, bytes) else body.encode())
        head = ["search", *TINY_SEARCH] if command == "search" else ["train", NB201_ARCH, *TINY_TRAIN]
        return [*head, "--config", str(tmp / name), "--out", str(tmp / "run")], tmp, text_
    return case


def _argv(*argv, text):
    """Any command line; ``{tmp}`` in an argument is the case's directory."""
    def case(tmp, *_):
        return [a.replace("{tmp}", str(tmp)) for a in argv], tmp, text
    return case


def _file(name: str, body: str | bytes, *argv, text):
    """A file the command line names (``{file}``) or imports (a plugin beside it)."""
    def case(tmp, *_):
        (tmp / name).write_bytes(body if isinstance(body, bytes) else body.encode())
        return [a.replace("{file}", str(tmp / name)).replace("{tmp}", str(tmp)) for a in argv], tmp, text
    return case


def _per_cell_json(cells: int) -> str:
    cell = {"nodes": [[["skip_connect", 0], ["skip_connect", 1]]] * 4, "concat": [2, 3, 4, 5]}
    reductions = reduction_indices(cells)
    return json.dumps({"format": "gradnas-genotype", "version": 1, "space": "darts", "normal": cell, "reduce": cell,
                       "cells": [{**cell, "reduction": i in reductions} for i in range(cells)]})


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width``×``height`` pixels (PIL refuses it as a decompression bomb)."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda body: struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return b"\x89PNG\r\n\x1a\n" + chunk(ihdr) + chunk(b"IDAT")


def _folder_with(bad: str):
    def make(tmp):
        _png_folder(tmp)
        images = tmp / "images"
        if bad == "bomb":
            (images / "a" / "0.png").write_bytes(_png_header(100_000, 100_000))
            return images
        shutil.copytree(images, tmp / "tiny" / "train")  # train/<class>/, val/images + val_annotations.txt
        (tmp / "tiny" / "val" / "images").mkdir(parents=True)
        shutil.copy(images / "b" / "1.png", tmp / "tiny" / "val" / "images" / "x.png")
        (tmp / "tiny" / "val" / "val_annotations.txt").write_text("x.png\tb\t0\t0\t8\t8\nx.png\n")
        return tmp / "tiny"
    return make


def _npz_shape(shape):
    def make(tmp):
        g = np.random.default_rng(0)
        np.savez(tmp / "d.npz", x_train=g.integers(0, 256, (32, *shape), dtype=np.uint8), y_train=np.arange(32) % 4,
                 x_test=g.integers(0, 256, (8, *shape), dtype=np.uint8), y_test=np.arange(8) % 4)
        return tmp / "d.npz"
    return make


def _flags(*flags, text, space="nb201"):
    def case(tmp, *_):
        head = [*TINY_SEARCH[2:], "--space", space]
        return ["search", *head, *flags, "--out", str(tmp / "run")], tmp, text
    return case


def _data(make, text, command="search"):
    def case(tmp, *_):
        data = make(tmp)
        head = (["search", *TINY_SEARCH] if command == "search" else
                ["train", NB201_ARCH, *TINY_TRAIN[2:]])
        return [*head, "--data", str(data), "--out", str(tmp / "run")], tmp, text
    return case


def _png_folder(tmp):
    g = np.random.default_rng(0)
    for c in ("a", "b"):
        for i in range(10):
            p = tmp / "images" / c / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(g.integers(0, 256, (16, 16), dtype=np.uint8)).save(p)
    broken = tmp / "images" / "a" / "0.png"
    broken.write_bytes(broken.read_bytes()[:150])  # the header survives, most of the pixels do not
    return tmp / "images"


def _checkpoint_edit(edit, text, source="search"):
    def case(tmp, search_run, train_run, table):
        run = copy(search_run if source == "search" else train_run, tmp)
        edit_checkpoint(run / ("checkpoint.pt" if source == "search" else "train_checkpoint.pt"), edit)
        return [source, "--resume", str(run)], run, text
    return case


def _other_space(state):
    state["config"].update(space="darts", layers=2)


def _other_space_everywhere(tmp, search_run, *rest):
    """The checkpoint and config.yaml both say darts; the weights are NB201's."""
    argv, run, _ = _checkpoint_edit(_other_space, "")(tmp, search_run, *rest)
    text = (run / "config.yaml").read_text().replace("space: nb201", "space: darts").replace("layers: 1", "layers: 2")
    (run / "config.yaml").write_text(text)
    return argv, run, "does not fit"


def _model_edit(edit, text):
    def case(tmp, search_run, train_run, table):
        run = copy(train_run, tmp)
        state = torch.load(run / "model.pt", weights_only=True)
        edit(state)
        torch.save(state, run / "model.pt")
        return ["eval", str(run)], run, text
    return case


def _table(body: bytes, text):
    def case(tmp, search_run, train_run, table):
        (tmp / "t.csv").write_bytes(body)
        return ["bench", "nb201", NB201_ARCH, "--nb201-table", str(tmp / "t.csv")], tmp, text
    return case


def _edited_config(tmp, search_run, *_):
    run = copy(search_run, tmp)
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("channels: 4", "channels: 8"))
    return ["search", "--resume", str(run)], run, "--channels cannot change"


def _env_table(tmp, *_):
    (tmp / "t.csv").write_bytes(b"\x00\x01PK\x03\x04" + bytes(range(256)))
    return ["search", *TINY_SEARCH, "--out", str(tmp / "run")], tmp, "t.csv"


_env_table.env = {"GRADNAS_NB201_TABLE": "{tmp}/t.csv"}


def _nan_weight(state):
    next(v for v in state["model"].values() if v.is_floating_point()).view(-1)[0] = float("nan")


def _search_table(tmp, *_):
    (tmp / "t.csv").write_bytes(b"\x00\x01PK\x03\x04" + bytes(range(256)))
    return ["search", *TINY_SEARCH, "--nb201-table", str(tmp / "t.csv"), "--out", str(tmp / "run")], tmp, "t.csv"


def _locked(tmp, search_run, *_):
    run = copy(search_run, tmp)
    _locked.held = RunDir(run, resume=True)  # another run holds it; released by the test
    return ["search", "--resume", str(run)], run, "in use"


def _fault(err: OSError, text: str):
    """The file system fails at the first write of a resumed run."""
    def case(tmp, search_run, *_):
        run = copy(search_run, tmp)
        return ["search", "--resume", str(run), "--epochs", "2"], run, text
    case.fault = err
    return case


CASES = {
    # security
    "search --resume runs no code": _evil("search"),
    "train --resume runs no code": _evil("train"),
    "bench nb201 RUN runs no code": _evil("bench"),
    "eval of a crafted model.pt": _evil_model,
    # resume: the saved configuration, with only the safe options changed
    "resume may not change channels": _resume_with("--channels", "8", text="--channels cannot change"),
    "resume may not change the space": _resume_with("--space", "darts", text="--space cannot change"),
    "resume may not change the batch": _resume_with("--batch-size", "4", "--cutout", "2", text="--batch-size, --cutout"),
    "resume of training may not change the data": _resume_with("--data", "cifar10", text="--data cannot",
                                                               source="train"),
    "resume with epochs 0": _resume_with("--epochs", "0", text="epochs must be at least 1"),
    "resume with --out elsewhere": _resume_with("--out", "/elsewhere", text="different directories"),
    "resume and overwrite at once": _resume_with("--overwrite", text="pass one of them"),
    "resume with a NaN lr": _resume_with("--lr", "nan", text="lr must be a finite number"),
    "resume with a config file that changes the width": _resume_config("channels: 8\n", "--channels cannot change"),
    "resume with a hand-edited config.yaml": _edited_config,
    "search --resume of a training run": _rerun_as("search", "train", "holds a train run"),
    "train --resume of a search run": _rerun_as("train", "search", "holds a search run"),
    "a checkpoint holding a NaN weight": _checkpoint_edit(_nan_weight, "damaged or edited"),
    "a bad NB201 table named by the environment": _env_table,
    # overwrites and concurrent writers
    "search into a run directory": _rerun("search", "search"),
    "train into a run directory": _rerun("train", "train"),
    "search into a training run": _rerun("search", "train"),
    "a second writer": _locked,
    "search --overwrite with a missing --data": _overwrite_with("search", "search", text="nowhere.npz",
                                                                data=lambda t: t / "nowhere.npz"),
    "search --overwrite with an empty .npz": _overwrite_with("search", "search", text="empty.npz", data=_empty_npz),
    "train --overwrite with an empty .npz": _overwrite_with("train", "train", text="empty.npz", data=_empty_npz),
    "search --overwrite with too wide a batch": _overwrite_with("search", "search", "--batch-size", "5000",
                                                                text="batch size"),
    "--overwrite of a user's checkpoint.pt and log.jsonl": _users_files("checkpoint.pt", "log.jsonl"),
    "--overwrite of a user's symlink named log.jsonl": _users_files("log.jsonl", link=True),
    "--overwrite of a user's cell_normal.png": _users_files("cell_normal.png"),
    "export over the run's model.pt": _export_over("model.pt"),
    "export over the run's checkpoint": _export_over("train_checkpoint.pt"),
    # disk
    "out is an existing file": _out_is_a_file,
    "read-only file system": _fault(OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
    "disk full": _fault(OSError(errno.ENOSPC, "No space left on device"), "No space left"),
    # config files: types, naming the key
    "epochs: ten": _config("epochs must be an integer", "epochs: ten\n"),
    "deterministic: no (a string)": _config("deterministic must be true or false", "deterministic: 'no'\n"),
    "lr: a list": _config("lr must be a number", "lr: [1]\n"),
    "ops: not a list": _config("ops must be a list", "ops: nor_conv_3x3\n"),
    "arch_betas: a string item": _config("arch_betas must be a number", "arch_betas: [0.5, x]\n"),
    "seed: 1.5": _config("seed must be an integer", "seed: 1.5\n"),
    "layers: true": _config("layers must be an integer", "layers: true\n"),
    "unknown option in a file": _config("unknown option(s): epoch", "epoch: 3\n"),
    "a YAML key given twice": _config("the key 'epochs' is repeated (line 2)", "epochs: 1\nepochs: 2\n"),
    "a JSON key given twice": _config("the key 'epochs' is repeated", '{"epochs": 1, "epochs": 2}', name="c.json"),
    "a config nested 10,000 deep": _config("nested", "a: " + "[" * 10_000 + "]" * 10_000 + "\n"),
    "a JSON config nested 100,000 deep": _config("nested", "[" * 100_000 + "]" * 100_000, name="c.json"),
    "a config nested 20 deep": _config("nested more than 16", "a: " + "[" * 20 + "]" * 20 + "\n"),
    "a non-UTF-8 config": _config("not UTF-8", b"epochs: \xff\xfe\n"),
    "a config of aliases (a billion laughs)": _config("more than 100,000 values", "a: &a [x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))),
    "an integer of 40 digits in a config": _config("does not fit in 64 bits", "seed: " + "9" * 40 + "\n"),
    "an integer of 40 digits as a flag": _argv("search", *TINY_SEARCH, "--seed", "9" * 40, "--out", "{tmp}/run",
                                               text="seed must fit in 64 bits"),
    "train epochs: ten": _config("epochs must be an integer", "epochs: ten\n", "train"),
    "train auxiliary: 'no'": _config("auxiliary must be true or false", "auxiliary: 'no'\n", "train"),
    "train lr: nan": _config("lr must be a finite number", "lr: .nan\n", "train"),
    # search flags, refused before any work
    "--grad-clip -1": _flags("--grad-clip", "-1", text="grad_clip must be positive"),
    "--lr -1": _flags("--lr", "-1", text="lr must be positive"),
    "--arch-lr nan": _flags("--arch-lr", "nan", text="arch_lr must be a finite number"),
    "--momentum -2": _flags("--momentum", "-2", text="momentum must not be negative"),
    "--weight-decay -1": _flags("--weight-decay", "-1", text="weight_decay must not be negative"),
    "--arch-betas 2 3": _flags("--arch-betas", "2", "3", text="arch_betas must be two numbers in [0, 1)"),
    "--seed -1": _flags("--seed", "-1", text="seed must not be negative"),
    "--log-every 0": _flags("--log-every", "0", text="log_every must be at least 1"),
    "--ops none (darts)": _flags("--ops", "none", text="at least one op besides none", space="darts"),
    "--ops none (nb201)": _flags("--ops", "none", text="at least one op besides none"),
    "--ops unknown": _flags("--ops", "sep_conv_3x3", text="unknown nb201 op"),
    "--order 2, single-level": _flags("--method", "is-darts", "--order", "2", text="order 2 applies to the bilevel"),
    # sizes, checked before anything of their size is built
    "--dry-run of 10⁶ channels": _flags("--channels", "1000000", "--dry-run", text="more than the"),
    "10⁶ channels": _flags("--channels", "1000000", text="out of memory"),
    "--layers 10⁵": _flags("--layers", "100000", "--dry-run", text="layers must be at most 100"),
    "--steps 1,000": _flags("--steps", "1000", "--dry-run", text="steps must be at most 64", space="darts"),
    "--image-size 10⁵": _flags("--image-size", "100000", "--dry-run", text="image_size must be at most 4,096"),
    "train --image-size 10⁵": _argv("train", NB201_ARCH, *TINY_TRAIN, "--image-size", "100000", "--out", "{tmp}/run",
                                    text="image_size must be at most 4,096"),
    # genotypes, in every form a command reads
    "a genotype JSON nested 100,000 deep": _file("g.json", "[" * 100_000 + "]" * 100_000, "show", "{file}",
                                                 text="nested"),
    "a genotype JSON of 200 cells": _file("g.json", _per_cell_json(200), "show", "{file}", text="200 cells; it needs 1..100"),
    "a genotype file that is not UTF-8": _file("g.json", b"\xff\xfe{}", "show", "{file}", text="not UTF-8"),
    "a text form with range(10**12)": _argv("show", "Genotype(normal=[('skip_connect', 0)] * 8, normal_concat="
                                            "range(10**12), reduce=[], reduce_concat=[])", text="not a literal"),
    "a text form with range(0, 10**12)": _argv("show", f"Genotype(normal={[('skip_connect', 0)] * 8}, normal_concat="
                                               "range(0, 1000000000000), reduce=[], reduce_concat=[])",
                                               text="spans more than 64 nodes"),
    "a text form nested 10,000 deep": _argv("show", "Genotype(normal=" + "[" * 10_000 + "]" * 10_000 +
                                            ", normal_concat=[], reduce=[], reduce_concat=[])", text="DARTS genotype"),
    "a text form of 500 nodes": _argv("show", "Genotype(normal=" + repr([("skip_connect", 0)] * 1000) +
                                      ", normal_concat=[2], reduce=" + repr([("skip_connect", 0)] * 8) +
                                      ", reduce_concat=[2])", text="500 nodes"),
    "an arch string with a 5,000-digit source": _argv("show", "|nor_conv_3x3~" + "9" * 5000 + "|", text="op~source"),
    "a genotype spec of 2 MB": _argv("show", "|" + "x" * (2 << 20), text="longer than 1 MiB"),
    # plugins
    "a plugin with a syntax error": _file("bad_syntax_plugin.py", "def (:\n", "--plugin", "bad_syntax_plugin",
                                          "show", "darts_v2", text="invalid syntax"),
    "a plugin that raises": _file("raising_plugin.py", "raise RuntimeError('boom')\n", "--plugin", "raising_plugin",
                                  "show", "darts_v2", text="RuntimeError: boom"),
    "a plugin re-registering an op": _file("twice_plugin.py", "from gradnas.spaces import OPS\n"
                                           "OPS['nb201'].register('skip_connect')(lambda *a: None)\n",
                                           "--plugin", "twice_plugin", "show", "darts_v2", text="registered twice"),
    "a plugin op of the wrong output shape": _file("shape_plugin.py", "import torch.nn as nn\nfrom gradnas.spaces import OPS\n"
                                                   "OPS['nb201'].register('halving_op')(lambda C, s, a, g: nn.AvgPool2d(2))\n",
                                                   "--plugin", "shape_plugin", "search", *TINY_SEARCH, "--ops", "none",
                                                   "skip_connect", "halving_op", "--out", "{tmp}/run",
                                                   text="maps a 2×4×8×8 input at stride 1 to 2×4×4×4"),
    "plot of a log with a cut line": lambda tmp, search_run, *_: _cut_log(copy(search_run, tmp)),
    # the command line and the file system
    "a flag of the wrong type": _argv("search", "--epochs", "many", text="invalid int value: 'many'"),
    "an unknown flag": _argv("train", "--no-such-flag", "3", text="unrecognized arguments"),
    "an --out name too long for the file system": _argv("search", *TINY_SEARCH, "--out", "{tmp}/" + "x" * 300,
                                                        text="File name too long"),
    "export below a file": _export_over("model.pt/deeper.pt"),
    "show another genotype into a run directory": lambda tmp, search_run, *_: (
        ["show", NB201_ARCH, "--out", str(copy(search_run, tmp))], tmp / search_run.name, "its own genotype's"),
    # data
    "a decompression bomb in an image folder": _data(_folder_with("bomb"), "could be decompression bomb"),
    "an annotation row without a class": _data(_folder_with("annotations"), "val_annotations.txt, line 2"),
    "non-square images": _data(_npz_shape((1, 8, 6)), "not square"),
    "an ambiguous array layout": _data(_npz_shape((3, 8, 3)), "could both be the channels"),    "a label of 10⁹": _data(lambda t: npz(t / "big.npz", labels=[0, 1, 2, 10 ** 9] * 8), "2 <= K <= 100,000"),
    "1×1 images": _data(lambda t: npz(t / "tiny.npz", size=1), "1×1 images do not fit"),
    "a PNG cut after its header": _data(_png_folder, "cannot decode image"),
    "one class": _data(lambda t: npz(t / "one.npz", labels=[3] * 32), "single class"),
    "one class (train)": _data(lambda t: npz(t / "one.npz", labels=[0] * 32), "single class", "train"),
    # checkpoints and model files
    "checkpoint from another space": _other_space_everywhere,
    "checkpoint without optimizer": _checkpoint_edit(lambda s: s.pop("optimizer"), "lacks optimizer"),
    "checkpoint with an unknown option": _checkpoint_edit(lambda s: s["config"].update(warp=1), "does not know: warp"),
    "checkpoint with a mistyped option": _checkpoint_edit(lambda s: s["config"].update(epochs="1"),
                                                          "epochs must be an integer"),
    "train checkpoint without its genotype": _checkpoint_edit(lambda s: s.pop("genotype"), "lacks genotype", "train"),
    "train checkpoint, weights of another net": _checkpoint_edit(
        lambda s: s["model"].pop(next(iter(s["model"]))), "does not fit", "train"),
    "model.pt without meta": _model_edit(lambda s: s.pop("meta"), "lacks meta"),
    "model.pt without its input size": _model_edit(lambda s: s["meta"].pop("image_size"), "lacks meta.image_size"),
    "model.pt missing weights": _model_edit(lambda s: s["state_dict"].pop(next(iter(s["state_dict"]))),
                                            "do not fit"),
    "binary --nb201-table": _table(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" * 8, "not a CSV text file"),
    "truncated --nb201-table": _table(b"index,arch,cifar10_test,cifar100_test,imagenet16_120_test\n0,|none~0|+|no",
                                      "line 2"),
    "binary --nb201-table (search)": _search_table,
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, search_run, train_run, table, capsys, monkeypatch):
    case = CASES[name]
    monkeypatch.syspath_prepend(str(tmp_path))  # where a case's plugin lies
    for key, value in getattr(case, "env", {}).items():
        monkeypatch.setenv(key, value.replace("{tmp}", str(tmp_path)))
    argv, directory, text = case(tmp_path, search_run, train_run, table)
    if getattr(case, "fault", None) is not None:  # the file system fails at the first write
        def failing(*args, **kwargs):
            raise case.fault
        monkeypatch.setattr("gradnas.rundir.tempfile.mkstemp", failing)
    before = snapshot(directory)
    capsys.readouterr()
    try:
        code = main(argv)
    finally:
        if getattr(case, "held", None) is not None:
            case.held.release()
    line = assert_one_line(code, capsys.readouterr().err)
    assert text in line, line
    after = snapshot(directory)
    assert {k: after.get(k) for k in before} == before, "a file of the run directory changed"
    assert not (tmp_path / "pwned").exists()
    assert not list(directory.rglob(f"*{TMP_SUFFIX}"))


def test_a_hand_edited_config_yaml_changes_what_may_change(search_run, tmp_path):
    run = copy(search_run, tmp_path)
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("epochs: 1\n", "epochs: 2\n"))
    assert main(["search", "--resume", str(run)]) == 0
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 2


def test_show_without_the_plot_extra_prints_the_genotype_and_one_line(tmp_path, monkeypatch, capsys):
    def missing(module, feature):
        raise GradnasError(f"{feature} needs the plot extra: pip install 'gradnas[plot]'")

    monkeypatch.setattr("gradnas.extras.require", missing)
    assert main(["show", "darts_v2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Genotype(normal=") and "parameters" in out[-2]
    assert out[-1] == "diagrams: drawing cell diagrams needs the plot extra: pip install 'gradnas[plot]'"
    assert not list(tmp_path.iterdir())


def test_a_library_warning_is_one_line_under_verbose_only(tmp_path, monkeypatch, capsys, caplog):
    (tmp_path / "warning_plugin.py").write_text("import warnings\nwarnings.warn('deprecated\\nsecond line', "
                                                "DeprecationWarning)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["--plugin", "warning_plugin", "show", "nb201_is_darts"]) == 0
    assert capsys.readouterr().err == ""
    monkeypatch.delitem(sys.modules, "warning_plugin")
    caplog.set_level(logging.INFO, logger="gradnas")  # what -v sets where pytest leaves logging alone
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["-v", "--plugin", "warning_plugin", "show", "nb201_is_darts"]) == 0
    assert caplog.messages == ["warning (DeprecationWarning): deprecated"]


@pytest.mark.parametrize("call, text", [
    (lambda tmp: resolve_config({"epochs": "ten"}), "epochs must be an integer"),
    (lambda tmp: resolve_config({"deterministic": "no"}), "deterministic must be true or false"),
    (lambda tmp: resolve_config({"grad_clip": -1.0}), "grad_clip must be positive"),
])
def test_bad_input_through_the_api(call, text, tmp_path):
    with pytest.raises(GradnasError, match=text):
        call(tmp_path)


def test_api_resume_changes_only_the_safe_options(search_run, tmp_path):
    run = copy(search_run, tmp_path)
    config = resolve_config({"out": str(run)})
    before = snapshot(run)
    with pytest.raises(GradnasError, match="--channels cannot change"):
        search(config, resume=True, changes={"channels": 8})
    with pytest.raises(GradnasError, match="not empty"):
        Searcher(config)
    assert snapshot(run) == before


# ------------------------------------------------------------------------------------------------ guarantees
@pytest.mark.parametrize("command", ["search", "train"])
def test_a_diverged_run_keeps_a_finite_checkpoint_and_resumes_with_a_lower_lr(command, tmp_path, capsys):
    out = tmp_path / "run"
    start = ["search", *TINY_SEARCH] if command == "search" else ["train", NB201_ARCH, *TINY_TRAIN]
    checkpoint = out / ("checkpoint.pt" if command == "search" else "train_checkpoint.pt")
    assert main([*start, "--steps-per-epoch", "2", "--epochs", "1", "--out", str(out)]) == 0
    good = snapshot(out)
    # a huge rate: the first step's loss is finite, the second blows up BN's running variance
    code = main([command, "--resume", str(out), "--epochs", "3", "--lr", "1e8", "--lr-min", "1e8", "--no-progress"])
    line = assert_one_line(code, capsys.readouterr().err)
    assert "non-finite" in line and "epoch 2" in line and f"checkpoint ({checkpoint})" in line
    assert snapshot(out)[checkpoint.name] == good[checkpoint.name]
    state = load_checkpoint(checkpoint)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values()
                                       if v.is_floating_point())
    assert main([command, "--resume", str(out), "--epochs", "3", "--lr", "0.01", "--no-progress"]) == 0
    state = load_checkpoint(checkpoint)
    assert state["epoch"] == 3 and state["config"]["lr"] == 0.01
    assert [r["epoch"] for r in state["history"]] == [0, 1, 2]
    assert state["history"][1]["lr"] < 0.01  # the cosine goes on from where it stood, from the new rate


def test_divergence_before_the_first_checkpoint_claims_none(tmp_path, capsys):
    code = main(["train", NB201_ARCH, *TINY_TRAIN, "--steps-per-epoch", "2", "--epochs", "2", "--lr", "1e8",
                 "--out", str(tmp_path / "t")])
    line = assert_one_line(code, capsys.readouterr().err)
    assert "non-finite" in line and "before the first checkpoint" in line and "intact" not in line
    assert not (tmp_path / "t" / "train_checkpoint.pt").exists()


def test_resume_accepts_the_options_the_run_was_started_with(search_run, tmp_path):
    run = copy(search_run, tmp_path)
    assert main(["search", "--resume", str(run), *TINY_SEARCH, "--epochs", "1"]) == 0  # done: nothing to redo


def test_disk_full_at_the_end_leaves_no_empty_genotype(tmp_path, monkeypatch, capsys):
    import gradnas.rundir as rundir

    real = rundir.os.replace

    def replace(src, dst):
        if Path(dst).name == "genotype.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(rundir.os, "replace", replace)
    out = tmp_path / "run"
    line = assert_one_line(main(["search", *TINY_SEARCH, "--epochs", "1", "--out", str(out)]),
                           capsys.readouterr().err)
    assert "genotype.json" in line and "No space left" in line
    assert not (out / "genotype.json").exists() and not list(out.glob(f"*{TMP_SUFFIX}"))
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1  # the epoch's work is kept: resume finishes it
    monkeypatch.setattr(rundir.os, "replace", real)
    assert main(["search", "--resume", str(out)]) == 0 and (out / "genotype.json").stat().st_size > 0


def test_stale_temporary_files_are_removed_and_files_are_world_readable(search_run, tmp_path):
    run = copy(search_run, tmp_path)
    stale = run / f".checkpoint.pt.x1y2{TMP_SUFFIX}"
    stale.write_bytes(b"half a checkpoint")
    assert main(["search", "--resume", str(run), "--epochs", "2"]) == 0
    assert not stale.exists()
    for name in ("checkpoint.pt", "log.jsonl", "genotype.json", "config.yaml"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name


def test_overwrite_replaces_the_previous_run(search_run, tmp_path):
    run = copy(search_run, tmp_path)
    (run / "mine.txt").write_text("kept")
    assert main(["search", *TINY_SEARCH, "--epochs", "2", "--seed", "1", "--out", str(run), "--overwrite"]) == 0
    assert load_checkpoint(run / "checkpoint.pt")["config"]["seed"] == 1
    assert len((run / "log.jsonl").read_text().splitlines()) == 2 and (run / "mine.txt").read_text() == "kept"
    assert not (run / PREVIOUS).exists() and "mine.txt" not in read_manifest(run)
    assert {"checkpoint.pt", "log.jsonl", "genotype.json", "config.yaml"} <= set(read_manifest(run))


@pytest.mark.parametrize("command", ["search", "train"])
def test_an_overwrite_that_fails_before_its_first_checkpoint_puts_the_run_back(command, search_run, train_run,
                                                                             tmp_path, capsys):
    run = copy(search_run if command == "search" else train_run, tmp_path)
    before = snapshot(run)
    start = ["search", *TINY_SEARCH] if command == "search" else ["train", NB201_ARCH, *TINY_TRAIN]
    code = main([*start, "--steps-per-epoch", "2", "--epochs", "1", "--lr", "1e8", "--out", str(run), "--overwrite"])
    assert "non-finite" in assert_one_line(code, capsys.readouterr().err)
    assert snapshot(run) == before and not (run / PREVIOUS).exists()


def test_an_overwrite_killed_before_its_first_checkpoint_is_undone_at_the_next_start(search_run, tmp_path):
    run = copy(search_run, tmp_path)
    before = snapshot(run)
    killed = (f"import os; from gradnas.rundir import RunDir, write_atomic; d = RunDir({str(run)!r}, overwrite=True); "
              f"d.set_aside(); write_atomic(d.path / 'config.yaml', 'new'); write_atomic(d.path / 'env.json', '{{}}'); "
              "os._exit(9)")
    assert subprocess.run([sys.executable, "-c", killed], cwd=Path(__file__).parents[1]).returncode == 9
    assert (run / PREVIOUS / "checkpoint.pt").is_file() and (run / "config.yaml").read_text() == "new"
    RunDir(run, resume=True).release()
    assert snapshot(run) == before and not (run / PREVIOUS).exists()


def test_lock_is_held_for_the_run_and_released_after(tmp_path, monkeypatch):
    out = tmp_path / "run"
    seen = []
    original = Searcher.train_epoch

    def epoch(self, *args):
        with pytest.raises(GradnasError, match="in use"):
            RunDir(out, resume=True)
        seen.append(True)
        return original(self, *args)

    monkeypatch.setattr(Searcher, "train_epoch", epoch)
    assert main(["search", *TINY_SEARCH, "--epochs", "1", "--out", str(out)]) == 0
    assert seen
    RunDir(out, resume=True).release()  # free again


@pytest.mark.parametrize("epoch, hint", [(0, "nothing to resume"), (1, "resume with gradnas search --resume")])
def test_ctrl_c_says_what_there_is_to_resume(epoch, hint, tmp_path, monkeypatch, capsys):
    original = Searcher.train_epoch

    def interrupted(self, e, *args):
        if e == epoch:
            raise KeyboardInterrupt
        return original(self, e, *args)

    monkeypatch.setattr(Searcher, "train_epoch", interrupted)
    assert main(["search", *TINY_SEARCH, "--epochs", "2", "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and hint in err
