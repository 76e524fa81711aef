"""A search space defined in a user's module, outside the package, goes end to end: search (DARTS and IS-DARTS),
derivation, genotype JSON, show and diagrams, train, eval and export; the CLI imports it with --plugin.

The space is an NB201-style cell with four nodes instead of three (10 edges), registered as one descriptor."""
from __future__ import annotations

import json
from dataclasses import replace
from functools import partial

import pytest
import torch

from gradnas.cli import main
from gradnas.config import resolve_config
from gradnas.errors import GradnasError
from gradnas.genotypes import CellGenotype, Genotype, genotype_text, load_genotype, validate
from gradnas.models import NB201Network
from gradnas.search.loop import Searcher, search
from gradnas.spaces import NB201, SPACES, NB201Supernet, register_space
from gradnas.train import evaluate_saved, export_model, resolve_train_config, train

FOUR = register_space(replace(NB201, name="nb201-four", supernet=partial(NB201Supernet, nodes=4),
                              cell=replace(NB201.cell, num_nodes=4), nodes=4, text_form=None, benchmark=None))
TINY = {"space": "nb201-four", "channels": 4, "layers": 1, "epochs": 1, "batch_size": 16, "steps_per_epoch": 2,
        "progress": False}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_descriptor_shapes_the_supernet_and_validation():
    assert SPACES["nb201-four"] is FOUR and FOUR.in_degrees() == (1, 2, 3, 4)
    net = FOUR.supernet(C=4, layers=1)
    assert net.in_degrees == (1, 2, 3, 4) and net.concat == (4,) and all(len(c.edges) == 10 for c in net.cells)
    three = Genotype("nb201-four", CellGenotype(tuple(tuple(("skip_connect", s) for s in range(j)) for j in (1, 2, 3)),
                                                (3,)))
    with pytest.raises(GradnasError, match="3 nodes; nb201-four cells have 4"):
        validate(three)


def test_user_space_end_to_end(tmp_path, capsys):
    searcher = Searcher(resolve_config({**TINY, "out": str(tmp_path / "s")}))
    with torch.no_grad():  # conv3×3 strongest everywhere but on the edges into node 4, where skip wins
        alpha = searcher.model.arch.alpha["normal"]
        alpha[:, 3] += 1
        alpha[6:, 1] += 2
    genotype = searcher.run().genotype
    assert genotype.space == "nb201-four" and [len(n) for n in genotype.normal.nodes] == [1, 2, 3, 4]
    assert [op for op, _ in genotype.normal.nodes[3]] == ["skip_connect"] * 4 and genotype.normal.concat == (4,)
    saved = json.loads((tmp_path / "s" / "genotype.json").read_text())
    assert saved["space"] == "nb201-four" and load_genotype(tmp_path / "s" / "genotype.json") == genotype

    assert main(["show", str(tmp_path / "s")]) == 0
    assert genotype_text(genotype) in capsys.readouterr().out and (tmp_path / "s" / "cell.svg").stat().st_size > 0

    run = tmp_path / "t"
    trained = train(resolve_train_config({"genotype": str(tmp_path / "s"), "data": "digits", "channels": 4,
                                          "layers": 1, "epochs": 1, "batch_size": 16, "steps_per_epoch": 2,
                                          "eval_every": 100, "progress": False, "out": str(run)}))
    assert isinstance(trained.model, NB201Network) and len(trained.model.cells[0].nodes) == 4
    assert evaluate_saved(run)["images"] > 0
    exported = export_model(run, "torchscript", tmp_path / "model.ts")
    assert exported.max_abs_diff is not None and exported.max_abs_diff < 1e-4


def test_progressive_shrinking_in_the_user_space(tmp_path):
    """IS-DARTS compares each edge's ops, as in NB201 (the space's ``shrink``): one op per edge at the end."""
    result = search(resolve_config({**TINY, "method": "is-darts", "epochs": 3, "shrink_rate": 0.5,
                                    "shrink_interval": 1, "iim_samples": 16, "out": str(tmp_path)}))
    assert [len(n) for n in result.genotype.normal.nodes] == [1, 2, 3, 4]
    assert result.model.arch.mask("normal").sum(1).eq(1).all()


def test_cli_imports_a_space_from_a_plugin(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_space.py").write_text(
        "from dataclasses import replace\nfrom functools import partial\n"
        "from gradnas.spaces import NB201, NB201Supernet, register_space\n"
        "register_space(replace(NB201, name='nb201-4', supernet=partial(NB201Supernet, nodes=4),\n"
        "                       cell=replace(NB201.cell, num_nodes=4), nodes=4, text_form=None, benchmark=None))\n")
    monkeypatch.chdir(tmp_path)
    argv = ["search", "--space", "nb201-4", "--channels", "4", "--layers", "1", "--epochs", "1", "--batch-size", "16",
            "--steps-per-epoch", "1", "--no-progress", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert "unknown search space 'nb201-4'" in capsys.readouterr().err
    assert main(["--plugin", "my_space", *argv]) == 0
    assert load_genotype(tmp_path / "run" / "genotype.json").space == "nb201-4"


def test_the_cell_as_data():
    """Which edge leaves which node, in the supernet's edge order: what the batched executor groups by."""
    assert SPACES["nb201"].edges() == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
    assert SPACES["darts"].edges()[:5] == ((0, 2), (1, 2), (0, 3), (1, 3), (2, 3)) and len(SPACES["darts"].edges()) == 14
    assert len(SPACES["darts"].edges(5)) == 20 and len(FOUR.edges()) == 10
