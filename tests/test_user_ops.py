"""An op registered from a user's module, outside the package, goes end to end: search, derivation, genotype
JSON, show and diagrams, train, eval and export; the CLI imports such a module with --plugin."""
from __future__ import annotations

import torch
import torch.nn as nn

from gradnas.cli import main
from gradnas.config import resolve_config
from gradnas.edges import MixedOp
from gradnas.genotypes import load_genotype, parse_genotype
from gradnas.search.loop import Searcher
from gradnas.spaces import NB201_OPS, OPS
from gradnas.train import evaluate_saved, export_model, resolve_train_config, train


class Conv5x5(nn.Sequential):
    """The user's op: ReLU, 5×5 conv, BN (NB201's nor_conv with a larger kernel)."""

    def __init__(self, C: int, stride: int, affine: bool, groups: int):
        super().__init__(nn.ReLU(), nn.Conv2d(C, C, 5, stride, 2, bias=False, groups=groups),
                         nn.BatchNorm2d(C, affine=affine))


OPS["nb201"].register("nor_conv_5x5")(Conv5x5)
ALL_5X5 = "|nor_conv_5x5~0|+|nor_conv_5x5~0|nor_conv_5x5~1|+|nor_conv_5x5~0|nor_conv_5x5~1|nor_conv_5x5~2|"


def test_user_op_end_to_end(tmp_path, capsys):
    ops = [*NB201_OPS, "nor_conv_5x5"]
    config = resolve_config({"space": "nb201", "ops": ops, "channels": 4, "layers": 1, "epochs": 1,
                             "batch_size": 16, "steps_per_epoch": 2, "progress": False, "out": str(tmp_path / "s")})
    searcher = Searcher(config)
    assert all(isinstance(m.ops[-1], Conv5x5) for m in searcher.model.modules() if isinstance(m, MixedOp))
    with torch.no_grad():  # make the user's op the strongest on every edge, so the derived cell holds it
        for alpha in searcher.model.arch.alpha.values():
            alpha[:, ops.index("nor_conv_5x5")] += 1
    result = searcher.run()
    assert result.genotype == parse_genotype(ALL_5X5) == load_genotype(tmp_path / "s" / "genotype.json")

    assert main(["show", str(tmp_path / "s")]) == 0
    assert "|nor_conv_5x5~0|" in capsys.readouterr().out and (tmp_path / "s" / "cell.svg").stat().st_size > 0

    run = tmp_path / "t"
    trained = train(resolve_train_config({"genotype": str(tmp_path / "s"), "data": "digits", "channels": 4,
                                          "layers": 1, "epochs": 1, "batch_size": 16, "steps_per_epoch": 2,
                                          "eval_every": 100, "progress": False, "out": str(run)}))
    assert sum(isinstance(m, Conv5x5) for m in trained.model.modules()) == 3 * 6  # 3 cells × 6 edges
    assert evaluate_saved(run)["images"] > 0
    exported = export_model(run, "torchscript", tmp_path / "model.ts")
    assert exported.max_abs_diff is not None and exported.max_abs_diff < 1e-4


def test_cli_imports_a_plugin_module(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_gradnas_ops.py").write_text(
        "import torch.nn as nn\nfrom gradnas.spaces import OPS\n"
        "OPS['nb201'].register('max_pool_5x5')(lambda C, stride, affine, groups: nn.MaxPool2d(5, stride, 2))\n")
    monkeypatch.chdir(tmp_path)
    arch = "|max_pool_5x5~0|+|skip_connect~0|max_pool_5x5~1|+|skip_connect~0|skip_connect~1|max_pool_5x5~2|"
    assert main(["show", arch]) == 2
    assert "unknown op 'max_pool_5x5'" in capsys.readouterr().err
    assert main(["--plugin", "my_gradnas_ops", "show", arch]) == 0
    assert main(["--plugin", "no_such_module", "show", arch]) == 2
    assert "cannot import plugin 'no_such_module'" in capsys.readouterr().err
