"""GPU-resident CIFAR-10 loader: the uint8 dataset lives on the device, augmentation is a few batched tensor ops.

A CPU pipeline (PIL/albumentations per image, worker processes, host-to-device copies) cannot keep a modern GPU
busy on 32x32 images. Like airbench and hlb-cifar10, `GpuLoader` copies the uint8 images to the device once and,
per batch, does random crop with padding, horizontal flip and cutout as one gather plus a few elementwise ops.
Its augmentations match the albumentations path (`CropFlipCutout.albumentations()`) in distribution; the tests in
tests/test_gpu_loader.py check it.

Usage (the engine calls `set_epoch` itself, so seeded runs are reproducible and resumable):

    augment = CropFlipCutout(crop_padding=4, flip=True, cutout_size=8)
    train_loader = GpuLoader(images, labels, batch_size=512, train=True, device="cuda", augment=augment)
    test_loader = GpuLoader(test_images, test_labels, batch_size=1024, train=False, device="cuda")

`helpers.loaders.make_crop_flip_loader(..., backend="auto")` picks this loader on CUDA and the albumentations
DataLoader elsewhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F

from . import transforms as T
from .data import CIFAR10_MEAN, CIFAR10_STD


@dataclass(frozen=True)
class CropFlipCutout:
    """The standard CIFAR-10 augmentation, buildable for either pipeline.

    - `crop_padding`: pad each side by this many pixels (zeros, or reflected with `reflect`), crop 32x32 back at a
      uniformly random offset; 0 disables the crop.
    - `flip`: mirror left-right with probability 0.5.
    - `cutout_size`: one square hole of this side filled with the dataset mean pixel, with probability `cutout_p`,
      placed like albumentations 2.x `CoarseDropout`: entirely inside the image, top-left corner uniform; 0: none.
    """

    crop_padding: int = 4
    reflect: bool = False
    flip: bool = True
    cutout_size: int = 0
    cutout_p: float = 0.5

    def albumentation_steps(self) -> list[A.BasicTransform | A.BaseCompose]:
        """The augmentations as albumentations transforms (helpers.transforms builders), in application order."""
        steps: list[A.BasicTransform | A.BaseCompose] = []
        if self.crop_padding:
            steps.append(T.pad_and_crop(self.crop_padding, reflect=self.reflect))
        if self.flip:
            steps.append(T.horizontal_flip())
        if self.cutout_size:
            steps.append(T.cutout(self.cutout_size, p=self.cutout_p))
        return steps

    def albumentations(self, seed: int | None = None) -> A.Compose:
        """The full albumentations training transform: these augmentations, normalization, tensor conversion."""
        return T.build_transform(*self.albumentation_steps(), seed=seed)

    def gpu_loader(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, batch_size: int,
                   device: torch.device | str, seed: int = 0) -> "GpuLoader":
        """A training `GpuLoader` applying these augmentations on `device`."""
        return GpuLoader(images, labels, batch_size, train=True, device=device, augment=self, seed=seed)


NO_AUGMENTATION = CropFlipCutout(crop_padding=0, flip=False)


@dataclass(frozen=True)
class _EpochDraws:
    """Every random choice of one epoch, drawn up front (a handful of kernels instead of several per batch)."""

    order: torch.Tensor        # sample order [N]
    crop_y: torch.Tensor       # crop offsets in 0..2*padding [N]
    crop_x: torch.Tensor
    flip: torch.Tensor         # bool [N]
    hole_y: torch.Tensor       # cutout top-left corner in 0..32-size [N]
    hole_x: torch.Tensor
    hole: torch.Tensor         # bool [N]: this sample gets a hole


class GpuLoader:
    """Batches (normalized float images [B, 3, 32, 32] channels_last, int64 labels) on `device`, like a DataLoader.

    Training (`train=True`): reshuffled every epoch, augmented with `augment`, last partial batch dropped (unless
    the dataset is smaller than one batch). Evaluation: dataset order, no augmentation, every sample.
    `set_epoch(epoch, seed)` fixes the epoch's randomness; without it each new pass draws fresh randomness.
    """

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, batch_size: int, *,
                 train: bool, device: torch.device | str = "cuda", augment: CropFlipCutout | None = None,
                 seed: int = 0, drop_last: bool | None = None, channels_last: bool = True) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 images [N, H, W, 3], got {images.dtype} {list(images.shape)}")
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
        self._mean = torch.tensor(CIFAR10_MEAN, device=self.device) * 255
        self._inv_std = 1 / (torch.tensor(CIFAR10_STD, device=self.device) * 255)
        self._fill = torch.tensor(T.MEAN_PIXEL, dtype=torch.uint8, device=self.device)
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
        draws = self._draw_epoch() if self.train else None
        self.epoch += 1
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            if draws is None:
                index = slice(start, start + self.batch_size)
                batch = self.images[index]
                labels = self.labels[index]
            else:
                part = slice(start, start + self.batch_size)
                order = draws.order[part]
                batch = self._augmented(order, draws, part)
                labels = self.labels[order]
            yield self._normalized(batch), labels

    def _draw_epoch(self) -> _EpochDraws:
        n, size = len(self.labels), self.size
        g = self._generator
        g.manual_seed(self.seed * 1_000_003 + self.epoch)  # the engine's per-epoch seed

        def integers(high: int) -> torch.Tensor:  # uniform in 0..high
            return torch.randint(0, high + 1, (n,), generator=g, device=g.device).to(self.device)

        def coin(p: float) -> torch.Tensor:
            return (torch.rand(n, generator=g, device=g.device) < p).to(self.device)

        order = torch.randperm(n, generator=g, device=g.device).to(self.device)
        augment = self._spec
        span = 2 * augment.crop_padding
        hole_span = size - augment.cutout_size
        return _EpochDraws(order, integers(span), integers(span), coin(0.5 if augment.flip else 0.0),
                           integers(hole_span), integers(hole_span),
                           coin(augment.cutout_p if augment.cutout_size else 0.0))

    def _augmented(self, order: torch.Tensor, draws: _EpochDraws, part: slice) -> torch.Tensor:
        """Crop + flip as one gather from the padded images (uint8 NHWC), then the cutout hole."""
        augment, pixels = self._spec, self._pixels
        _, padded_h, padded_w, channels = self.images.shape
        rows = draws.crop_y[part, None] + pixels                     # source row of each output row [B, 32]
        cols = draws.crop_x[part, None] + pixels
        cols = torch.where(draws.flip[part, None], cols.flip(1), cols)
        flat = (order[:, None, None] * padded_h + rows[:, :, None]) * padded_w + cols[:, None, :]
        batch = self.images.view(-1, channels).index_select(0, flat.view(-1)).view(len(order), self.size,
                                                                                   self.size, channels)
        if augment.cutout_size:
            top, left = draws.hole_y[part, None], draws.hole_x[part, None]
            in_rows = (pixels >= top) & (pixels < top + augment.cutout_size)
            in_cols = (pixels >= left) & (pixels < left + augment.cutout_size)
            hole = in_rows[:, :, None] & in_cols[:, None, :] & draws.hole[part, None, None]
            batch = torch.where(hole[..., None], self._fill, batch)
        return batch

    def _normalized(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC -> float NCHW normalized with the CIFAR-10 statistics (channels_last strides, no copy)."""
        x = batch.float().sub_(self._mean).mul_(self._inv_std).permute(0, 3, 1, 2)
        return x if self.channels_last else x.contiguous()


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


__all__ = ["CropFlipCutout", "GpuLoader"]
