"""Each augmentation in helpers.transforms does what its name says (albumentations 2.x ignores 1.x names silently)."""
from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch

from helpers import transforms as T
from helpers.data import CIFAR10_MEAN, CIFAR10_STD

SEEDS = range(20)


def apply(augmentation, image: np.ndarray, seed: int) -> np.ndarray:
    return A.Compose([augmentation], seed=seed)(image=image)["image"]


def position_image() -> np.ndarray:
    """Every pixel unique: red encodes the row, green the column, blue is constant."""
    yy, xx = np.mgrid[0:32, 0:32]
    return np.stack([yy * 8 + 3, xx * 8 + 3, np.full_like(yy, 200)], -1).astype(np.uint8)


def blob_image(top: int = 12, left: int = 12, size: int = 8) -> np.ndarray:
    """A white square on black."""
    image = np.zeros((32, 32, 3), np.uint8)
    image[top:top + size, left:left + size] = 255
    return image


def centroid(image: np.ndarray) -> np.ndarray:
    weight = image[..., 0].astype(float) * (image[..., 0] > 127)
    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    return np.array([(yy * weight).sum(), (xx * weight).sum()]) / weight.sum()


def test_mean_pixel_is_the_cifar_mean() -> None:
    assert T.MEAN_PIXEL == (125, 123, 114)


def test_cutout_fills_one_8x8_hole_with_the_mean() -> None:
    image = np.full((32, 32, 3), 7, np.uint8)  # far from the mean in every channel
    full_holes = 0
    for seed in SEEDS:
        out = apply(T.cutout(size=8, p=1.0), image, seed)
        changed = (out != image).any(-1)
        ys, xs = np.nonzero(changed)
        assert 0 < changed.sum() <= 64
        assert (out[changed] == T.MEAN_PIXEL).all(), "the hole must be filled with the dataset mean"
        assert (out[~changed] == image[~changed]).all()
        box = changed[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        assert box.all(), "one rectangular hole"
        if (ys.min() > 0 and xs.min() > 0 and ys.max() < 31 and xs.max() < 31) or changed.sum() == 64:
            assert changed.sum() == 64 and box.shape == (8, 8), "a hole inside the image is exactly 8x8"
            full_holes += 1
    assert full_holes > 0


def test_cutout_with_p0_changes_nothing() -> None:
    image = np.full((32, 32, 3), 7, np.uint8)
    assert (apply(T.cutout(p=0.0), image, 0) == image).all()


def test_horizontal_flip_mirrors() -> None:
    image = position_image()
    np.testing.assert_array_equal(apply(T.horizontal_flip(p=1.0), image, 0), image[:, ::-1])
    np.testing.assert_array_equal(apply(T.horizontal_flip(p=0.0), image, 0), image)


def test_shift_moves_content_within_the_limit_and_fills_with_the_mean() -> None:
    image = blob_image()
    shifts = []
    for seed in SEEDS:
        out = apply(T.shift_scale_rotate(shift=0.1, scale=0.0, rotate=0, p=1.0), image, seed)
        shift = centroid(out) - centroid(image)
        assert np.abs(shift).max() <= 0.1 * 32 + 1
        shifts.append(np.abs(shift).max())
        uncovered = (out == T.MEAN_PIXEL).all(-1)
        if np.abs(shift).max() >= 1:
            assert uncovered.any(), "the area shifted in must be filled with the mean"
    assert max(shifts) >= 1.5, "a 10% shift must move the content by more than a pixel"


def test_rotation_and_scale_change_the_blob_but_keep_it_centred() -> None:
    image = blob_image(top=12, left=12, size=8)  # centred at (15.5, 15.5)
    rotated = apply(T.shift_scale_rotate(shift=0.0, scale=0.0, rotate=45, p=1.0), image, 3)
    scaled = apply(T.shift_scale_rotate(shift=0.0, scale=0.3, rotate=0, p=1.0), image, 3)
    for out in (rotated, scaled):
        assert not np.array_equal(out, image)
        np.testing.assert_allclose(centroid(out), centroid(image), atol=1.0)
    assert (scaled[..., 0] > 127).sum() != (image[..., 0] > 127).sum(), "scaling changes the blob's area"


def test_rotate_turns_a_line_and_fills_corners_with_the_mean() -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    image[15:17, :] = 255  # a horizontal line
    mean_filled = 0
    for seed in SEEDS:
        out = apply(T.rotate(limit=10, p=1.0), image, seed)
        bright_rows = np.nonzero(out[..., 0] > 127)[0]
        assert np.ptp(bright_rows) <= 2 + 32 * np.tan(np.radians(10)), "at most 10 degrees"
        mean_filled += (out == T.MEAN_PIXEL).all(-1).any()
    assert mean_filled >= len(SEEDS) // 2, "corners rotated in are filled with the mean"


def test_rotate90_gives_a_quarter_turn() -> None:
    image = position_image()
    turns = set()
    for seed in SEEDS:
        out = apply(T.rotate90(p=1.0), image, seed)
        matching = [k for k in range(4) if np.array_equal(out, np.rot90(image, k))]
        assert len(matching) == 1
        turns.add(matching[0])
    assert len(turns) >= 3


@pytest.mark.parametrize("padding", [2, 4])
def test_pad_and_crop_offsets_are_within_the_padding(padding: int) -> None:
    image = position_image()
    padded = np.zeros((32 + 2 * padding, 32 + 2 * padding, 3), np.uint8)
    padded[padding:padding + 32, padding:padding + 32] = image
    offsets = set()
    for seed in SEEDS:
        out = apply(T.pad_and_crop(padding=padding), image, seed)
        assert out.shape == image.shape
        found = [(dy, dx) for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)
                 if np.array_equal(out, padded[dy:dy + 32, dx:dx + 32])]
        assert len(found) == 1, "the output is a 32x32 window of the zero-padded image"
        offsets.add((found[0][0] - padding, found[0][1] - padding))
    assert all(abs(dy) <= padding and abs(dx) <= padding for dy, dx in offsets)
    assert len(offsets) > 5, "offsets vary"


def test_build_transform_normalizes_to_a_tensor() -> None:
    mean_image = np.broadcast_to(np.array(T.MEAN_PIXEL, np.uint8), (32, 32, 3)).copy()
    out = T.build_transform()(image=mean_image)["image"]
    assert isinstance(out, torch.Tensor) and out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert out.abs().max() < 0.01, "the mean pixel normalizes to ~0"
    white = T.build_transform()(image=np.full((32, 32, 3), 255, np.uint8))["image"]
    expected = (1 - torch.tensor(CIFAR10_MEAN)) / torch.tensor(CIFAR10_STD)
    torch.testing.assert_close(white[:, 0, 0], expected, atol=1e-4, rtol=1e-4)


def test_denormalize_inverts_normalization() -> None:
    image = position_image()
    tensor = T.build_transform()(image=image)["image"]
    np.testing.assert_array_equal(T.denormalize(tensor), image)
    batch = torch.stack([tensor, tensor])
    assert T.denormalize(batch).shape == (2, 32, 32, 3)
