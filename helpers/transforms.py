"""Albumentations pipelines for CIFAR-10: uint8 HWC image in, normalized float tensor [3, 32, 32] out.

Written for albumentations 2.x argument names (1.x names are silently ignored by 2.x, so every augmentation here
is checked by a test that it does what it says).
"""
from __future__ import annotations

import os
from typing import Callable, Literal, get_args

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks PyPI for updates on import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from .data import CIFAR10_MEAN, CIFAR10_STD  # noqa: E402

MEAN_PIXEL = tuple(round(255 * m) for m in CIFAR10_MEAN)  # (125, 123, 114): the fill for cutout and padding
ErasingFill = Literal["mean", "black"]  # RandomErasing after normalization (the mean) or before it (black)
ERASING_FILLS: tuple[str, ...] = get_args(ErasingFill)


def check_erasing_fill(fill: str) -> None:
    """Raise ValueError unless `fill` is one of `ERASING_FILLS`."""
    if fill not in ERASING_FILLS:
        raise ValueError(f"erasing_fill is one of {ERASING_FILLS}, got {fill!r}")


def pad_and_crop(padding: int = 4, size: int = 32, fill: tuple[int, ...] | int = 0,
                 reflect: bool = False) -> A.Compose:
    """Pad by `padding` pixels on each side, then crop a random `size` x `size` window (offsets uniform)."""
    border = cv2.BORDER_REFLECT_101 if reflect else cv2.BORDER_CONSTANT
    return A.Compose([A.PadIfNeeded(size + 2 * padding, size + 2 * padding, border_mode=border, fill=fill),
                      A.RandomCrop(size, size)])


def horizontal_flip(p: float = 0.5) -> A.HorizontalFlip:
    """Mirror left-right with probability `p`."""
    return A.HorizontalFlip(p=p)


def cutout(size: int = 8, fill: tuple[int, ...] | int = MEAN_PIXEL, p: float = 0.5) -> A.CoarseDropout:
    """One `size` x `size` hole filled with `fill` (default: the dataset mean) with probability `p`.

    albumentations 2.x places the hole entirely inside the image (top-left corner uniform), so it always changes
    `size` x `size` pixels; DeVries & Taylor's Cutout centres it anywhere and lets it overlap the border.
    """
    return A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(size, size),
                           hole_width_range=(size, size), fill=fill, p=p)


def shift_scale_rotate(shift: float = 0.1, scale: float = 0.1, rotate: float = 15, p: float = 0.5,
                       fill: tuple[int, ...] | int = MEAN_PIXEL) -> A.Affine:
    """Random shift (fraction of size), scale (1 +- `scale`) and rotation (+- `rotate` degrees): 2.x `Affine`."""
    return A.Affine(translate_percent=(-shift, shift), scale=(1 - scale, 1 + scale), rotate=(-rotate, rotate),
                    border_mode=cv2.BORDER_CONSTANT, fill=fill, p=p)


def rotate(limit: float = 10, p: float = 0.5, fill: tuple[int, ...] | int = MEAN_PIXEL) -> A.Rotate:
    """Rotate by a random angle in [-limit, limit] degrees."""
    return A.Rotate(limit=(-limit, limit), border_mode=cv2.BORDER_CONSTANT, fill=fill, p=p)


def rotate90(p: float = 0.5) -> A.RandomRotate90:
    """Rotate by a random multiple of 90 degrees."""
    return A.RandomRotate90(p=p)


def to_normalized_tensor(mean: tuple[float, ...] = CIFAR10_MEAN,
                         std: tuple[float, ...] = CIFAR10_STD) -> list[A.BasicTransform]:
    """Normalize per channel with the CIFAR-10 statistics and convert HWC uint8 to a CHW float tensor."""
    return [A.Normalize(mean=mean, std=std, max_pixel_value=255.0), ToTensorV2()]


def build_transform(*augmentations: A.BasicTransform | A.BaseCompose, seed: int | None = None) -> A.Compose:
    """Compose `augmentations` (none for evaluation) followed by normalization and tensor conversion."""
    return A.Compose([*augmentations, *to_normalized_tensor()], seed=seed)


def denormalize(images: torch.Tensor, mean: tuple[float, ...] = CIFAR10_MEAN,
                std: tuple[float, ...] = CIFAR10_STD) -> np.ndarray:
    """Normalized CHW tensor(s) back to uint8 HWC arrays for display."""
    x = images.detach().float().cpu()
    x = x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


class TorchvisionTransform:
    """Wrap a torchvision.transforms.v2 pipeline in albumentations' call convention, for `ArrayDataset`:
    `transform(image=uint8 HWC array)["image"]` is the pipeline applied to the image as a uint8 CHW tensor.

    Its randomness comes from torch's generator, which `fit` seeds per epoch and DataLoader seeds per worker.
    """

    def __init__(self, pipeline: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.pipeline = pipeline

    def __call__(self, *, image: np.ndarray) -> dict[str, torch.Tensor]:
        chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return {"image": self.pipeline(chw)}

    def __repr__(self) -> str:
        return f"TorchvisionTransform({self.pipeline!r})"


def randaugment_transform(num_ops: int = 2, magnitude: int = 9, erasing_p: float = 0.25, padding: int = 4,
                          flip: bool = True, cutout_size: int = 0, cutout_p: float = 1.0,
                          erasing_fill: ErasingFill = "mean", mean: tuple[float, ...] = CIFAR10_MEAN,
                          std: tuple[float, ...] = CIFAR10_STD) -> TorchvisionTransform:
    """Random crop (pad `padding` with zeros) + flip (if `flip`) + RandAugment(`num_ops`, `magnitude`) +
    normalization + Cutout (`cutout_size` > 0, probability `cutout_p`) + RandomErasing (probability `erasing_p`;
    `erasing_fill` "mean": after normalization, erased pixels set to 0 = the dataset mean; "black": before it,
    erased pixels black), with torchvision v2 (albumentations has no RandAugment). Outputs match
    `build_transform()`'s normalization exactly.

    Cutout is torchvision's `RandomErasing` held to one `cutout_size` square (area and aspect ratio fixed): entirely
    inside the image, top-left corner uniform, filled with `MEAN_PIXEL`: as `cutout()` (albumentations) and
    `TensorLoader` place and fill it."""
    from torchvision.transforms import v2  # imported here: `import helpers` stays free of torchvision's cost

    check_erasing_fill(erasing_fill)
    erasing = v2.RandomErasing(p=erasing_p, value=0)
    steps = [
        v2.RandomCrop(32, padding=padding),
        v2.RandomHorizontalFlip(p=0.5 if flip else 0.0),
        v2.RandAugment(num_ops=num_ops, magnitude=magnitude),
        v2.ToDtype(torch.float32, scale=True),
        *([erasing] if erasing_fill == "black" else []),
        v2.Normalize(mean, std),
    ]
    if cutout_size:
        square = cutout_size ** 2 / 32 ** 2  # RandomErasing's area is a fraction of the 32x32 image
        fill = [(pixel / 255 - m) / s for pixel, m, s in zip(MEAN_PIXEL, mean, std)]  # MEAN_PIXEL, normalized
        steps.append(v2.RandomErasing(p=cutout_p, scale=(square, square), ratio=(1.0, 1.0), value=fill))
    if erasing_fill == "mean":
        steps.append(erasing)
    return TorchvisionTransform(v2.Compose(steps))
