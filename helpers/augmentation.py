"""`Augmentation`: one description of a CIFAR-10 training augmentation, built for either input pipeline.

`augment.cpu_transform()` is the per-image transform of a DataLoader (albumentations, or torchvision v2 for
RandAugment and RandomErasing: `helpers.loaders`); `TensorLoader(..., augment=augment)` applies the same as batched
tensor ops on the device (`helpers.tensor_loader`). tests/test_tensor_loader.py and tests/test_tensor_augment.py
check that the two match in distribution.
"""
from __future__ import annotations

from dataclasses import dataclass

import albumentations as A

from . import transforms as T


@dataclass(frozen=True)
class Augmentation:
    """A CIFAR-10 training augmentation, buildable for either pipeline. Applied in this order:

    - `crop_padding`: pad each side by this many pixels (zeros, or reflected with `reflect`), crop 32x32 back at a
      uniformly random offset; 0 disables the crop.
    - `flip`: mirror left-right with probability 0.5.
    - `rotate90_p`: with this probability k counter-clockwise quarter turns, k uniform in 0..3 (albumentations
      `RandomRotate90`).
    - `rotate_limit`, `scale_limit`, `shift_limit` with probability `affine_p`: rotation by an angle uniform in
      ±limit degrees, x and y scale in 1 ± limit, x and y shift up to ±limit of the size; bilinear, the uncovered
      border filled with the dataset mean pixel (albumentations `Rotate`, or `Affine` when scale or shift is set).
    - `randaugment_ops` > 0: RandAugment with this many ops per image at `randaugment_magnitude` of 31 bins
      (torchvision v2 `RandAugment`; bin 30 is the paper's magnitude 10, its maximum, for rotate, shear and
      solarize: the paper's M is bin 3M here).
    - `cutout_size`: one square hole of this side filled with the dataset mean pixel, with probability `cutout_p`,
      placed like albumentations 2.x `CoarseDropout`: entirely inside the image, top-left corner uniform; 0: none.
    - `erasing_p` > 0: torchvision `RandomErasing` with its default area and aspect ratio; `erasing_fill` "mean"
      erases after normalization (pixels set to 0, the dataset mean), "black" before it (pixels set to 0 of 255,
      as `RandomErasing` placed before `Normalize` does).
    - normalization with the CIFAR-10 mean and standard deviation.
    """

    crop_padding: int = 4
    reflect: bool = False
    flip: bool = True
    rotate90_p: float = 0.0
    rotate_limit: float = 0.0
    scale_limit: float = 0.0
    shift_limit: float = 0.0
    affine_p: float = 0.5
    randaugment_ops: int = 0
    randaugment_magnitude: int = 9
    cutout_size: int = 0
    cutout_p: float = 0.5
    erasing_p: float = 0.0
    erasing_fill: T.ErasingFill = "mean"

    def __post_init__(self) -> None:
        T.check_erasing_fill(self.erasing_fill)

    @property
    def warps(self) -> bool:
        """Whether a rotation, scale or shift is drawn."""
        return self.affine_p > 0 and bool(self.rotate_limit or self.scale_limit or self.shift_limit)

    def albumentation_steps(self) -> list[A.BasicTransform | A.BaseCompose]:
        """The augmentations as albumentations transforms (helpers.transforms builders), in application order."""
        if self.randaugment_ops or self.erasing_p:
            raise ValueError("RandAugment and RandomErasing have no albumentations path: use cpu_transform()")
        steps: list[A.BasicTransform | A.BaseCompose] = []
        if self.crop_padding:
            steps.append(T.pad_and_crop(self.crop_padding, reflect=self.reflect))
        if self.flip:
            steps.append(T.horizontal_flip())
        if self.rotate90_p:
            steps.append(T.rotate90(p=self.rotate90_p))
        if self.warps and (self.scale_limit or self.shift_limit):
            steps.append(T.shift_scale_rotate(self.shift_limit, self.scale_limit, self.rotate_limit, p=self.affine_p))
        elif self.warps:
            steps.append(T.rotate(self.rotate_limit, p=self.affine_p))
        if self.cutout_size:
            steps.append(T.cutout(self.cutout_size, p=self.cutout_p))
        return steps

    def cpu_transform(self, seed: int | None = None) -> A.Compose | T.TorchvisionTransform:
        """The per-image training transform of the DataLoader pipeline, normalization and tensor conversion included:
        albumentations, or torchvision v2 when RandAugment or RandomErasing is on (albumentations has no
        RandAugment; that pipeline takes crop, flip and cutout only). `seed` seeds albumentations' own generator;
        the torchvision pipeline draws from torch's, which `fit` seeds every epoch."""
        if not (self.randaugment_ops or self.erasing_p):
            return T.build_transform(*self.albumentation_steps(), seed=seed)
        if self.reflect or self.rotate90_p or self.warps:
            raise ValueError("with RandAugment or RandomErasing the DataLoader pipeline (torchvision) takes crop, "
                             "flip and cutout only; use the tensor pipeline (TensorLoader) for more")
        return T.randaugment_transform(self.randaugment_ops, self.randaugment_magnitude, self.erasing_p,
                                       padding=self.crop_padding, flip=self.flip, cutout_size=self.cutout_size,
                                       cutout_p=self.cutout_p, erasing_fill=self.erasing_fill)


NO_AUGMENTATION = Augmentation(crop_padding=0, flip=False)


__all__ = ["NO_AUGMENTATION", "Augmentation"]
