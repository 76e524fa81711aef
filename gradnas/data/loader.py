"""Batches sliced from a device-resident uint8 dataset and augmented there, a whole batch per kernel.

CPU data-loader workers would cost more than the tiny images they decode; instead the dataset stays on the
training device as uint8 and every batch is an index_select, one crop/flip gather, a multiply-add normalise
and a cutout mask.
All randomness comes from a ``torch.Generator`` owned by the loader, so a run replays exactly from its
``state_dict``.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from ..errors import GradnasError
from .datasets import ImageDataset


def crop_flip(x: torch.Tensor, padding: int, offsets: torch.Tensor | None, flip: torch.Tensor | None) -> torch.Tensor:
    """Per-sample random crop and horizontal flip of a B×C×H×W batch of any dtype, as one gather.

    ``offsets`` (B×2 ints in [0, 2·padding]: row, col) is the top-left corner of each crop in the zero-padded
    image; ``flip`` (B bools) mirrors the crop. Every crop of the padded image and of its mirror is a view
    (``unfold``), so one advanced index picks each sample's window: faster than gathers on rows then columns."""
    B, C, H, W = x.shape
    if offsets is None:
        if flip is None:
            return x
        padding, offsets = 0, torch.zeros(B, 2, dtype=torch.long, device=x.device)
    xp = F.pad(x, (padding,) * 4) if padding else x
    oy, ox = offsets.unbind(1)
    sel = torch.arange(B, device=x.device)
    if flip is not None:
        xp = torch.stack([xp, xp.flip(3)], 1).flatten(0, 1)  # row 2b + 1 mirrors row 2b
        ox = torch.where(flip, 2 * padding - ox, ox)  # the mirrored window sits at the mirrored column
        sel = 2 * sel + flip
    return xp.unfold(2, H, 1).unfold(3, W, 1)[sel, :, oy, ox]


def cutout(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, length: int) -> torch.Tensor:
    """Zero, in place, one length×length square per image centred at (``rows[b]``, ``cols[b]``), clipped at the
    borders (docs/methods.md §1.1); an odd length covers exactly ``length`` pixels too. The mask is built by
    broadcasting row and column range tests."""
    _, _, H, W = x.shape
    r = torch.arange(H, device=x.device) - (rows - length // 2)[:, None]  # B×H; inside when 0 <= r < length
    c = torch.arange(W, device=x.device) - (cols - length // 2)[:, None]
    hole = ((r >= 0) & (r < length))[:, :, None] & ((c >= 0) & (c < length))[:, None, :]
    return x.mul_(~hole[:, None])  # multiplying by the mask is several times faster than masked_fill_ on CPU


class Augment:
    """Batched training augmentation: random crop with zero ``padding``, horizontal flip, cutout of side ``cutout``.

    :meth:`geometric` (crop + flip) and :meth:`erase` (cutout) are separate because the loader runs them on
    either side of normalisation, as the reference pipeline does: the crop pads the raw image with black,
    cutout zeroes the normalised one (i.e. fills it with the mean colour). Draws come from ``generator``
    (on its own device; moved to the batch's) or torch's default generator."""

    def __init__(self, crop: bool = True, flip: bool = True, cutout: int = 0, padding: int = 4):
        if padding < 0 or cutout < 0:
            raise GradnasError(f"augment padding and cutout must be >= 0, got padding={padding}, cutout={cutout}")
        self.crop, self.flip, self.cutout, self.padding = crop, flip, cutout, padding

    def __repr__(self) -> str:
        return f"Augment(crop={self.crop}, flip={self.flip}, cutout={self.cutout}, padding={self.padding})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.erase(self.geometric(x, generator), generator)

    def geometric(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        B = x.shape[0]
        dev = generator.device if generator is not None else x.device
        offsets = flip = None
        if self.crop and self.padding:
            offsets = torch.randint(0, 2 * self.padding + 1, (B, 2), generator=generator, device=dev).to(x.device)
        if self.flip:
            flip = (torch.rand(B, generator=generator, device=dev) < 0.5).to(x.device)
        return crop_flip(x, self.padding, offsets, flip)

    def erase(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.cutout:
            return x
        dev = generator.device if generator is not None else x.device
        H, W = x.shape[2:]
        k = torch.randint(H * W, (x.shape[0],), generator=generator, device=dev).to(x.device)  # centre pixel
        return cutout(x, k // W, k % W, self.cutout)


def check_cutout(fraction: float) -> None:
    """Cutout is sized as a fraction of the image side, so one recipe does the same on every image size."""
    if not 0 <= fraction < 1:
        raise GradnasError(f"cutout is the side of the erased square as a fraction of the image side, in [0, 1) "
                           f"(DARTS's 16 px on 32-px CIFAR is 0.5), got {fraction}")


def cutout_pixels(fraction: float, side: int) -> int:
    """The cutout square's side in pixels on images of side ``side``: ``round(fraction · side)``, at least 1 px
    when asked for (0.5 is DARTS's 16 px on CIFAR, 4 px on the 8-px digits, 112 px at 224 px). A square as large
    as the image would erase whole images, so it is refused."""
    check_cutout(fraction)
    pixels = max(1, round(fraction * side)) if fraction else 0
    if pixels >= side:
        raise GradnasError(f"cutout {fraction} of the {side}-px images is {pixels} px and would erase whole "
                           f"images; use a smaller --cutout")
    return pixels


def training_augment(data: ImageDataset, cutout: float) -> Augment:
    """The training augmentation of search and training: random crop with the dataset's zero padding (1/8 of
    the side), flip, and cutout given as a fraction of the side."""
    return Augment(crop=True, flip=True, cutout=cutout_pixels(cutout, min(data.x_train.shape[-2:])),
                   padding=data.crop_padding)


class DeviceLoader:
    """Iterate ``(x, y)`` batches of a uint8 N×C×H×W dataset kept whole on ``device``: x float32 normalised by
    ``mean``/``std`` (per channel, [0, 1] pixel units) and augmented by ``augment``, y as given.

    Every ``iter()`` starts a new epoch (a new order). ``state_dict`` holds the generator: restored at an
    epoch boundary, where search and training checkpoint, a resumed run sees the same batches and
    augmentations as one that never stopped."""

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, batch_size: int, mean: tuple[float, ...],
                 std: tuple[float, ...], augment: Augment | None, shuffle: bool = True, drop_last: bool = True,
                 device: str | torch.device = "cpu", seed: int = 0, shard: tuple[int, int] = (0, 1)):
        if x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4:
            raise GradnasError(f"loader images must be uint8 N×C×H×W, got {x_uint8.dtype} {tuple(x_uint8.shape)}")
        if len(y) != len(x_uint8):
            raise GradnasError(f"loader has {len(x_uint8)} images but {len(y)} labels")
        if not len(mean) == len(std) == x_uint8.shape[1]:
            raise GradnasError(f"mean/std have {len(mean)}/{len(std)} entries for {x_uint8.shape[1]}-channel images")
        if batch_size < 1 or (drop_last and batch_size > len(y)):
            raise GradnasError(f"batch size {batch_size} is invalid for {len(y)} samples (drop_last={drop_last})")
        self.device = torch.device(device)
        self.x = x_uint8.to(self.device).contiguous()
        self.y = y.to(self.device)
        self.batch_size, self.augment, self.shuffle, self.drop_last = batch_size, augment, shuffle, drop_last
        # Data parallel: every rank draws the same global batch of batch_size × world images (same order,
        # same augmentation draws) and keeps its own slice, so R ranks see exactly what one process would.
        self.rank, self.world_size = shard
        # (x/255 - mean)/std as x·scale + shift
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self._scale = 1 / (255 * std_t)
        self._shift = -torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1) / std_t
        try:  # draws on the device avoid a host sync per batch; fall back where it has no generator
            self.generator = torch.Generator(device=self.device)
        except RuntimeError:
            self.generator = torch.Generator()
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        n, b = len(self.y), self.batch_size * self.world_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g, n = self.generator, len(self.y)
        order = (torch.randperm(n, generator=g, device=g.device).to(self.device) if self.shuffle
                 else torch.arange(n, device=self.device))
        b, aug = self.batch_size * self.world_size, self.augment
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        for i in range(len(self)):
            idx = order[i * b:(i + 1) * b]
            x = self.x.index_select(0, idx)
            if aug is not None:
                x = aug.geometric(x, self.generator)  # on raw uint8: crop padding is black
            x = x.float().mul_(self._scale).add_(self._shift)  # 3× faster on CPU than one broadcast addcmul
            if aug is not None:
                x = aug.erase(x, self.generator)  # on normalised values: cutout fills with the mean colour
            if self.world_size > 1:
                x, idx = x[mine], idx[mine]
            yield x, self.y.index_select(0, idx)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        try:
            self.generator.set_state(state["generator"])
        except (KeyError, RuntimeError, TypeError) as e:
            raise GradnasError(f"loader state does not fit this loader's {self.generator.device} generator: "
                               f"{e}") from None
