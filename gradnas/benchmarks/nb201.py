"""NAS-Bench-201 accuracy look-up (docs/methods.md §1.2).

The package ships the 200-epoch test accuracies of all 15,625 architectures (``data/nb201_accuracy.npz``, see
``data/README.md`` for provenance and licence), used by default. ``--nb201-table`` or $GRADNAS_NB201_TABLE
select another table: a CSV ``index,arch,cifar10_test,cifar100_test,imagenet16_120_test`` or an ``.npz``
written by :meth:`NB201Table.save`.

Each architecture is stored as one integer: its 6 op indices (NB201_OPS order) as base-5 digits, edge 0 most
significant, in docs/methods.md §1.2 edge order (1←0, 2←0, 2←1, 3←0, 3←1, 3←2). The table keeps only the index,
code and float32 accuracy arrays, plus a code → row map and sorted accuracies for ranking (≈ 0.6 MB for all
15,625 rows, against 1.8 MB of CSV); arch strings are rebuilt on demand.

Ranks and percentiles are over the rows of the loaded table: rank 1 is the best, tied architectures share
the better rank (1 + the number strictly better), and the percentile is the share of architectures strictly
worse, ×100.
"""
from __future__ import annotations

import csv
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GradnasError, first_line
from ..genotypes import Genotype, format_arch_string, nb201_from_edges, parse_arch_string
from ..spaces.ops import NB201_OPS

ENV_VAR, CLI_OPTION = "GRADNAS_NB201_TABLE", "--nb201-table"
PACKAGED = Path(__file__).parent / "data" / "nb201_accuracy.npz"
DATASETS = {"cifar10": "cifar10_test", "cifar100": "cifar100_test", "imagenet16": "imagenet16_120_test"}
N_EDGES = 6
_PLACE = len(NB201_OPS) ** np.arange(N_EDGES - 1, -1, -1)  # base-5 place value of each edge's digit
_OP_INDEX = {op: i for i, op in enumerate(NB201_OPS)}


@dataclass(frozen=True)
class NB201Entry:
    index: int
    arch: str
    cifar10: float
    cifar100: float
    imagenet16: float
    rank_cifar10: int
    percentile_cifar10: float


def encode(arch: str | Genotype) -> int:
    """The base-5 code of an arch string or NB201 genotype (validated)."""
    # Formatting a Genotype first refuses DARTS and per-cell genotypes with a clear message.
    g = parse_arch_string(arch if isinstance(arch, str) else format_arch_string(arch))
    return int(sum(_OP_INDEX[op] * int(p) for (op, _), p in zip(g.normal.pairs, _PLACE)))


def decode(code: int) -> str:
    return format_arch_string(nb201_from_edges([NB201_OPS[d] for d in _digits(np.array([code]))[0]]))


def _digits(codes: np.ndarray) -> np.ndarray:
    """(N,) codes → (N, 6) op indices, one column per edge."""
    return (codes[:, None] // _PLACE) % len(NB201_OPS)


class NB201Table:
    def __init__(self, index: np.ndarray, codes: np.ndarray, acc: np.ndarray):
        """``index`` (N,) table indices, ``codes`` (N,) arch codes, ``acc`` (N, 3) test accuracies in DATASETS order."""
        self.index = np.asarray(index, np.int32)
        self.codes = np.asarray(codes, np.int32)
        self.acc = np.asarray(acc, np.float32)
        if len(self.codes) and not 0 <= self.codes.min() <= self.codes.max() < len(NB201_OPS) ** N_EDGES:
            raise GradnasError("NB201 table: architecture codes must lie in [0, 5^6)")
        self._row = np.full(len(NB201_OPS) ** N_EDGES, -1, np.int32)  # code → row, -1 where absent
        self._row[self.codes] = np.arange(len(self.codes))
        self._sorted = np.sort(self.acc, axis=0)  # per-dataset sorted accuracies: ranks by binary search
        if (self._row >= 0).sum() != len(self.codes):
            dup = np.flatnonzero(np.bincount(self.codes) > 1)[0]
            raise GradnasError(f"NB201 table: architecture {decode(int(dup))} appears more than once")

    @classmethod
    def from_path(cls, path: str | Path | None = None) -> NB201Table:
        """Load the table from ``path``, else from $GRADNAS_NB201_TABLE, else the one shipped with the package."""
        path = path or os.environ.get(ENV_VAR) or PACKAGED
        path = Path(path).expanduser()
        if not path.is_file():
            raise GradnasError(f"NAS-Bench-201 table {path} does not exist (set by {CLI_OPTION} or {ENV_VAR})")
        if path.suffix == ".npz":
            return cls._from_npz(path)
        try:
            return cls._from_csv(path)
        except (UnicodeDecodeError, csv.Error) as e:  # a binary file, NUL bytes
            raise GradnasError(f"NAS-Bench-201 table {path} is not a CSV text file ({first_line(e, 80)})") from None

    @classmethod
    def _from_npz(cls, path: Path) -> NB201Table:
        try:
            with np.load(path) as f:  # allow_pickle stays False: arrays only
                missing = [k for k in ("index", "codes", "acc") if k not in f.files]
                if missing:
                    raise GradnasError(f"{path}: missing array(s) {', '.join(missing)}")
                return cls(f["index"], f["codes"], f["acc"])
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise GradnasError(f"NAS-Bench-201 table {path} is not a readable .npz file ({first_line(e, 80)})") from None

    @classmethod
    def _from_csv(cls, path: Path) -> NB201Table:
        index, codes, acc = [], [], []
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            missing = [c for c in ("index", "arch", *DATASETS.values()) if c not in header]
            if missing:
                raise GradnasError(f"{path}: missing column(s) {', '.join(missing)}")
            cols = [header.index(c) for c in ("index", "arch", *DATASETS.values())]
            for line, row in enumerate(reader, 2):
                try:
                    if len(row) != len(header):
                        raise ValueError(f"{len(row)} fields, the header has {len(header)}")
                    i, arch, *accs = (row[c] for c in cols)
                    index.append(int(i))
                    codes.append(encode(arch))
                    acc.append([float(a) for a in accs])
                    if not np.isfinite(acc[-1]).all():
                        raise ValueError(f"non-finite accuracy {', '.join(accs)}")
                except (ValueError, GradnasError) as e:
                    raise GradnasError(f"{path}, line {line}: {e}") from None
        if not codes:
            raise GradnasError(f"{path}: the table has no rows")
        return cls(np.array(index), np.array(codes), np.array(acc))

    def save(self, path: str | Path) -> None:
        """Write the table as a compressed ``.npz`` (the form the package ships; about 0.2 MB for all rows)."""
        np.savez_compressed(path, index=self.index, codes=self.codes.astype(np.uint16), acc=self.acc)

    def __len__(self) -> int:
        return len(self.codes)

    def _find(self, arch: str | Genotype) -> int:
        code = encode(arch)
        row = int(self._row[code])
        if row < 0:
            raise GradnasError(f"NB201 table: no entry for {decode(code)}")
        return row

    def _entry(self, row: int) -> NB201Entry:
        # The CSV holds 4 decimals; rounding hides the float32 storage noise (94.37, not 94.37000274…).
        c10, c100, in16 = (round(float(a), 4) for a in self.acc[row])
        worse = int(np.searchsorted(self._sorted[:, 0], self.acc[row, 0], side="left"))
        return NB201Entry(int(self.index[row]), decode(int(self.codes[row])), c10, c100, in16,
                          self._rank(row, 0), round(100.0 * worse / len(self), 4))

    def _rank(self, row: int, column: int) -> int:
        better = len(self) - int(np.searchsorted(self._sorted[:, column], self.acc[row, column], side="right"))
        return better + 1

    def lookup(self, arch: str | Genotype) -> NB201Entry:
        return self._entry(self._find(arch))

    def rank(self, arch: str | Genotype, dataset: str = "cifar10") -> int:
        """1 + the number of architectures with a strictly higher test accuracy on ``dataset``."""
        if dataset not in DATASETS:
            raise GradnasError(f"NB201 table: unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
        return self._rank(self._find(arch), list(DATASETS).index(dataset))

    def top_k(self, edge_probs: object, k: int = 5) -> list[tuple[float, NB201Entry]]:
        """The ``k`` table architectures most probable when each edge picks its op independently with
        ``edge_probs`` (6×5, docs/methods.md §1.2 edge order × NB201_OPS order); ties go to the lower code."""
        probs = np.asarray(edge_probs.detach().cpu() if hasattr(edge_probs, "detach") else edge_probs, np.float64)
        if probs.shape != (N_EDGES, len(NB201_OPS)):
            raise GradnasError(f"top_k: edge_probs must have shape (6, 5), got {tuple(probs.shape)}")
        if not np.isfinite(probs).all() or (probs < 0).any():
            raise GradnasError("top_k: edge_probs must be finite and non-negative")
        if k < 1:
            raise GradnasError(f"top_k: k must be at least 1, got {k}")
        with np.errstate(divide="ignore"):  # log 0 = -inf ranks impossible architectures last
            logp = np.log(probs)[np.arange(N_EDGES), _digits(self.codes)].sum(axis=1)
        best = np.lexsort((self.codes, -logp))[:k]  # a full sort of ≤ 15,625 sums takes about a millisecond
        return [(float(np.exp(logp[r])), self._entry(int(r))) for r in best]


def format_entry(e: NB201Entry) -> str:
    """One line for the CLI."""
    return (f"NB201 #{e.index} {e.arch}  test acc CIFAR-10 {e.cifar10:.2f} | CIFAR-100 {e.cifar100:.2f} | "
            f"ImageNet16-120 {e.imagenet16:.2f}  (CIFAR-10 rank {e.rank_cifar10}, "
            f"better than {e.percentile_cifar10:.2f}% of architectures)")


def search_report(table: NB201Table, genotype: Genotype, edge_probs: object, k: int = 5) -> str:
    """What a NB201 search prints: the found cell's accuracies and rank, then the k most probable cells."""
    lines = ["found: " + format_entry(table.lookup(genotype)), f"{k} most probable under the final weights:"]
    lines += [f"  p={p:.4f}  {format_entry(e)}" for p, e in table.top_k(edge_probs, k)]
    return "\n".join(lines)
