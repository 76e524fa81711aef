"""NAS-Bench-201 from its official files: the NATS-Bench topology benchmark, read through ``nats_bench``.

Needs ``pip install 'gradnas[nats]'`` and the benchmark's "simple" archive, ``NATS-tss-v1_0-3ffb9-simple`` (a
directory with ``meta.pickle.pbz2`` and one small file per architecture), unpacked into ``$TORCH_HOME``
(default ``~/.torch``) or into a directory passed as ``path``. It is opened in nats_bench's fast mode: the
start reads only the list of architectures and each query loads the one file of its architecture, never
the whole benchmark.

The numbers follow the benchmark's own conventions, averaged over its trial seeds: CIFAR-10 validation
accuracy of the net trained on the train split (``cifar10-valid``, x-valid) and test accuracy of the net
trained on train + valid (``cifar10``, ori-test); CIFAR-100 and ImageNet16-120 validation and test accuracy on
the x-valid and x-test halves of their test sets. Parameters and FLOPs in millions; latency in milliseconds
as the benchmark measured it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import GradnasError
from ..extras import require
from ..genotypes import Genotype, format_arch_string, parse_arch_string

BASE_NAME = "NATS-tss-v1_0-3ffb9-simple"
META = "meta.pickle.pbz2"
#: our dataset name → (the benchmark's dataset for validation accuracy, for test accuracy and costs)
DATASETS = {"cifar10": ("cifar10-valid", "cifar10"), "cifar100": ("cifar100", "cifar100"),
            "imagenet16-120": ("ImageNet16-120", "ImageNet16-120")}
EPOCHS = (12, 200)


@dataclass(frozen=True)
class NATSEntry:
    index: int
    arch: str
    dataset: str
    epochs: int
    valid_acc: float
    test_acc: float
    params_m: float
    flops_m: float
    latency_ms: float | None


def torch_home() -> Path:
    return Path(os.environ.get("TORCH_HOME") or Path.home() / ".torch").expanduser()


def benchmark_dir(path: str | Path | None = None) -> Path:
    """The ``NATS-tss-v1_0-3ffb9-simple`` directory: ``path`` itself or inside it, else inside $TORCH_HOME."""
    root = Path(path).expanduser() if path else torch_home()
    for d in (root, root / BASE_NAME):
        if (d / META).is_file():
            return d
    raise GradnasError(f"NATS-Bench topology files not found: no {BASE_NAME}/{META} in {root}. Download "
                       f"{BASE_NAME} (NATS-Bench's topology benchmark, the 'simple' archive) and unpack it into "
                       "$TORCH_HOME (default ~/.torch) or into a directory passed with --nats-dir DIR")


def dataset_key(name: str) -> str:
    key = name.lower().replace("_", "-")
    key = {"imagenet16": "imagenet16-120", "imagenet": "imagenet16-120"}.get(key, key)
    if key not in DATASETS:
        raise GradnasError(f"NATS-Bench: unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return key


class NATSBench:
    """Look-ups of single architectures in the official NATS-Bench topology files."""

    def __init__(self, path: str | Path | None = None):
        self.dir = benchmark_dir(path)
        nats_bench = require("nats_bench", "reading the NATS-Bench files")
        self.api = nats_bench.create(str(self.dir), "tss", fast_mode=True, verbose=False)

    def index(self, arch: str | Genotype) -> tuple[int, str]:
        text = format_arch_string(arch if isinstance(arch, Genotype) else parse_arch_string(arch))
        index = self.api.query_index_by_arch(text)
        if index < 0:
            raise GradnasError(f"NATS-Bench: no entry for {text}")
        return index, text

    def query(self, arch: str | Genotype, dataset: str = "cifar10", epochs: int = 200) -> NATSEntry:
        """Validation and test accuracy, parameters, FLOPs and latency of ``arch`` trained ``epochs`` (12 or 200)
        epochs on ``dataset``."""
        if epochs not in EPOCHS:
            raise GradnasError(f"NATS-Bench holds results for {' and '.join(map(str, EPOCHS))} epochs, not {epochs}")
        key = dataset_key(dataset)
        index, text = self.index(arch)
        valid_set, test_set = DATASETS[key]
        try:
            valid = self._info(index, valid_set, epochs)
            test = valid if test_set == valid_set else self._info(index, test_set, epochs)
            cost = self.api.get_cost_info(index, test_set, hp=str(epochs))
        except (AssertionError, OSError, EOFError, ValueError, KeyError) as err:
            raise GradnasError(f"NATS-Bench: cannot read architecture {index} from "
                               f"{self.dir / f'{index:06d}.pickle.pbz2'} ({type(err).__name__}: {err}); the "
                               f"{BASE_NAME} directory may be incomplete") from None
        latency = cost.get("latency")
        return NATSEntry(index, text, key, epochs, float(valid["valid-accuracy"]), float(test["test-accuracy"]),
                         float(cost["params"]), float(cost["flops"]), 1000 * float(latency) if latency else None)

    def _info(self, index: int, dataset: str, epochs: int) -> dict[str, Any]:
        return self.api.get_more_info(index, dataset, hp=str(epochs), is_random=False)  # mean over seeds


def format_nats(entries: Iterable[NATSEntry]) -> str:
    lines = []
    for e in entries:
        if not lines:
            lines.append(f"NATS-Bench #{e.index} {e.arch}")
        latency = f"  latency {e.latency_ms:.2f} ms" if e.latency_ms is not None else ""
        lines.append(f"  {e.dataset:<15}{e.epochs:>4} epochs: valid {e.valid_acc:.2f}  test {e.test_acc:.2f}  "
                     f"params {e.params_m:.3f} M  FLOPs {e.flops_m:.2f} M{latency}")
    return "\n".join(lines)
