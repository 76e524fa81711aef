"""The README's quick start, run as written (one epoch of it): the search learns and moves its architecture weights."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from gradnas.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
UNIFORM = 1 / 8  # softmax over the DARTS space's 8 ops at α = 0


def quick_start_search() -> list[str]:
    """The arguments of the README quick start's `gradnas search` line, its comment dropped."""
    block = README.read_text().split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    line = next(line for line in block.splitlines() if line.startswith("gradnas search"))
    return shlex.split(line.split("#", 1)[0])[1:]


def test_quick_start_search_learns_and_moves_the_weights_in_its_first_epoch(tmp_path):
    """At the published architecture rate (3e-4) one epoch of 11 Adam steps moves no softmax weight by more than
    0.001 from 1/8; the quick start's rate must move them visibly, since its heat-map is what a newcomer sees."""
    argv = quick_start_search()
    out = argv[argv.index("--out") + 1]
    argv[argv.index("--out") + 1] = str(tmp_path / Path(out).name)
    assert main([*argv, "--epochs", "1", "--no-progress"]) == 0
    record = json.loads((tmp_path / Path(out).name / "log.jsonl").read_text().splitlines()[-1])
    assert record["train_acc"] > 20, record["train_acc"]  # chance: 10 %
    weights = [w for cell in record["arch"].values() for row in cell for w in row]
    assert max(abs(w - UNIFORM) for w in weights) > 0.005, (min(weights), max(weights))
