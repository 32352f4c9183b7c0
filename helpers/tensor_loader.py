"""Tensor-resident CIFAR-10 loader: the uint8 dataset lives on the training device, augmentation is batched tensor ops.

A per-image pipeline (PIL/albumentations per image, worker processes, host-to-device copies) cannot keep a modern
GPU busy on 32x32 images, and on a CPU its workers take cores from training. Like airbench and hlb-cifar10,
`TensorLoader` holds the uint8 images as one tensor on the device (copied once; on a CPU, no copy) and augments
whole batches there (under RandAugment, chunks of several thousand images): random crop and flip as one gather,
then quarter turns, rotation / scale / shift, RandAugment, cutout and RandomErasing as batched ops
(`helpers.tensor_augment`). Every random choice of an epoch is drawn up front from a generator seeded per epoch,
so a resumed run replays the same epochs.

`helpers.augmentation.Augmentation` describes what to do once, for either pipeline: `TensorLoader(...,
augment=augment)` here, `augment.cpu_transform()` for a DataLoader. The two match in distribution;
tests/test_tensor_loader.py and tests/test_tensor_augment.py check it.

    augment = Augmentation(crop_padding=4, flip=True, cutout_size=8)
    train_loader = TensorLoader(images, labels, batch_size=512, train=True, device="cuda", augment=augment)
    test_loader = TensorLoader(test_images, test_labels, batch_size=1024, train=False, device="cuda")

`helpers.loaders.make_train_loader(..., backend="auto")` picks this loader on every device ("dataloader" asks for
the albumentations DataLoader instead).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from . import tensor_augment as G
from . import transforms as T
from .augmentation import NO_AUGMENTATION, Augmentation
from .data import CIFAR10_MEAN, CIFAR10_STD

CHUNK_IMAGES = 8192  # images augmented together under RandAugment (whole batches): few calls, bounded memory


@dataclass(frozen=True)
class _EpochDraws:
    """Every random choice of one epoch, drawn up front (a handful of kernels instead of several per batch)."""

    order: torch.Tensor        # sample order [N]
    crop_y: torch.Tensor       # crop offsets in 0..2*padding [N]
    crop_x: torch.Tensor
    flip: torch.Tensor         # bool [N]
    turns: torch.Tensor | None         # counter-clockwise quarter turns in 0..3 [N]; None where unused
    warp: G.AffineDraws | None
    randaugment: torch.Tensor | None   # op keys [N, num_ops] (tensor_augment.draw_randaugment) and a host copy,
    randaugment_host: np.ndarray | None  # to group a chunk by op without a device synchronization
    hole_y: torch.Tensor       # cutout top-left corner in 0..32-size [N]
    hole_x: torch.Tensor
    hole: torch.Tensor         # bool [N]: this sample gets a hole
    erasing: G.ErasingDraws | None

    def to(self, device: torch.device) -> "_EpochDraws":
        """The same draws on `device` (a no-op where the generator lives there; host arrays stay on the host)."""
        return _EpochDraws(*(value.to(device) if isinstance(value, (torch.Tensor, G.PerImage)) else value
                             for value in (getattr(self, f.name) for f in fields(self))))


class TensorLoader:
    """Batches (normalized float images [B, 3, 32, 32] channels_last, int64 labels) on `device`, like a DataLoader.

    Training (`train=True`): reshuffled every epoch, augmented with `augment` (under RandAugment a chunk of
    `CHUNK_IMAGES` images at a time, otherwise batch by batch), last partial batch dropped (unless the dataset is
    smaller than one batch). Evaluation: dataset order, no augmentation, every sample. `set_epoch(epoch, seed)`
    fixes the epoch's randomness; without it each new pass draws fresh randomness.
    """

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, batch_size: int, *,
                 train: bool, device: torch.device | str = "cuda", augment: Augmentation | None = None,
                 seed: int = 0, drop_last: bool | None = None, channels_last: bool = True) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        images = torch.as_tensor(images)
        square_rgb = images.ndim == 4 and images.shape[1] == images.shape[2] and images.shape[-1] == 3
        if images.dtype != torch.uint8 or not square_rgb:
            raise ValueError(f"expected square uint8 images [N, S, S, 3], got {images.dtype} {list(images.shape)}")
        self.device = torch.device(device)
        self.augment = augment if train else None
        self._spec = augment or NO_AUGMENTATION
        self.size = images.shape[1]
        # uint8 NHWC, padded once for the crop: a crop is then a plain gather of whole pixels (3 bytes each).
        self.images = _pad(images.to(self.device), self._spec.crop_padding if train else 0, self._spec.reflect)
        self.labels = torch.as_tensor(labels, dtype=torch.int64).to(self.device)
        self.batch_size, self.train, self.channels_last = batch_size, train, channels_last
        self.drop_last = train and len(self.labels) > batch_size if drop_last is None else drop_last
        self.seed, self.epoch = seed, 0
        self._generator = torch.Generator(device=self.device if self.device.type == "cuda" else "cpu")
        self._mean = torch.tensor(CIFAR10_MEAN, device=self.device).view(3, 1, 1) * 255
        self._inv_std = 1 / (torch.tensor(CIFAR10_STD, device=self.device).view(3, 1, 1) * 255)
        self._fill = torch.tensor(T.MEAN_PIXEL, dtype=torch.uint8, device=self.device).view(3, 1, 1)
        self._pixels = torch.arange(self.size, device=self.device)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        """Make the next pass epoch `epoch` of a run seeded with `seed` (the engine calls this every epoch)."""
        self.epoch = epoch
        if seed is not None:
            self.seed = seed

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self.train:
            for start in range(0, len(self.labels), self.batch_size):
                index = slice(start, start + self.batch_size)
                yield self._normalized(self.images[index].permute(0, 3, 1, 2)), self.labels[index]
            return
        draws = self._draw_epoch()
        self.epoch += 1
        used = min(len(self) * self.batch_size, len(self.labels))
        # RandAugment runs its ops once per group of images with the same op: chunks of many batches make few
        # calls. Everything else is a few batched ops either way; per batch it stays in cache on a CPU.
        chunk = self.batch_size * max(1, CHUNK_IMAGES // self.batch_size if self._spec.randaugment_ops else 1)
        for start in range(0, used, chunk):
            part = slice(start, min(start + chunk, used))
            order = draws.order[part]
            images, labels = self._augmented(order, draws, part), self.labels[order]
            for first in range(0, len(order), self.batch_size):
                yield images[first:first + self.batch_size], labels[first:first + self.batch_size]

    def _draw_epoch(self) -> _EpochDraws:
        n, size, augment, g = len(self.labels), self.size, self._spec, self._generator
        g.manual_seed(self.seed * 1_000_003 + self.epoch)  # the engine's per-epoch seed

        def integers(high: int) -> torch.Tensor:  # uniform in 0..high
            return torch.randint(0, high + 1, (n,), generator=g, device=g.device)

        def coin(p: float) -> torch.Tensor:
            return torch.rand(n, generator=g, device=g.device) < p

        order = torch.randperm(n, generator=g, device=g.device)
        span = 2 * augment.crop_padding
        hole_span = size - augment.cutout_size
        crop_y, crop_x, flip = integers(span), integers(span), coin(0.5 if augment.flip else 0.0)
        hole_y, hole_x, hole = integers(hole_span), integers(hole_span), coin(
            augment.cutout_p if augment.cutout_size else 0.0)
        # The others are drawn only when used, after these: crop, flip and cutout draws stay the same.
        turns = G.draw_quarter_turns(n, augment.rotate90_p, g) if augment.rotate90_p else None
        warp = (G.draw_affine(n, augment.affine_p, augment.rotate_limit, augment.scale_limit, augment.shift_limit,
                              size, g) if augment.warps else None)
        randaugment = G.draw_randaugment(n, augment.randaugment_ops, g) if augment.randaugment_ops else None
        erasing = G.draw_erasing(n, augment.erasing_p, size, g) if augment.erasing_p else None
        return _EpochDraws(order, crop_y, crop_x, flip, turns, warp, randaugment,
                           None if randaugment is None else randaugment.cpu().numpy(), hole_y, hole_x, hole,
                           erasing).to(self.device)

    def _augmented(self, order: torch.Tensor, draws: _EpochDraws, part: slice) -> torch.Tensor:
        """The chunk `order` augmented and normalized: float [B, 3, S, S]."""
        augment, size = self._spec, self.size
        _, padded_h, padded_w, channels = self.images.shape
        # Crop and flip: one gather of whole pixels from the padded uint8 images (rows and columns separable).
        rows = draws.crop_y[part, None] + self._pixels                   # source row of each output row [B, S]
        cols = draws.crop_x[part, None] + self._pixels
        cols = torch.where(draws.flip[part, None], cols.flip(1), cols)
        flat = (order[:, None, None] * padded_h + rows[:, :, None]) * padded_w + cols[:, None, :]
        batch = self.images.view(-1, channels).index_select(0, flat.view(-1))
        batch = batch.view(len(order), size, size, channels).permute(0, 3, 1, 2)  # NCHW view, channels_last
        if augment.rotate90_p:
            batch = G.quarter_turns(batch, draws.turns[part])
        if augment.warps:
            warp = draws.warp[part]
            warped = G.affine(batch, warp.angle, warp.scale, warp.shift, fill=self._fill.view(-1))
            batch = torch.where(warp.applied[:, None, None, None], warped, batch)
        for op in range(augment.randaugment_ops):
            counts = np.bincount(draws.randaugment_host[part, op], minlength=2 * len(G.RANDAUGMENT_OPS))
            batch = G.randaugment(batch, draws.randaugment[part, op], counts, augment.randaugment_magnitude)
        if augment.cutout_size:
            top, left, pixels = draws.hole_y[part, None], draws.hole_x[part, None], self._pixels
            in_rows = (pixels >= top) & (pixels < top + augment.cutout_size)
            in_cols = (pixels >= left) & (pixels < left + augment.cutout_size)
            hole = in_rows[:, :, None] & in_cols[:, None, :] & draws.hole[part, None, None]
            batch = torch.where(hole[:, None], self._fill, batch)
        erasing = draws.erasing[part] if augment.erasing_p else None
        if erasing is not None and augment.erasing_fill == "black":  # before normalization: black pixels
            batch, erasing = G.erase(batch, erasing, value=0), None
        return self._normalized(batch, erasing)

    def _normalized(self, batch: torch.Tensor, erasing: G.ErasingDraws | None = None) -> torch.Tensor:
        """uint8 NCHW -> float NCHW normalized with the CIFAR-10 statistics, then RandomErasing's rectangles set to
        0 (the dataset mean) when given; channels_last strides (no copy when they are already), or contiguous."""
        x = batch.float().sub_(self._mean).mul_(self._inv_std)
        if erasing is not None:
            x = G.erase(x, erasing)
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)


def _pad(images: torch.Tensor, padding: int, reflect: bool) -> torch.Tensor:
    """Pad uint8 NHWC images on both spatial sides: zeros, or mirrored without the edge (OpenCV REFLECT_101)."""
    if not padding:
        return images.contiguous()
    if reflect:
        size = images.shape[1]
        index = torch.arange(-padding, size + padding, device=images.device).abs()
        index = torch.where(index >= size, 2 * (size - 1) - index, index)
        return images[:, index][:, :, index].contiguous()
    return F.pad(images, (0, 0, padding, padding, padding, padding)).contiguous()


__all__ = ["TensorLoader"]
