"""Training found architectures: recipes, short runs (API and CLI), resume equivalence, NaN guard, evaluation
numbers, MAC counts, saved models and exports."""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import gradnas
from gradnas.cli import main
from gradnas.data import ImageDataset
from gradnas.errors import GradnasError
from gradnas.genotypes import PUBLISHED, load_genotype, parse_genotype, per_cell_genotype, save_genotype
from gradnas.models import NB201Network, NetworkCIFAR, count_parameters
from gradnas.models.saved import build_network, read_model
from gradnas.search.checkpoint import load_checkpoint
from gradnas.train import Trainer, count_macs, evaluate, export_model, resolve_train_config, train
from gradnas.train.evaluate import eval_loader
from gradnas.train.recipes import learning_rate
from gradnas.train.trainer import CHECKPOINT, network_kwargs
from helpers import killed_in_epoch, nan_after

IS_DARTS_NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
TINY = {"darts": dict(channels=4, layers=3), "nb201": dict(channels=4, layers=1)}


def synthetic(n_train: int = 48, n_test: int = 20, size: int = 32, classes: int = 10, seed: int = 0):
    g = np.random.default_rng(seed)
    return dict(x_train=g.integers(0, 256, (n_train, 3, size, size), dtype=np.uint8),
                y_train=np.arange(n_train) % classes,
                x_test=g.integers(0, 256, (n_test, 3, size, size), dtype=np.uint8),
                y_test=np.arange(n_test) % classes)


@pytest.fixture(scope="module")
def data() -> ImageDataset:
    a = {k: torch.from_numpy(v) for k, v in synthetic().items()}
    return ImageDataset("synthetic", a["x_train"], a["y_train"].long(), a["x_test"], a["y_test"].long(), 10,
                        (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), crop_padding=4)


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, **synthetic())
    return path


def tiny(tmp_path, genotype="darts_v2", **kw):
    space = "nb201" if genotype.startswith("|") or genotype.startswith("nb201") else "darts"
    return resolve_train_config({"genotype": genotype, "epochs": 2, "batch_size": 16, "steps_per_epoch": 2,
                                 "eval_every": 100, "progress": False, "out": str(tmp_path / "run"),
                                 **TINY[space], **kw})


# ---------------------------------------------------------------------------------------------- recipes

def test_cifar_recipe_is_the_published_one():
    c = resolve_train_config({"genotype": "darts_v2"})
    assert (c.recipe, c.network, c.layers, c.channels, c.epochs, c.batch_size) == ("cifar", "cifar", 20, 36, 600, 96)
    assert (c.lr, c.lr_min, c.lr_schedule, c.momentum, c.nesterov) == (0.025, 0.0, "cosine", 0.9, False)
    assert (c.weight_decay, c.grad_clip, c.cutout, c.drop_path, c.auxiliary, c.auxiliary_weight) == (
        3e-4, 5.0, 0.5, 0.2, True, 0.4)
    is_darts = resolve_train_config({"genotype": "is_darts", "recipe": "cifar-is-darts"})
    assert (is_darts.warmup_epochs, is_darts.nesterov) == (5, True)


def test_pc_darts_and_is_darts_imagenet_recipes_follow_their_authors_code():
    pc = resolve_train_config({"genotype": "pc_darts_cifar", "recipe": "cifar-pc-darts"})
    assert (pc.drop_path, pc.epochs, pc.batch_size, pc.lr, pc.cutout, pc.auxiliary_weight) == \
        (0.3, 600, 96, 0.025, 0.5, 0.4)  # cutout 16 px on 32-px CIFAR
    im = resolve_train_config({"genotype": "is_darts", "recipe": "imagenet-is-darts"})
    assert (im.nesterov, im.lr, im.lr_schedule, im.warmup_epochs, im.weight_decay, im.label_smoothing) == \
        (True, 0.1, "cosine", 5, 3e-5, 0.1)


def test_imagenet_and_nb201_recipes():
    c = resolve_train_config({"genotype": "darts_v2", "recipe": "imagenet"})
    assert (c.network, c.layers, c.channels, c.epochs, c.batch_size, c.lr, c.lr_schedule, c.lr_decay) == (
        "imagenet", 14, 48, 250, 128, 0.1, "exponential", 0.97)
    assert (c.weight_decay, c.label_smoothing, c.auxiliary_weight, c.drop_path) == (3e-5, 0.1, 0.4, 0.0)
    n = resolve_train_config({"genotype": IS_DARTS_NB201})  # picked from the genotype
    assert (n.recipe, n.network, n.channels, n.layers, n.epochs, n.batch_size, n.lr, n.nesterov) == (
        "nb201", "nb201", 16, 5, 200, 256, 0.1, True)
    assert (n.weight_decay, n.cutout, n.auxiliary, n.grad_clip) == (5e-4, 0, False, 0.0)


def test_recipe_networks_have_the_published_sizes():
    # The recipes' networks are those of the docs/methods.md §7 weight oracles (10 classes, aux head excluded).
    ten = ImageDataset("c10", torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(1, dtype=torch.long),
                       torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(1, dtype=torch.long), 10,
                       (0.5,) * 3, (0.25,) * 3, 4)
    for spec, expected in (("darts_v2", 3_349_342), (IS_DARTS_NB201, 1_288_506)):
        c = resolve_train_config({"genotype": spec})
        net = build_network(c.network, parse_genotype(spec), **network_kwargs(c, ten))
        assert count_parameters(net) == expected


def test_learning_rate_schedules():
    c = resolve_train_config({"genotype": "darts_v2", "epochs": 10})
    assert learning_rate(c, 0) == 0.025 and learning_rate(c, 5) == pytest.approx(0.0125)
    assert learning_rate(c, 9) == pytest.approx(0.025 * (1 + math.cos(math.pi * 0.9)) / 2)
    w = resolve_train_config({"genotype": "darts_v2", "epochs": 10, "warmup_epochs": 5})
    assert [learning_rate(w, e) for e in range(5)] == pytest.approx([0.005, 0.01, 0.015, 0.02, 0.025])
    assert learning_rate(w, 5) == 0.025 and learning_rate(w, 9) < learning_rate(w, 8)
    im = resolve_train_config({"genotype": "darts_v2", "recipe": "imagenet"})
    assert learning_rate(im, 3) == pytest.approx(0.1 * 0.97 ** 3)


def test_per_cell_genotypes_fix_the_depth(tmp_path):
    v1, v2 = PUBLISHED["darts_v1"], PUBLISHED["darts_v2"]
    cells = [v1.normal, v1.normal, v2.reduce, v2.normal, v2.reduce, v1.normal, v1.normal]  # reductions at 2, 4
    path = save_genotype(per_cell_genotype(cells), tmp_path / "g.json")
    assert resolve_train_config({"genotype": str(path)}).layers == 7
    assert resolve_train_config({"genotype": "darts_v2"}).layers == 20


@pytest.mark.parametrize("overrides, message", [
    ({"genotype": IS_DARTS_NB201, "recipe": "cifar"}, "--recipe nb201"),
    ({"genotype": "darts_v2", "recipe": "nb201"}, "DARTS recipe"),
    ({"genotype": IS_DARTS_NB201, "auxiliary": True}, "no auxiliary head"),
    ({"genotype": "darts_v2", "recipe": "nope"}, "unknown training recipe"),
    ({"genotype": "darts_v2", "lr_schedule": "step"}, "lr_schedule"),
    ({"genotype": "darts_v2", "warmup_epochs": 600}, "warmup_epochs"),
    ({"genotype": "darts_v2", "epoch": 3}, "unknown option"),
    ({}, "no genotype"),
])
def test_bad_training_options(overrides, message):
    with pytest.raises(GradnasError, match=message):
        resolve_train_config(overrides)


# ---------------------------------------------------------------------------------------------- runs

@pytest.mark.parametrize("aux, drop", [(True, 0.2), (False, 0.0)])
def test_api_training_run(tmp_path, data, aux, drop):
    result = train(tiny(tmp_path, auxiliary=aux, drop_path=drop, eval_every=1), data)
    out = tmp_path / "run"
    for name in ("config.yaml", "env.json", "log.jsonl", "genotype.json", "model.pt", "eval.json", CHECKPOINT):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    assert load_genotype(out / "genotype.json") == PUBLISHED["darts_v2"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1]
    assert [r["drop_path"] for r in log] == [0.0, drop / 2]  # 0.2 · epoch / epochs
    assert [r["lr"] for r in log] == pytest.approx([0.025, 0.0125])
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "seconds"} <= set(log[-1])
    assert (result.model.auxiliary_head is not None) == aux
    assert json.loads((out / "eval.json").read_text()) == result.metrics
    assert result.metrics["test_acc"] == log[-1]["test_acc"]
    # The saved model loads in one call, in eval mode, without the aux head, and computes the same logits.
    model = gradnas.load_model(out)
    assert not model.training and model.auxiliary_head is None
    x = torch.randn(3, 3, 32, 32)
    result.model.eval()
    torch.testing.assert_close(model(x)[0], result.model(x)[0])
    assert result.metrics["params"] == count_parameters(model)


def test_auxiliary_loss_is_weighted(tmp_path, data):
    trainer = Trainer(tiny(tmp_path, auxiliary_weight=0.4, drop_path=0.0), data)
    x, y = next(iter(trainer.train_loader))
    trainer.model.train()
    with torch.no_grad():
        logits, aux = trainer.model(x)
    loss, total, _ = trainer.step(x, y)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y))
    torch.testing.assert_close(total, loss + 0.4 * F.cross_entropy(aux, y))


def test_nb201_training_run(tmp_path, data):
    result = train(tiny(tmp_path, IS_DARTS_NB201), data)
    assert isinstance(result.model, NB201Network) and "drop_path" not in result.history[0]
    assert read_model(tmp_path / "run").network == "nb201"


def test_resumed_training_equals_an_uninterrupted_run(tmp_path, data, monkeypatch):
    full = train(tiny(tmp_path / "a", epochs=3), data)
    cut = tiny(tmp_path / "b", epochs=3)
    with killed_in_epoch(monkeypatch, Trainer, 2):
        train(cut, data)
    assert load_checkpoint(tmp_path / "b" / "run" / CHECKPOINT)["epoch"] == 2
    resumed = train(cut, data, resume=True)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(resumed.history) == strip(full.history)


def test_nan_loss_stops_with_one_line_and_keeps_the_checkpoint(tmp_path, data):
    trainer = Trainer(tiny(tmp_path, epochs=3), data)
    trainer.criterion = nan_after(trainer.criterion, 5)  # aux on: two criterion calls per step
    with pytest.raises(GradnasError, match=r"non-finite loss at epoch 2, step \d"):
        trainer.run()
    state = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_images_too_small_for_the_auxiliary_head(tmp_path, capsys):
    # digits are 8×8: the aux head would see 2×2 features
    assert main(["train", "darts_v2", "--data", "digits", "--channels", "4", "--layers", "3", "--out",
                 str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert "auxiliary head" in err and "--no-auxiliary" in err and len(err.splitlines()) == 1


def test_refuses_to_train_into_a_search_directory(tmp_path, data):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(GradnasError, match="holds a search run"):
        Trainer(tiny(tmp_path), data)


def test_cli_train_eval_export(tmp_path, npz, capsys):
    out, search = tmp_path / "cli", tmp_path / "search"
    save_genotype(parse_genotype(IS_DARTS_NB201), search / "genotype.json")  # a search's output directory
    args = ["train", str(search), "--data", str(npz), "--channels", "4", "--layers", "1", "--epochs", "1",
            "--batch-size", "16", "--steps-per-epoch", "2", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    assert "test top-1" in capsys.readouterr().out
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0  # already complete: evaluates and saves
    assert "test top-1" in capsys.readouterr().out and read_model(out).network == "nb201"
    assert main(["eval", str(out), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics == json.loads((out / "eval.json").read_text())
    assert metrics["images"] == 20 and metrics["params"] == count_parameters(gradnas.load_model(out))
    assert "test_top5" not in metrics  # 10 classes
    assert main(["eval", str(out)]) == 0 and "multiply-accumulates" in capsys.readouterr().out
    assert main(["export", str(out), "--format", "torchscript", "--out", str(tmp_path / "m.ts")]) == 0
    assert "largest difference" in capsys.readouterr().out
    assert main(["show", str(out)]) == 0  # a training directory is a genotype source too


@pytest.mark.parametrize("argv, message", [
    (["train"], "no genotype"),
    (["eval", "/no/such/run"], "no trained model"),
    (["export", "/no/such/run", "--format", "torchscript", "--out", "x.ts"], "no trained model"),
    (["train", "--resume", "/no/such/run"], "no checkpoint"),
])
def test_bad_cli_input_is_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gradnas: error:") and message in err and len(err.splitlines()) == 1


def test_real_cifar_subset_training(tmp_path, shared_file):
    path = shared_file("cifar10_subset.npz")
    result = train(tiny(tmp_path, "nb201_is_darts", data=str(path), epochs=1, steps_per_epoch=2))
    assert result.history[0]["train_loss"] > 0 and 0 <= result.metrics["test_acc"] <= 100
    assert result.metrics["images"] == len(np.load(path)["y_test"])


# ---------------------------------------------------------------------------------------------- evaluation

def test_evaluation_numbers_of_a_known_model():
    # A net that ignores its input and always outputs the logits b: its loss and accuracies are known.
    classes = 12
    b = torch.linspace(-1, 1, classes)

    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(b.clone())

        def forward(self, x):
            return self.bias.expand(len(x), -1), None

    y = torch.arange(30) % classes
    x = torch.zeros(30, 1, 4, 4, dtype=torch.uint8)
    metrics = evaluate(Constant(), eval_loader(x, y, (0.5,), (0.25,), 8, torch.device("cpu")))
    logp = b.log_softmax(0).double()
    assert metrics["test_loss"] == pytest.approx(-logp[y].mean().item())
    assert metrics["test_acc"] == pytest.approx(100 * (y == classes - 1).double().mean().item())
    assert metrics["test_top5"] == pytest.approx(100 * (y >= classes - 5).double().mean().item())


def test_evaluation_matches_a_manual_computation(data):
    torch.manual_seed(1)
    net = NetworkCIFAR(PUBLISHED["darts_v2"], C=4, layers=3, auxiliary=False, num_classes=10).eval()
    metrics = evaluate(net, eval_loader(data.x_test, data.y_test, data.mean, data.std, 7, torch.device("cpu")))
    x = (data.x_test.float() / 255 - torch.tensor(data.mean).view(1, 3, 1, 1)) / torch.tensor(data.std).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = net(x)[0]
    assert metrics["test_loss"] == pytest.approx(F.cross_entropy(logits, data.y_test).item(), rel=1e-5)
    assert metrics["test_acc"] == pytest.approx(100 * (logits.argmax(1) == data.y_test).float().mean().item())


def test_mac_count():
    toy = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.Flatten(),
                        nn.Linear(4 * 8 * 8, 10))
    assert count_macs(toy, (1, 3, 8, 8)) == 8 * 8 * 4 * 3 * 9 + 8 * 8 * 4 * 2 * 9 + 256 * 10
    # On the evaluation nets it is half of FlopCounterMode's FLOPs (only convolutions and linear layers count).
    for net in (NetworkCIFAR(PUBLISHED["pc_darts_cifar"], C=4, layers=3), NB201Network(PUBLISHED["nb201_is_darts"], C=4, N=1)):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net.eval()(torch.zeros(1, 3, 32, 32))
        assert count_macs(net, (1, 3, 32, 32)) == counter.get_total_flops() // 2


# ---------------------------------------------------------------------------------------------- export

@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("trained")
    train(resolve_train_config({"genotype": "pc_darts_cifar", "epochs": 1, "batch_size": 16, "steps_per_epoch": 1,
                                "progress": False, "out": str(out), **TINY["darts"]}), data)
    return out


def test_torchscript_export_gives_the_same_outputs(trained, tmp_path):
    result = export_model(trained, "torchscript", tmp_path / "model.ts")
    exported = torch.jit.load(str(result.path))
    model = gradnas.load_model(trained)
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x)[0])
    assert result.max_abs_diff < 1e-5


def test_onnx_export_gives_the_same_outputs(trained, tmp_path):
    pytest.importorskip("onnxscript", reason="ONNX export needs the onnx extra: pip install 'gradnas[onnx]'")
    ort = pytest.importorskip("onnxruntime", reason="checking ONNX outputs needs onnxruntime (the onnx extra)")
    result = export_model(trained, "onnx", tmp_path / "model.onnx")
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = gradnas.load_model(trained)(x)[0]
    torch.testing.assert_close(torch.from_numpy(session.run(None, {"input": x.numpy()})[0]), expected,
                               rtol=1e-4, atol=1e-5)


def test_export_errors(trained, tmp_path, monkeypatch):
    with pytest.raises(GradnasError, match="unknown export format"):
        export_model(trained, "tflite", tmp_path / "m")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the extra were not installed
    with pytest.raises(GradnasError, match=r"gradnas\[onnx\]"):
        export_model(trained, "onnx", tmp_path / "m.onnx")


# ---------------------------------------------------------------------------------------------- precision

def test_amp_is_off_on_cpu(caplog):
    from gradnas.runtime import autocast_dtype
    assert autocast_dtype(True, torch.device("cpu")) is None and "no effect" in caplog.text
    assert autocast_dtype(False, torch.device("cpu")) is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_path(tmp_path, data, monkeypatch, dtype):
    # The CPU trains in float32; force the GPU choices to run autocast (and float16's loss scaling) here.
    monkeypatch.setattr("gradnas.train.trainer.autocast_dtype", lambda amp, device: dtype if amp else None)
    result = train(tiny(tmp_path, amp=True, epochs=1, steps_per_epoch=1), data)
    assert math.isfinite(result.history[0]["train_loss"]) and math.isfinite(result.metrics["test_loss"])
    scaler = load_checkpoint(tmp_path / "run" / CHECKPOINT)["scaler"]
    assert bool(scaler) == (dtype == torch.float16)  # the loss scale is saved for --resume
