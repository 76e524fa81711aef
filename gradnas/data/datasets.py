"""Datasets as whole uint8 tensors (docs/methods.md §2): built-in digits, CIFAR-10/100, ``.npz`` files, image folders.

Every dataset is loaded once into memory as ``uint8`` NCHW tensors, small enough to live on the training
device, so batches are sliced and augmented there (see :mod:`gradnas.data.loader`) with no worker processes.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import shutil
import tarfile
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import GradnasError, first_line
from ..limits import check_sizes, read_text
from ..extras import missing_extra

Stats = tuple[tuple[float, ...], tuple[float, ...]]
#: The most classes a dataset may have: a label is also a row of the classifier, so a stray 10⁹ must not
#: allocate one (ImageNet-21k has about 21,800).
MAX_CLASSES = 100_000
log = logging.getLogger("gradnas")
DIGITS = Path(__file__).parent / "digits.npz"


@dataclass(repr=False)
class ImageDataset:
    name: str
    x_train: torch.Tensor  # uint8 N×C×H×W
    y_train: torch.Tensor  # int64 N
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]  # per channel, pixel values scaled to [0, 1]
    std: tuple[float, ...]
    crop_padding: int  # zero padding of the random-crop augmentation

    @property
    def in_channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def image_size(self) -> int:
        return self.x_train.shape[-1]

    def __repr__(self) -> str:  # the default repr would print the tensors
        c, h, w = self.x_train.shape[1:]
        return (f"ImageDataset({self.name}: {len(self.x_train)} train / {len(self.x_test)} test, "
                f"{c}×{h}×{w}, {self.num_classes} classes)")


def load_dataset(spec: str = "digits", root: str | Path | None = None, download: bool = True,
                 image_size: int | None = None) -> ImageDataset:
    """Load ``spec``: ``digits``, ``cifar10``, ``cifar100``, a ``.npz`` file, a CIFAR pickle directory or an
    image-folder directory. ``root`` holds (or receives) the CIFAR downloads; ``image_size`` resizes to a
    square side."""
    if image_size is not None and image_size < 1:
        raise GradnasError(f"image_size must be a positive number of pixels, got {image_size}")
    check_sizes(1, image_size=image_size)
    key = spec.lower().replace("-", "")
    if key == "digits":
        parts = _digits()
    elif key in _CIFAR:
        base = Path(root or os.environ.get("GRADNAS_DATA") or Path.home() / ".cache" / "gradnas" / "data")
        parts = _cifar(key, base.expanduser(), download)
    else:
        path = Path(spec).expanduser()
        if path.suffix == ".npz" and path.is_file():
            parts = _npz(path)
        elif path.is_dir():
            found = next(((k, d) for k in _CIFAR for d in (path, path / _CIFAR[k]["dir"]) if _has_cifar(k, d)), None)
            parts = _read_cifar(*found) if found else _image_folder(path, image_size)
        elif path.suffix or os.sep in spec:
            raise GradnasError(f"dataset path {path} does not exist (expected a .npz file or a directory)")
        else:
            raise GradnasError(f"unknown dataset {spec!r}: choose digits, cifar10, cifar100, "
                               "a .npz file or a directory")
    name, x_train, y_train, x_test, y_test, num_classes, stats = parts
    _check_labels(name, y_train, y_test, num_classes)
    if image_size is not None and x_train.shape[-2:] != (image_size, image_size):
        x_train, x_test = _resize(x_train, image_size), _resize(x_test, image_size)
    if x_train.shape[-2] != x_train.shape[-1]:  # the supernets and saved models take a square side
        raise GradnasError(f"{name}: images are {x_train.shape[-2]}×{x_train.shape[-1]}, not square; pass "
                           "--image-size N to resize them to N×N")
    mean, std = stats or _channel_stats(x_train)
    # 1/8 of the side: CIFAR's 4 px at 32 px, ImageNet16's 2 px at 16 px, 1 px for 8 px digits.
    return ImageDataset(name, x_train, y_train, x_test, y_test, num_classes, mean, std,
                        crop_padding=max(1, x_train.shape[-1] // 8))


def search_split(n: int, portion: float = 0.5, seed: int = 0,
                 val_portion: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint (train, val) index tensors over ``range(n)`` for the bilevel search, ``int(portion * n)`` for train
    and the rest for val, or only ``int(val_portion * n)`` of the rest (subsets, as PC-DARTS's ImageNet search).

    The draw is seeded and each part is sorted, so gathers from the resident dataset stay roughly in order."""
    if not 0 < portion < 1 or not (val_portion is None or 0 < val_portion < 1):
        raise GradnasError(f"search split portions must be in (0, 1), got {portion}, {val_portion}")
    k = int(portion * n)
    end = n if val_portion is None else k + int(val_portion * n)
    if not 0 < k < end <= n:
        raise GradnasError(f"search split of {n} samples with portions {portion}, {val_portion} leaves an empty "
                           "part or asks for more than all samples")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:k].sort().values, perm[k:end].sort().values


# ------------------------------------------------------------------------------------------------ sources
Parts = tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, Stats | None]


def _digits() -> Parts:
    """The 1,797 real 8×8 handwritten digits of the UCI "Optical Recognition of Handwritten Digits" set (test
    part; CC BY 4.0), as scikit-learn's ``load_digits`` gives them: pixel values 0..16, stored in the package
    as ``digits.npz`` (``images`` 1797×8×8 and ``target`` uint8), so always offline."""
    with np.load(DIGITS) as d:
        images, target = d["images"], d["target"]
    x = torch.from_numpy(np.rint(images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(target.astype(np.int64))
    n_test = len(x) // 5  # the last 20 % as test: fixed, so every run sees the same split
    return "digits", x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:], 10, None


_CIFAR = {
    "cifar10": dict(dir="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
                    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                    md5="c58f30108f718f92721af3b95e74349a", classes=10, labels="labels",
                    stats=((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))),
    "cifar100": dict(dir="cifar-100-python", train=["train"], test=["test"],
                     url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                     md5="eb9058c3a382ffc7106e4002c42a8d85", classes=100, labels="fine_labels",
                     stats=((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))),
}


def _has_cifar(key: str, d: Path) -> bool:
    return all((d / f).is_file() for f in _CIFAR[key]["train"] + _CIFAR[key]["test"])


def _cifar(key: str, root: Path, download: bool) -> Parts:
    meta = _CIFAR[key]
    d = root / meta["dir"]
    if not _has_cifar(key, d):
        why = "download=False"
        if download:
            try:
                _download(meta["url"], meta["md5"], root)
                why = "downloaded archive lacks them"
            except (OSError, tarfile.TarError) as e:  # URLError and timeouts are OSErrors
                why = f"download from {meta['url']} failed: {e}"
        if not _has_cifar(key, d):
            files = ",".join(meta["train"] + meta["test"])
            raise GradnasError(f"{key} not found: expected {meta['dir']}/{{{files}}} in {root} ({why}); "
                               f"set GRADNAS_DATA or pass root")
    return _read_cifar(key, d)


def _read_cifar(key: str, d: Path) -> Parts:
    meta = _CIFAR[key]

    def read(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(_read_pickle(d / f, meta["labels"]) for f in meta[split]))
        return torch.cat(xs), torch.cat(ys)

    return (key, *read("train"), *read("test"), meta["classes"], meta["stats"])


def _read_pickle(path: Path, label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of the CIFAR python release: a pickled dict with ``data`` (N×3072, CHW order) and labels.

    The official release is a pickle, so it is read like torchvision does; only load archives you trust."""
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f, encoding="bytes")  # Python-2 pickles: keys arrive as bytes
        d = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
        x = torch.from_numpy(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        y = torch.as_tensor(np.asarray(d[label_key], dtype=np.int64))
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, KeyError, ValueError) as e:
        raise GradnasError(f"malformed CIFAR batch {path}: {type(e).__name__}: {e}") from None
    if len(x) != len(y):
        raise GradnasError(f"malformed CIFAR batch {path}: {len(x)} images but {len(y)} labels")
    return x, y


def _download(url: str, md5: str, root: Path) -> None:
    """Fetch ``url`` into ``root`` unless a verified copy is there, check its MD5, and extract it safely."""
    root.mkdir(parents=True, exist_ok=True)
    archive = root / url.rsplit("/", 1)[1]
    if not (archive.is_file() and _md5(archive) == md5):
        part = archive.with_name(archive.name + ".part")  # never leave a truncated file under the final name
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(part, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
            if _md5(part) != md5:
                raise GradnasError(f"download of {url} failed its MD5 check (expected {md5}); try again")
            part.replace(archive)
        finally:
            part.unlink(missing_ok=True)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # the stdlib rejects absolute paths, '..', links out and devices
            tar.extractall(root, filter="data")
            return
        top = root.resolve()
        for m in tar.getmembers():
            if not (m.isfile() or m.isdir()) or not (top / m.name).resolve().is_relative_to(top):
                raise GradnasError(f"refusing to extract {m.name!r} from {archive}: unsafe path or file type")
        tar.extractall(root)


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)  # an integrity check, allowed on FIPS systems
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _npz(path: Path) -> Parts:
    """``x_train, y_train, x_test, y_test`` arrays; images uint8 NCHW, NHWC or N×H×W (grayscale)."""
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise GradnasError(f"{path} lacks array(s) {', '.join(missing)}; expected {', '.join(keys)}")
            arrays = {k: f[k] for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise GradnasError(f"cannot read {path} as .npz: {e}") from None
    x_train, x_test = (_as_nchw(arrays[k], f"{path}:{k}") for k in ("x_train", "x_test"))
    y_train = _as_labels(arrays["y_train"], len(x_train), f"{path}:y_train")
    y_test = _as_labels(arrays["y_test"], len(x_test), f"{path}:y_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise GradnasError(f"{path}: x_train images are {tuple(x_train.shape[1:])}, "
                           f"x_test images {tuple(x_test.shape[1:])}")
    num_classes = int(max(y_train.max(), y_test.max())) + 1  # labels are 0..K-1; a guess if some are unused
    return path.stem, x_train, y_train, x_test, y_test, num_classes, None


def _as_nchw(x: np.ndarray, where: str) -> torch.Tensor:
    if x.dtype != np.uint8:
        if not (np.issubdtype(x.dtype, np.integer) and x.size and 0 <= x.min() and x.max() <= 255):
            raise GradnasError(f"{where} must hold uint8 pixels 0..255, got dtype {x.dtype}")
        x = x.astype(np.uint8)
    if x.ndim == 3:  # N×H×W grayscale
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[3] in (1, 3) and x.shape[1:] != (1, 1, 1):
        raise GradnasError(f"{where} has shape {x.shape}: axis 1 and axis 3 could both be the channels; "
                           "store it as N×C×H×W or N×H×W×C with images larger than 3×3")
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):  # NHWC: channels last
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4 or x.shape[1] not in (1, 3):
        raise GradnasError(f"{where} has shape {x.shape}; expected N×C×H×W or N×H×W×C with C = 1 or 3")
    return torch.from_numpy(np.ascontiguousarray(x))


def _as_labels(y: np.ndarray, n: int, where: str) -> torch.Tensor:
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer) or (n and y.min() < 0):
        raise GradnasError(f"{where} must be {n} non-negative integer labels, got dtype {y.dtype} shape {y.shape}")
    if n == 0:
        raise GradnasError(f"{where} is empty")
    return torch.from_numpy(y.astype(np.int64))


_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def _image_folder(root: Path, image_size: int | None) -> Parts:
    """Class-per-subdirectory images: ``train/<class>/…`` with ``val/<class>/…`` or ``test/<class>/…``
    (Tiny-ImageNet's ``val/images`` + ``val_annotations.txt`` too), or ``<class>/…`` with every fifth image
    of each class held out as test. Images are decoded with PIL and resized to a square side."""
    try:
        from PIL import Image
    except ImportError as err:
        raise missing_extra(err, "reading an image folder") from None

    train_dir = root / "train" if (root / "train").is_dir() else root
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise GradnasError(f"no dataset in {root}: expected class subdirectories (<class>/*.png or train/<class>/*)")
    index = {c: i for i, c in enumerate(classes)}
    train = [(f, index[c]) for c in classes for f in _images(train_dir / c)]
    test_dir = next((root / s for s in ("val", "test") if train_dir is not root and (root / s).is_dir()), None)
    if test_dir is None:  # no held-out folder: split each class deterministically
        test = [s for i, s in enumerate(train) if i % 5 == 4]
        train = [s for i, s in enumerate(train) if i % 5 != 4]
    elif (test_dir / "val_annotations.txt").is_file():  # Tiny-ImageNet: "<file>\t<class>\t<box>" per line
        test = _annotations(test_dir, index)
    else:
        unknown = sorted(p.name for p in test_dir.iterdir() if p.is_dir() and p.name not in index)
        if unknown:
            raise GradnasError(f"{test_dir} has classes not in {train_dir}: {', '.join(unknown[:5])}")
        test = [(f, index[c]) for c in classes if (test_dir / c).is_dir() for f in _images(test_dir / c)]
    if not train or not test:
        split = "test" if train else "train"
        raise GradnasError(f"no {split} images ({', '.join(sorted(_IMAGE_EXT))}) found in {root}")

    def header(path: Path) -> tuple[tuple[int, int], str]:  # PIL reads only the header until pixels are needed
        try:
            with Image.open(path) as im:
                return im.size, im.mode
        except Exception as e:  # PIL's decoders raise more than OSError (SyntaxError, DecompressionBombError, ...)
            raise GradnasError(f"cannot read image {path}: {first_line(e)}") from None

    files = [f for f, _ in train + test]
    with ThreadPoolExecutor() as pool:  # decoding and resizing release the GIL
        sizes, modes = zip(*pool.map(header, files))
        if image_size is None:
            first = sizes[0]
            uniform = first[0] == first[1] and all(s == first for s in sizes)
            image_size = first[0] if uniform else 64
            if not uniform:
                log.warning("%s: images of %d sizes (e.g. %d×%d) resized to 64×64; set image_size to choose",
                            root, len(set(sizes)), *first)
        mode = "L" if all(m in _GRAY_MODES for m in modes) else "RGB"

        def decode(path: Path) -> np.ndarray:
            try:
                with Image.open(path) as im:
                    im = im.convert(mode)
                    if im.size != (image_size, image_size):
                        im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
                    return np.asarray(im)
            except Exception as e:  # e.g. a file cut short after its header; PIL's decoders raise many kinds
                raise GradnasError(f"cannot decode image {path}: {first_line(e)}") from None

        pixels = np.stack(list(pool.map(decode, files)))
    x = torch.from_numpy(pixels).reshape(len(files), image_size, image_size, -1).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([c for _, c in train + test], dtype=torch.int64)
    n = len(train)
    return root.name, x[:n], y[:n], x[n:], y[n:], len(classes), None


def _annotations(test_dir: Path, index: dict[str, int]) -> list[tuple[Path, int]]:
    """Tiny-ImageNet's ``val_annotations.txt``: ``<file>\t<class>\t<box>`` per line; rows of other classes skipped."""
    path = test_dir / "val_annotations.txt"
    rows = [line.split("\t") for line in read_text(path, "annotation file").splitlines() if line.strip()]
    bad = next((n for n, row in enumerate(rows, 1) if len(row) < 2 or Path(row[0]).name != row[0]), None)
    if bad is not None:
        raise GradnasError(f"{path}, line {bad}: expected <file>\t<class>[\t<box>]")
    return [(test_dir / "images" / f, index[c]) for f, c, *_ in rows if c in index]


def _images(d: Path) -> list[Path]:
    """Image files anywhere under ``d`` (Tiny-ImageNet nests them in ``<class>/images``), in a fixed order."""
    return sorted(p for p in d.rglob("*") if p.suffix.lower() in _IMAGE_EXT and p.is_file())


# ----------------------------------------------------------------------------------------------- helpers
def _check_labels(name: str, y_train: torch.Tensor, y_test: torch.Tensor, num_classes: int) -> None:
    """Labels 0..K-1 with 2 <= K <= MAX_CLASSES, and at least two classes to tell apart in the training split."""
    if not 2 <= num_classes <= MAX_CLASSES:
        raise GradnasError(f"{name}: labels must be 0..K-1 with 2 <= K <= {MAX_CLASSES:,} classes, got K = "
                           f"{num_classes:,} (the largest label + 1)")
    for split, y in (("train", y_train), ("test", y_test)):
        if len(y) and not 0 <= int(y.min()) <= int(y.max()) < num_classes:
            raise GradnasError(f"{name}: {split} labels must lie in 0..{num_classes - 1}, got {int(y.min())}.."
                               f"{int(y.max())}")
    if len(torch.unique(y_train)) < 2:
        raise GradnasError(f"{name}: the training split holds a single class; a classifier needs at least two")


def _resize(x: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 NCHW images, in chunks so a float copy never holds the whole set."""
    return torch.cat([F.interpolate(c.float(), size=(size, size), mode="bilinear", antialias=True,
                                    align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
                      for c in x.split(chunk)])


def _channel_stats(x: torch.Tensor) -> Stats:
    """Exact per-channel mean/std (population) of uint8 images in [0, 1] units, via a 256-bin histogram per
    channel: no float copy of the dataset."""
    v = torch.arange(256, dtype=torch.float64) / 255
    mean, std = [], []
    for c in range(x.shape[1]):
        h = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        h /= h.sum()
        m = float((h * v).sum())
        mean.append(m)
        s = max(float((h * v * v).sum()) - m * m, 0.0) ** 0.5
        std.append(s or 1.0)  # a constant channel normalises to 0 whatever the std; avoid dividing by 0
    return tuple(mean), tuple(std)
