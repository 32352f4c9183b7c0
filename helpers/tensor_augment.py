"""Batched augmentations for `TensorLoader`: whole chunks of uint8 images [B, 3, H, W] at once, on any device.

Every random choice is drawn up front for an epoch (`draw_*`, from the loader's per-epoch seeded generator) and
applied per chunk (`affine`, `randaugment`, `erase`), so a chunk of thousands of images costs a few dozen kernels.
Each matches a CPU pipeline in distribution, checked by tests/test_tensor_augment.py:

- `affine`: albumentations `Rotate` / `Affine` with a constant border: rotation about the image centre, scale,
  integer shift, bilinear, the uncovered area filled with a pixel value; one `affine_grid` + `grid_sample`;
- `randaugment`: torchvision.transforms.v2 `RandAugment`: its 14 ops, magnitude bins and random signs, `num_ops`
  ops per image, each image its own; the chunk is grouped by (op, sign) and each group transformed by the same
  torchvision v2 functional op in one call;
- `erase`: torchvision `RandomErasing` (area 2-33 % of the image, aspect ratio 0.3-3.3 log-uniform, 10 tries).
- `quarter_turns`: albumentations `RandomRotate90`, k quarter turns with k uniform in 0..3.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

# torchvision.transforms.v2.RandAugment's op space: name -> (magnitudes over `bins` bins for `size` x `size` images,
# or None for ops without one; signed: the magnitude is negated with probability 1/2).
Magnitudes = Callable[[int, int], torch.Tensor] | None
RANDAUGMENT_SPACE: dict[str, tuple[Magnitudes, bool]] = {
    "Identity": (None, False),
    "ShearX": (lambda bins, size: torch.linspace(0.0, 0.3, bins), True),
    "ShearY": (lambda bins, size: torch.linspace(0.0, 0.3, bins), True),
    "TranslateX": (lambda bins, size: torch.linspace(0.0, 150.0 / 331.0 * size, bins), True),
    "TranslateY": (lambda bins, size: torch.linspace(0.0, 150.0 / 331.0 * size, bins), True),
    "Rotate": (lambda bins, size: torch.linspace(0.0, 30.0, bins), True),
    "Brightness": (lambda bins, size: torch.linspace(0.0, 0.9, bins), True),
    "Color": (lambda bins, size: torch.linspace(0.0, 0.9, bins), True),
    "Contrast": (lambda bins, size: torch.linspace(0.0, 0.9, bins), True),
    "Sharpness": (lambda bins, size: torch.linspace(0.0, 0.9, bins), True),
    "Posterize": (lambda bins, size: (8 - (torch.arange(bins) / ((bins - 1) / 4))).round().int(), False),
    "Solarize": (lambda bins, size: torch.linspace(1.0, 0.0, bins), False),
    "AutoContrast": (None, False),
    "Equalize": (None, False),
}
RANDAUGMENT_OPS = tuple(RANDAUGMENT_SPACE)
RANDAUGMENT_BINS = 31  # torchvision's num_magnitude_bins


class PerImage:
    """Base of the draw dataclasses: tensors whose first dimension is the image; sliceable and movable together."""

    def __getitem__(self, index: slice | torch.Tensor) -> "PerImage":
        return type(self)(*(getattr(self, f.name)[index] for f in fields(self)))

    def to(self, device: torch.device | str) -> "PerImage":
        return type(self)(*(getattr(self, f.name).to(device) for f in fields(self)))


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device) * (high - low) + low


def _coin(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device) < p


# ---------------------------------------------------------------- quarter turns


def draw_quarter_turns(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """albumentations `RandomRotate90(p)`: with probability p, k counter-clockwise quarter turns, k uniform in 0..3
    (k = 0 included, as albumentations draws it); otherwise 0. Integers [n]."""
    k = torch.randint(0, 4, (n,), generator=generator, device=generator.device)
    return torch.where(_coin(n, p, generator), k, 0)


def quarter_turns(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Images [B, C, S, S] each turned counter-clockwise `turns` [B] times by 90 degrees (as `np.rot90` on HWC)."""
    k = turns.view(-1, 1, 1, 1)
    for quarter in (1, 2, 3):
        images = torch.where(k == quarter, torch.rot90(images, quarter, dims=(2, 3)), images)
    return images


# ---------------------------------------------------------------- rotation, scale, shift


@dataclass(frozen=True)
class AffineDraws(PerImage):
    """Per image: whether it is warped, the angle (degrees, counter-clockwise), scale and shift (pixels) per axis."""

    applied: torch.Tensor   # bool [N]
    angle: torch.Tensor     # [N]
    scale: torch.Tensor     # [N, 2]: x, y
    shift: torch.Tensor     # [N, 2]: x, y


def draw_affine(n: int, p: float, rotate_limit: float, scale_limit: float, shift_limit: float, size: int,
                generator: torch.Generator) -> AffineDraws:
    """The draws of albumentations 2.x `Rotate(limit)` / `Affine(rotate, scale, translate_percent)`: angle uniform in
    ±`rotate_limit`; x and y scale each uniform in 1 ± `scale_limit`; x and y shift each `int(u * size)` pixels for
    u uniform in ±`shift_limit` (albumentations truncates toward zero); all with probability `p`."""
    applied = _coin(n, p, generator)
    angle = _uniform(n, -rotate_limit, rotate_limit, generator)
    scale = torch.stack([_uniform(n, 1 - scale_limit, 1 + scale_limit, generator) for _ in range(2)], 1)
    shift = torch.stack([(_uniform(n, -shift_limit, shift_limit, generator) * size).trunc() for _ in range(2)], 1)
    return AffineDraws(applied, angle, scale, shift)


def affine(images: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor | None = None,
           shift: torch.Tensor | None = None, fill: tuple[int, ...] | torch.Tensor = (0, 0, 0)) -> torch.Tensor:
    """Warp uint8 images [B, C, S, S] like albumentations (and cv2.warpAffine, bilinear, constant border `fill`):
    each image scaled per axis by `scale` [B, 2], rotated counter-clockwise by `angle` [B] degrees about its centre,
    then shifted by `shift` [B, 2] pixels (x, y). Returns uint8 [B, C, S, S]."""
    batch, channels, size, _ = images.shape
    radians = torch.deg2rad(angle.float().remainder(360))
    cos, sin = torch.cos(radians), torch.sin(radians)
    scale = torch.ones(batch, 2, device=images.device) if scale is None else scale.float()
    shift = torch.zeros(batch, 2, device=images.device) if shift is None else shift.float()
    # albumentations' forward map (pixel coordinates about the centre, y down): dst = [[c, s], [-s, c]] S src + t.
    # affine_grid wants the inverse in normalized coordinates (the centre at 0, the border at ±1):
    # src = S^-1 [[c, -s], [s, c]] (dst - t).
    inverse = torch.stack([torch.stack([cos / scale[:, 0], -sin / scale[:, 0]], 1),
                           torch.stack([sin / scale[:, 1], cos / scale[:, 1]], 1)], 1)    # [B, 2, 2]
    offset = -(inverse @ (shift * (2 / size)).unsqueeze(-1))                            # [B, 2, 1]
    grid = F.affine_grid(torch.cat([inverse, offset], 2), [batch, channels, size, size], align_corners=False)
    fill = torch.as_tensor(fill, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    # Sampling (image - fill) with zero padding blends the border with `fill`, as cv2's BORDER_CONSTANT does.
    warped = F.grid_sample(images.float() - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (warped + fill).round_().clamp_(0, 255).to(torch.uint8)


# ---------------------------------------------------------------- RandAugment


def randaugment_magnitude(op: str, magnitude: int, size: int, bins: int = RANDAUGMENT_BINS) -> float:
    """torchvision's magnitude of `op` at bin `magnitude` for `size` x `size` images (0.0 for ops without one)."""
    magnitudes, _ = RANDAUGMENT_SPACE[op]
    return 0.0 if magnitudes is None else float(magnitudes(bins, size)[magnitude])


def draw_randaugment(n: int, num_ops: int, generator: torch.Generator) -> torch.Tensor:
    """`num_ops` op keys per image [n, num_ops]: key = 2 * op index + negated, the op uniform over the 14 ops and a
    signed op's magnitude negated with probability 1/2 (torchvision's `rand <= 0.5`); unsigned ops keep sign +."""
    ops = torch.randint(0, len(RANDAUGMENT_OPS), (n, num_ops), generator=generator, device=generator.device)
    negated = torch.rand(n, num_ops, generator=generator, device=generator.device) <= 0.5
    signed = torch.tensor([s for _, s in RANDAUGMENT_SPACE.values()], device=ops.device)
    return 2 * ops + (negated & signed[ops]).long()


def randaugment_op(images: torch.Tensor, op: str, magnitude: float) -> torch.Tensor:
    """One RandAugment op on uint8 images [..., C, H, W] with torchvision v2's functional op, as RandAugment calls
    it (nearest interpolation, fill 0)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    nearest = InterpolationMode.NEAREST
    if op == "Identity":
        return images
    if op in ("ShearX", "ShearY"):
        shear = math.degrees(math.atan(magnitude))
        return TF.affine(images, angle=0.0, translate=[0, 0], scale=1.0, interpolation=nearest, fill=None,
                         shear=[shear, 0.0] if op == "ShearX" else [0.0, shear], center=[0, 0])
    if op in ("TranslateX", "TranslateY"):
        translate = [int(magnitude), 0] if op == "TranslateX" else [0, int(magnitude)]
        return TF.affine(images, angle=0.0, translate=translate, scale=1.0, shear=[0.0, 0.0],
                         interpolation=nearest, fill=None)
    if op == "Rotate":
        return TF.rotate(images, angle=magnitude, interpolation=nearest, fill=None)
    if op == "Brightness":
        return TF.adjust_brightness(images, brightness_factor=1.0 + magnitude)
    if op == "Color":
        return TF.adjust_saturation(images, saturation_factor=1.0 + magnitude)
    if op == "Contrast":
        return TF.adjust_contrast(images, contrast_factor=1.0 + magnitude)
    if op == "Sharpness":
        return TF.adjust_sharpness(images, sharpness_factor=1.0 + magnitude)
    if op == "Posterize":
        return TF.posterize(images, bits=int(magnitude))
    if op == "Solarize":
        return TF.solarize(images, threshold=255 * magnitude)
    if op == "AutoContrast":
        return TF.autocontrast(images)
    if op == "Equalize":
        return TF.equalize(images)
    raise ValueError(f"unknown RandAugment op {op!r}")


def randaugment(images: torch.Tensor, keys: torch.Tensor, key_counts: np.ndarray, magnitude: int) -> torch.Tensor:
    """Apply to each uint8 image [B, C, S, S] the op of its key (`draw_randaugment`, one column) at `magnitude`.

    `key_counts` is `np.bincount` of the keys computed on the host (from the epoch's draws copied there once), so
    grouping needs no device synchronization: the images are sorted by key, each group goes through its op in one
    call, and the results are put back in place.
    """
    size = images.shape[-1]
    order = torch.argsort(keys, stable=True)
    groups = images[order].split([int(c) for c in key_counts])
    out = []
    for key, group in enumerate(groups):
        if len(group):
            op = RANDAUGMENT_OPS[key // 2]
            value = randaugment_magnitude(op, magnitude, size)
            out.append(randaugment_op(group, op, -value if key % 2 else value))
    result = torch.empty_like(images)
    result[order] = torch.cat(out)
    return result


# ---------------------------------------------------------------- RandomErasing


@dataclass(frozen=True)
class ErasingDraws(PerImage):
    """Per image: whether a rectangle is erased, its top-left corner and its size (pixels)."""

    applied: torch.Tensor   # bool [N]
    top: torch.Tensor       # [N]
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor


def draw_erasing(n: int, p: float, size: int, generator: torch.Generator, scale: tuple[float, float] = (0.02, 0.33),
                 ratio: tuple[float, float] = (0.3, 3.3), tries: int = 10) -> ErasingDraws:
    """torchvision `RandomErasing(p, scale, ratio)`'s rectangles: with probability p, up to `tries` draws of an area
    (uniform fraction `scale` of the image) and an aspect ratio (log-uniform in `ratio`) until the rectangle fits
    (height and width < `size`), then a top-left corner uniform among the positions that keep it inside; nothing is
    erased when no try fits."""
    area = size * size * _uniform(n * tries, *scale, generator).view(n, tries)
    aspect = torch.exp(_uniform(n * tries, math.log(ratio[0]), math.log(ratio[1]), generator)).view(n, tries)
    heights, widths = (area * aspect).sqrt().round().long(), (area / aspect).sqrt().round().long()
    fits = (heights < size) & (widths < size)
    first = fits.long().argmax(1, keepdim=True)                  # the first try that fits (0 if none does)
    height, width = heights.gather(1, first).squeeze(1), widths.gather(1, first).squeeze(1)
    top = (torch.rand(n, generator=generator, device=generator.device) * (size - height + 1)).long()
    left = (torch.rand(n, generator=generator, device=generator.device) * (size - width + 1)).long()
    return ErasingDraws(_coin(n, p, generator) & fits.any(1), top, left, height, width)


def erase(images: torch.Tensor, rectangles: ErasingDraws, value: float = 0.0) -> torch.Tensor:
    """Set each image's rectangle to `value` where `rectangles.applied`: images [B, C, H, W], float after
    normalization (0 is the dataset mean) or uint8 before it (0 is black), `rectangles` for the same B images."""
    r, pixels = rectangles, torch.arange(images.shape[-1], device=images.device)
    in_rows = (pixels >= r.top[:, None]) & (pixels < (r.top + r.height)[:, None])
    in_cols = (pixels >= r.left[:, None]) & (pixels < (r.left + r.width)[:, None])
    hole = in_rows[:, :, None] & in_cols[:, None, :] & r.applied[:, None, None]
    return images.masked_fill(hole[:, None], value)


__all__ = ["RANDAUGMENT_OPS", "RANDAUGMENT_SPACE", "AffineDraws", "ErasingDraws", "PerImage", "affine", "draw_affine",
           "draw_erasing", "draw_quarter_turns", "draw_randaugment", "erase", "quarter_turns", "randaugment",
           "randaugment_magnitude", "randaugment_op"]
