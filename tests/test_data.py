"""gradnas.data: dataset sources, the search split, batched augmentation and the resumable device loader."""
from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gradnas.cli import main
from gradnas.data import (Augment, DeviceLoader, ImageDataset, crop_flip, cutout, cutout_pixels, load_dataset,
                          search_split, training_augment)
from gradnas.data import datasets as D
from gradnas.errors import GradnasError

SUBSET = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_subset.npz"


# ------------------------------------------------------------------------------------------------ sources
def test_digits_builtin_offline():
    d = load_dataset()
    assert d.name == "digits" and d.num_classes == 10 and d.crop_padding == 1
    assert d.x_train.shape == (1438, 1, 8, 8) and d.x_test.shape == (359, 1, 8, 8)
    assert d.x_train.dtype == torch.uint8 and d.y_train.dtype == torch.int64
    assert (d.in_channels, d.image_size) == (1, 8) and int(d.x_train.max()) == 255
    assert set(d.y_test.tolist()) == set(range(10))
    assert d.mean[0] == pytest.approx(d.x_train.double().mean().item() / 255)
    assert d.std[0] == pytest.approx(d.x_train.double().std(unbiased=False).item() / 255)
    assert "1438 train" in repr(d)


def test_image_size_resizes_any_source():
    d = load_dataset("digits", image_size=16)
    assert d.x_train.shape[1:] == (1, 16, 16) and d.crop_padding == 2


def _arrays(rng, layout: str) -> dict[str, np.ndarray]:
    shape = {"nchw": (3, 6, 6), "nhwc": (6, 6, 3), "gray": (6, 6)}[layout]
    return dict(x_train=rng.integers(0, 256, (7, *shape), dtype=np.uint8), y_train=np.array([0, 1, 2, 0, 1, 2, 4]),
                x_test=rng.integers(0, 256, (3, *shape), dtype=np.uint8), y_test=np.array([1, 0, 2]))


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "gray"])
def test_npz_layouts(tmp_path, layout):
    a = _arrays(np.random.default_rng(0), layout)
    np.savez(tmp_path / "toy.npz", **a)
    d = load_dataset(str(tmp_path / "toy.npz"))
    x = a["x_train"]
    expect = x.transpose(0, 3, 1, 2) if layout == "nhwc" else x[:, None] if layout == "gray" else x
    assert d.name == "toy" and d.num_classes == 5 and d.x_train.dtype == torch.uint8
    assert np.array_equal(d.x_train.numpy(), expect) and d.x_test.shape[1:] == d.x_train.shape[1:]
    mean = expect.transpose(1, 0, 2, 3).reshape(expect.shape[1], -1).mean(1) / 255
    assert d.mean == pytest.approx(tuple(mean))


def test_npz_errors(tmp_path):
    a = _arrays(np.random.default_rng(0), "nchw")
    np.savez(tmp_path / "nolabels.npz", x_train=a["x_train"], x_test=a["x_test"], y_test=a["y_test"])
    with pytest.raises(GradnasError, match="y_train"):
        load_dataset(str(tmp_path / "nolabels.npz"))
    np.savez(tmp_path / "float.npz", **{**a, "x_train": a["x_train"] / 255})
    with pytest.raises(GradnasError, match="uint8"):
        load_dataset(str(tmp_path / "float.npz"))
    np.savez(tmp_path / "shape.npz", **{**a, "x_train": a["x_train"].reshape(7, 6, 6, 3)[:, :, :4]})
    with pytest.raises(GradnasError, match="shape"):
        load_dataset(str(tmp_path / "shape.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(GradnasError, match="junk.npz"):
        load_dataset(str(tmp_path / "junk.npz"))
    with pytest.raises(GradnasError, match="unknown dataset 'nope'"):
        load_dataset("nope")
    with pytest.raises(GradnasError, match="missing.npz does not exist"):
        load_dataset(str(tmp_path / "missing.npz"))


def _png(path: Path, colour, size=(6, 6), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def test_image_folder_train_val(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for c, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            for i in range(n):
                _png(tmp_path / split / c / f"{i}.png", colour)
    d = load_dataset(str(tmp_path))
    assert d.x_train.shape == (6, 3, 6, 6) and d.x_test.shape == (4, 3, 6, 6) and d.num_classes == 2
    assert d.y_train.tolist() == [0, 0, 0, 1, 1, 1] and d.y_test.tolist() == [0, 0, 1, 1]
    assert d.x_train[0, :, 0, 0].tolist() == [255, 0, 0] and d.x_test[-1, :, 0, 0].tolist() == [0, 0, 255]
    assert d.name == tmp_path.name and d.mean == pytest.approx((0.5, 0.0, 0.5))


def test_image_folder_flat_split_and_resize(tmp_path):
    for c in ("a", "b"):
        for i in range(5):
            _png(tmp_path / c / f"{i}.png", 40 * i, size=(4 + i, 4), mode="L")  # unequal sizes → 64 px default
    d = load_dataset(str(tmp_path))
    assert d.x_train.shape == (8, 1, 64, 64) and d.x_test.shape == (2, 1, 64, 64)
    assert d.y_test.tolist() == [0, 1] and int(d.x_test[0].float().mean()) == 160  # every 5th image held out
    assert load_dataset(str(tmp_path), image_size=10).x_train.shape == (8, 1, 10, 10)


def test_tiny_imagenet_layout(tmp_path):
    """train/<wnid>/images/*.JPEG, val/images/*.JPEG labelled by val/val_annotations.txt."""
    for c, colour in (("n01", (10, 20, 30)), ("n02", (200, 100, 0))):
        for i in range(2):
            _png(tmp_path / "train" / c / "images" / f"{c}_{i}.JPEG", colour)
    _png(tmp_path / "val" / "images" / "val_0.JPEG", (200, 100, 0))
    _png(tmp_path / "val" / "images" / "val_1.JPEG", (10, 20, 30))
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t5\t5\nval_1.JPEG\tn01\t0\t0\t5\t5\n")
    d = load_dataset(str(tmp_path))
    assert d.y_train.tolist() == [0, 0, 1, 1] and d.y_test.tolist() == [1, 0] and d.num_classes == 2
    assert (d.x_test[0, :, 0, 0] - torch.tensor([200, 100, 0])).abs().max() <= 3  # JPEG is lossy


def test_image_folder_errors(tmp_path):
    with pytest.raises(GradnasError, match="class subdirectories"):
        load_dataset(str(tmp_path))
    _png(tmp_path / "train" / "a" / "0.png", 0)
    _png(tmp_path / "val" / "zebra" / "0.png", 0)
    with pytest.raises(GradnasError, match="zebra"):
        load_dataset(str(tmp_path))


def _fake_cifar(d: Path, key: str, per_file: int = 2) -> np.ndarray:
    """The release's format: Python-2 pickles (bytes keys) of N×3072 uint8 rows in CHW order."""
    meta, rng = D._CIFAR[key], np.random.default_rng(1)
    d.mkdir(parents=True)
    rows = []
    for f in meta["train"] + meta["test"]:
        data = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        rows.append(data)
        batch = {b"data": data, meta["labels"].encode(): list(range(per_file)), b"batch_label": b"x"}
        (d / f).write_bytes(pickle.dumps(batch, protocol=2))
    return np.concatenate(rows).reshape(-1, 3, 32, 32)


@pytest.mark.parametrize("key", ["cifar10", "cifar100"])
def test_cifar_pickle_dir(tmp_path, key):
    pixels = _fake_cifar(tmp_path / D._CIFAR[key]["dir"], key)
    n_train = len(D._CIFAR[key]["train"]) * 2
    for spec, root in ((key, tmp_path), (str(tmp_path), None), (str(tmp_path / D._CIFAR[key]["dir"]), None)):
        d = load_dataset(spec, root=root, download=False)
        assert d.name == key and d.num_classes == D._CIFAR[key]["classes"] and d.crop_padding == 4
        assert np.array_equal(d.x_train.numpy(), pixels[:n_train])
        assert np.array_equal(d.x_test.numpy(), pixels[n_train:])
        assert d.y_train.tolist()[:2] == [0, 1] and d.mean == D._CIFAR[key]["stats"][0]


def test_cifar_missing_names_files_and_dir(tmp_path, monkeypatch):
    with pytest.raises(GradnasError, match=r"data_batch_1.*test_batch.*" + str(tmp_path)):
        load_dataset("cifar10", root=tmp_path, download=False)

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(D.urllib.request, "urlopen", offline)
    with pytest.raises(GradnasError, match=r"cifar-100-python/\{train,test\}.*download .* failed.*no network"):
        load_dataset("cifar100", root=tmp_path)
    monkeypatch.setenv("GRADNAS_DATA", str(tmp_path / "env"))
    with pytest.raises(GradnasError, match="env"):
        load_dataset("cifar10", download=False)


def test_cifar_download_checks_md5_and_extracts(tmp_path, monkeypatch):
    _fake_cifar(tmp_path / "src" / "cifar-10-batches-py", "cifar10")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    archive = buf.getvalue()
    monkeypatch.setattr(D.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(archive))
    with pytest.raises(GradnasError, match="MD5"):
        load_dataset("cifar10", root=tmp_path / "a")
    assert not list((tmp_path / "a").iterdir())  # nothing left behind by a failed check
    monkeypatch.setitem(D._CIFAR["cifar10"], "md5", hashlib.md5(archive).hexdigest())
    d = load_dataset("cifar10", root=tmp_path / "b")
    assert len(d.x_train) == 10 and (tmp_path / "b" / "cifar-10-python.tar.gz").is_file()


def test_cifar_download_rejects_unsafe_archive(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    archive = buf.getvalue()
    monkeypatch.setitem(D._CIFAR["cifar10"], "md5", hashlib.md5(archive).hexdigest())
    monkeypatch.setattr(D.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(archive))
    with pytest.raises(GradnasError, match="cifar10 not found"):
        load_dataset("cifar10", root=tmp_path / "root")
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.skipif(not SUBSET.is_file(), reason=f"real CIFAR-10 subset not present at {SUBSET}")
def test_real_cifar10_subset():
    d = load_dataset(str(SUBSET))
    assert (len(d.x_train), len(d.x_test), d.num_classes, d.image_size, d.crop_padding) == (5170, 1017, 10, 32, 4)
    assert d.mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=0.02)  # close to the full set's statistics
    x, y = next(iter(DeviceLoader(d.x_train, d.y_train, 128, d.mean, d.std, training_augment(d, 0.5))))
    assert x.shape == (128, 3, 32, 32) and abs(x.mean().item()) < 0.3


# -------------------------------------------------------------------------------------------------- split
def test_search_split():
    tr, va = search_split(101, 0.5, seed=3)
    assert len(tr) == 50 and len(va) == 51 and sorted(torch.cat([tr, va]).tolist()) == list(range(101))
    assert torch.equal(search_split(101, 0.5, seed=3)[0], tr) and not torch.equal(search_split(101, 0.5, seed=4)[0], tr)
    assert len(search_split(10, 0.3)[0]) == 3
    with pytest.raises(GradnasError, match="portion"):
        search_split(10, 1.5)


# ----------------------------------------------------------------------------------------------- augment
def _batch(B=4, C=2, H=5, W=6) -> torch.Tensor:
    return torch.arange(1, B * C * H * W + 1, dtype=torch.float32).view(B, C, H, W)


def test_crop_matches_manual_reference():
    x, p = _batch(), 2
    out = crop_flip(x, p, torch.tensor([[1, 3]] * 4), None)  # window starts 1 row up, 1 column right
    ref = torch.zeros(4, 2, 5, 6)
    ref[:, :, 1:, :5] = x[:, :, :4, 1:]  # content moves down 1 row and left 1 column, zeros enter
    assert torch.equal(out, ref)
    assert torch.equal(crop_flip(x, p, torch.full((4, 2), p), None), x)  # the centre window is the identity


def test_crop_and_flip_per_sample():
    x, p = _batch(), 2
    offsets, flip = torch.tensor([[0, 0], [4, 1], [2, 2], [3, 4]]), torch.tensor([True, False, True, False])
    out = crop_flip(x, p, offsets, flip)
    xp = F.pad(x, (p,) * 4)
    for b, (oy, ox) in enumerate(offsets.tolist()):
        crop = xp[b, :, oy:oy + 5, ox:ox + 6]
        assert torch.equal(out[b], crop.flip(-1) if flip[b] else crop)
    assert torch.equal(crop_flip(x, p, None, flip), torch.where(flip[:, None, None, None], x.flip(-1), x))
    assert crop_flip(x, p, None, None) is x


def test_augment_random_crop_shifts_content():
    x, p = _batch(B=64, H=8, W=8), 2
    out = Augment(crop=True, flip=False, padding=p)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    xp = F.pad(x, (p,) * 4)
    windows = [(oy, ox) for oy in range(2 * p + 1) for ox in range(2 * p + 1)]
    found = [next(w for w in windows if torch.equal(out[b], xp[b, :, w[0]:w[0] + 8, w[1]:w[1] + 8])) for b in range(64)]
    assert len(set(found)) > 5  # offsets really vary per sample


def test_augment_flip_about_half():
    x = _batch(B=200)
    out = Augment(crop=False, flip=True)(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert torch.all(flipped | (out == x).flatten(1).all(1)) and 60 < int(flipped.sum()) < 140


def test_cutout_square_and_clipping():
    x = torch.ones(3, 2, 10, 10)
    cutout(x, torch.tensor([5, 0, 9]), torch.tensor([5, 0, 4]), 4)
    zeros = (x == 0)
    assert torch.equal(zeros[:, 0], zeros[:, 1])  # the same square on every channel
    assert zeros[0, 0, 3:7, 3:7].all() and int(zeros[0, 0].sum()) == 16
    assert zeros[1, 0, :2, :2].all() and int(zeros[1, 0].sum()) == 4  # clipped at the corner
    assert zeros[2, 0, 7:, 2:6].all() and int(zeros[2, 0].sum()) == 12
    out = Augment(crop=False, flip=False, cutout=4)(torch.ones(50, 1, 10, 10), torch.Generator().manual_seed(0))
    n = (out == 0).flatten(1).sum(1)
    assert n.max() == 16 and n.min() > 0 and (n < 16).any()


def test_cutout_is_a_fraction_of_the_side():
    # DARTS's 16 px on 32-px CIFAR is 0.5: the same share of 8-px digits, 64-px Tiny-ImageNet and 224-px ImageNet.
    assert [cutout_pixels(0.5, side) for side in (32, 8, 64, 224)] == [16, 4, 32, 112]
    assert cutout_pixels(0.0, 8) == 0 and cutout_pixels(0.01, 8) == 1  # asked for: at least one pixel
    for fraction, side in ((16, 32), (1.0, 32), (-0.1, 32), (0.95, 8)):  # 0.95 of 8 px rounds to the whole side
        with pytest.raises(GradnasError, match="cutout"):
            cutout_pixels(fraction, side)


def test_training_augment_on_32_px_is_the_published_one_bit_for_bit():
    x = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    d = ImageDataset("c", x, torch.zeros(40, dtype=torch.long), x, torch.zeros(40, dtype=torch.long), 10,
                     (0.5,) * 3, (0.25,) * 3, crop_padding=4)
    relative = training_augment(d, 0.5)
    assert (relative.crop, relative.flip, relative.cutout, relative.padding) == (True, True, 16, 4)
    a = DeviceLoader(x, d.y_train, 20, d.mean, d.std, relative, seed=3)
    b = DeviceLoader(x, d.y_train, 20, d.mean, d.std, Augment(True, True, 16, padding=4), seed=3)
    assert all(torch.equal(p, q) for (p, _), (q, _) in zip(a, b))
    digits = load_dataset("digits")
    assert training_augment(digits, 0.5).cutout == 4  # used to be 16 px: every 8×8 image erased


@pytest.mark.parametrize("argv", [["search", "--cutout", "16"], ["train", "darts_v2", "--data", "digits", "--cutout", "1"],
                                  ["train", "darts_v2", "--data", "digits", "--cutout", "0.95", "--no-auxiliary",
                                   "--channels", "4", "--layers", "3"]])
def test_cli_refuses_a_cutout_that_erases_the_images(argv, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradnas: error: cutout") and err.count("\n") == 1


# ------------------------------------------------------------------------------------------------- loader
def _loader(n=50, batch=8, seed=0, augment=Augment(True, True, 3, padding=2), **kw) -> DeviceLoader:
    g = torch.Generator().manual_seed(123)
    x = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    return DeviceLoader(x, torch.arange(n), batch, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), augment, seed=seed, **kw)


def test_loader_batches_and_normalisation():
    L = _loader(augment=None, shuffle=False, drop_last=False)
    batches = list(L)
    assert len(L) == len(batches) == 7 and batches[-1][0].shape == (2, 3, 8, 8)
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.tolist() == list(range(8))
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    assert torch.allclose(x, (L.x[:8] / 255 - mean) / std, atol=1e-5)
    shuffled = _loader()
    assert len(shuffled) == 6 and sorted(torch.cat([y for _, y in shuffled]).tolist()) != list(range(48))


def test_loader_pads_black_and_cuts_out_to_mean():
    x = torch.full((16, 1, 8, 8), 255, dtype=torch.uint8)
    L = DeviceLoader(x, torch.zeros(16), 16, (0.5,), (0.25,), Augment(True, False, 0, padding=3), seed=1)
    assert next(iter(L))[0].unique().tolist() == pytest.approx([-2.0, 2.0])  # padding is black: (0 - 0.5) / 0.25
    L = DeviceLoader(x, torch.zeros(16), 16, (0.5,), (0.25,), Augment(False, False, 2), seed=1)
    assert next(iter(L))[0].unique().tolist() == pytest.approx([0.0, 2.0])  # cutout is 0 after normalisation


def test_loader_is_seeded_and_each_iter_is_a_new_epoch():
    assert torch.equal(next(iter(_loader(seed=5)))[0], next(iter(_loader(seed=5)))[0])
    a = _loader(seed=5)
    it = iter(a)
    next(it)  # an epoch cut short (a capped number of steps) ends there
    assert not torch.equal(next(iter(a))[1], next(iter(_loader(seed=5)))[1])


def test_loader_resume_at_epoch_boundary():
    a = _loader(seed=2)
    list(a)
    state = a.state_dict()
    b = _loader(seed=7)
    b.load_state_dict(state)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_loader_rejects_bad_input():
    x = torch.zeros(10, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(GradnasError, match="uint8"):
        DeviceLoader(x.float(), torch.zeros(10), 2, (0.5,) * 3, (0.2,) * 3, None)
    with pytest.raises(GradnasError, match="batch size 16"):
        DeviceLoader(x, torch.zeros(10), 16, (0.5,) * 3, (0.2,) * 3, None)
    with pytest.raises(GradnasError, match="mean/std"):
        DeviceLoader(x, torch.zeros(10), 2, (0.5,), (0.2,), None)
    with pytest.raises(GradnasError, match="generator"):
        DeviceLoader(x, torch.zeros(10), 2, (0.5,) * 3, (0.2,) * 3, None).load_state_dict({})
