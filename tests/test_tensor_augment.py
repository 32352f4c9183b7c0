"""The tensor pipeline's rotation, quarter turns, RandAugment and RandomErasing (helpers.tensor_augment, run on the
CPU): each matches its CPU counterpart (albumentations, torchvision v2) in what it does and in distribution."""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from scipy import stats
from torchvision.transforms import v2

import helpers as h
from helpers import bench
from helpers import tensor_augment as G
from helpers import tensor_loader
from helpers import transforms as T
from helpers.augmentation import Augmentation
from helpers.tensor_loader import TensorLoader

N_SAMPLES = 2000
RANDAUGMENT = v2.RandAugment()  # the reference: torchvision's own op space and op application


def position_image() -> np.ndarray:
    """R encodes the row, G the column (both linear, so bilinear sampling keeps them exact), B is constant."""
    rows, cols = np.mgrid[0:32, 0:32]
    return np.stack([10 + 7 * rows, 10 + 7 * cols, np.full_like(rows, 200)], axis=-1).astype(np.uint8)


def natural_images(n: int, seed: int = 0) -> np.ndarray:
    """Smooth random images with edges, some of low contrast (exercises AutoContrast and Equalize)."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        coarse = rng.integers(0, 256, size=(6, 6, 3)).astype(np.uint8)
        image = cv2.resize(coarse, (32, 32), interpolation=cv2.INTER_CUBIC if i % 2 else cv2.INTER_NEAREST)
        if i % 3 == 0:
            image = (image // 4 + 80).astype(np.uint8)
        images.append(image)
    return np.stack(images)


def loader_outputs(augment: Augmentation, image: np.ndarray, n: int = N_SAMPLES, seed: int = 0) -> np.ndarray:
    """`n` copies of `image` through the tensor pipeline (on the CPU), normalized float NCHW as numpy."""
    loader = TensorLoader(np.repeat(image[None], n, 0), np.zeros(n), n, train=True, device="cpu", augment=augment,
                       seed=seed)
    return next(iter(loader))[0].numpy()


def albumentations_outputs(augment: Augmentation, image: np.ndarray, n: int = N_SAMPLES) -> np.ndarray:
    transform = A.Compose(augment.albumentation_steps(), seed=0)
    return np.stack([transform(image=image)["image"] for _ in range(n)])


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def chi_square(counts: np.ndarray, expected: np.ndarray) -> float:
    return float(((counts - expected) ** 2 / expected).sum())


# ---------------------------------------------------------------- rotation (and scale, shift)


@pytest.mark.parametrize("angle, scale, shift", [(7.3, (1, 1), (0, 0)), (-9.5, (1, 1), (0, 0)),
                                                 (45.0, (1, 1), (0, 0)), (5.0, (0.93, 1.07), (2, -3)),
                                                 (-8.0, (1.1, 0.9), (-1, 0))])
def test_affine_matches_albumentations_within_one_level(angle, scale, shift):
    images = natural_images(6)
    if scale == (1, 1) and shift == (0, 0):
        reference = A.Rotate(limit=(angle, angle), border_mode=cv2.BORDER_CONSTANT, fill=T.MEAN_PIXEL, p=1)
    else:
        reference = A.Affine(rotate=(angle, angle), scale={"x": (scale[0],) * 2, "y": (scale[1],) * 2},
                             translate_px={"x": (shift[0],) * 2, "y": (shift[1],) * 2},
                             border_mode=cv2.BORDER_CONSTANT, fill=T.MEAN_PIXEL, p=1)
    expected = np.stack([reference(image=image)["image"] for image in images]).astype(int)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    n = len(images)
    warped = G.affine(batch, torch.full((n,), angle), torch.tensor([scale] * n), torch.tensor([shift] * n).float(),
                      fill=T.MEAN_PIXEL)
    assert warped.dtype == torch.uint8
    difference = np.abs(warped.permute(0, 2, 3, 1).numpy().astype(int) - expected)
    assert difference.max() <= 1 and difference.mean() < 0.01


def test_affine_fills_the_uncovered_corners_with_the_mean_pixel():
    white = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    turned = G.affine(white, torch.tensor([45.0]), fill=T.MEAN_PIXEL)[0]
    for row, col in ((0, 0), (0, 31), (31, 0), (31, 31)):
        assert turned[:, row, col].tolist() == list(T.MEAN_PIXEL)
    assert turned[:, 16, 16].tolist() == [255, 255, 255]
    shifted = G.affine(white, torch.zeros(1), shift=torch.tensor([[3.0, 0.0]]), fill=T.MEAN_PIXEL)[0]
    assert (shifted[:, :, :3] == torch.tensor(T.MEAN_PIXEL).view(3, 1, 1)).all() and (shifted[:, :, 3:] == 255).all()


def decode_warp(output: np.ndarray) -> tuple[float, float, float, float, float]:
    """(angle, x scale, y scale, x shift, y shift) of a warped position image, by least squares over the pixels
    that were sampled entirely from inside it (B still 200): source = S^-1 R^T (destination - shift)."""
    inside = output[..., 2] == 200
    rows, cols = np.nonzero(inside)
    source_x = (output[rows, cols, 1] - 10) / 7 - 15.5
    source_y = (output[rows, cols, 0] - 10) / 7 - 15.5
    design = np.stack([cols - 15.5, rows - 15.5, np.ones(len(rows))], 1)
    (m00, m01, b0), *_ = np.linalg.lstsq(design, source_x, rcond=None)
    (m10, m11, b1), *_ = np.linalg.lstsq(design, source_y, rcond=None)
    matrix = np.array([[m00, m01], [m10, m11]])
    shift = -np.linalg.solve(matrix, [b0, b1])
    return (float(np.degrees(np.arctan2(m10, m11))), float(1 / np.hypot(m00, m01)), float(1 / np.hypot(m10, m11)),
            float(shift[0]), float(shift[1]))


@pytest.mark.parametrize("augment", [
    Augmentation(crop_padding=0, flip=False, rotate_limit=10, affine_p=0.5),                     # notebook 03
    Augmentation(crop_padding=0, flip=False, rotate_limit=10, scale_limit=0.1, shift_limit=0.1,  # shift too
                 affine_p=0.5)], ids=["rotate", "affine"])
def test_warp_parameters_follow_the_albumentations_distribution(augment):
    image = position_image()
    tensor = T.denormalize(torch.from_numpy(loader_outputs(augment, image)))
    cpu = albumentations_outputs(augment, image)
    decoded = {}
    for name, outputs in (("tensor", tensor), ("albumentations", cpu)):
        warped = np.any(outputs != image, axis=(1, 2, 3))
        assert abs(warped.mean() - augment.affine_p) < 5 * np.sqrt(0.25 / len(outputs)), name
        decoded[name] = np.array([decode_warp(output) for output in outputs[warped]])
        angle = decoded[name][:, 0]
        assert stats.kstest(angle, stats.uniform(-10, 20).cdf).pvalue > 1e-4, name  # uniform in ±10°
        assert 9.8 < np.abs(angle).max() < 10.05, name  # ... over the whole range (P(max < 9.8) < 1e-8)
        if augment.scale_limit:
            for scale in decoded[name][:, 1:3].T:
                assert stats.kstest(scale, stats.uniform(0.9, 0.2).cdf).pvalue > 1e-4, name
                assert 0.895 < scale.min() < 0.91 and 1.09 < scale.max() < 1.105, name
            for shift in decoded[name][:, 3:].T:  # int(u * 32) for u uniform in ±0.1: -3..3, 0 twice as likely
                counts = np.bincount(np.round(shift).astype(int) + 3, minlength=7)
                expected = np.array([0.2, 1, 1, 2, 1, 1, 0.2]) / 6.4 * len(shift)  # widths 0.2/3.2, 1/3.2...
                assert len(counts) == 7 and chi_square(counts, expected) < 40, name
        else:
            np.testing.assert_allclose(decoded[name][:, 1:3], 1, atol=0.02)
            np.testing.assert_allclose(decoded[name][:, 3:], 0, atol=0.1)
    for column in range(decoded["tensor"].shape[1]):  # and the two paths agree with each other
        assert stats.ks_2samp(decoded["tensor"][:, column], decoded["albumentations"][:, column]).pvalue > 1e-4


# ---------------------------------------------------------------- quarter turns


def test_quarter_turns_follow_albumentations_random_rotate90():
    image = position_image()
    augment = Augmentation(crop_padding=0, flip=False, rotate90_p=0.5)
    turned = [np.rot90(image, k) for k in range(4)]
    expected = np.array([0.5 + 0.5 / 4] + [0.5 / 4] * 3) * N_SAMPLES  # k = 0 also when drawn
    for outputs in (T.denormalize(torch.from_numpy(loader_outputs(augment, image))),
                    albumentations_outputs(augment, image)):
        matches = np.array([[np.array_equal(output, t) for t in turned] for output in outputs])
        assert np.all(matches.sum(1) == 1), "every output is exactly one quarter turn of the image"
        counts = matches.sum(0)
        assert chi_square(counts, expected) < 30  # 3 degrees of freedom: p < 1e-5


# ---------------------------------------------------------------- RandAugment


def test_randaugment_space_is_torchvisions():
    space = RANDAUGMENT._AUGMENTATION_SPACE
    assert G.RANDAUGMENT_OPS == tuple(space)
    for op, (magnitudes, signed) in space.items():
        ours, our_signed = G.RANDAUGMENT_SPACE[op]
        assert our_signed == signed, op
        theirs = magnitudes(G.RANDAUGMENT_BINS, 32, 32)
        if theirs is None:
            assert ours is None, op
        else:
            assert torch.equal(ours(G.RANDAUGMENT_BINS, 32), theirs), op


def torchvision_op(image: torch.Tensor, op: str, magnitude: float) -> torch.Tensor:
    """What torchvision's RandAugment does to one image [3, H, W] when it draws `op` with `magnitude`."""
    return RANDAUGMENT._apply_image_or_video_transform(image, op, magnitude,
                                                       interpolation=RANDAUGMENT.interpolation,
                                                       fill=RANDAUGMENT._fill)


# Every (op, sign) key a draw can give: 2 * op index + negated, negated only for signed ops.
KEYS = [2 * i + negated for i, op in enumerate(G.RANDAUGMENT_OPS)
        for negated in ((0, 1) if G.RANDAUGMENT_SPACE[op][1] else (0,))]


def key_counts(keys: torch.Tensor) -> np.ndarray:
    return np.bincount(keys.numpy(), minlength=2 * len(G.RANDAUGMENT_OPS))


@pytest.mark.parametrize("op", G.RANDAUGMENT_OPS)
@pytest.mark.parametrize("magnitude", [9, 30])
def test_each_randaugment_op_matches_torchvision_within_one_level(op, magnitude):
    images = torch.from_numpy(natural_images(12)).permute(0, 3, 1, 2)  # a channels_last batch, as the loader's
    signs = (False, True) if G.RANDAUGMENT_SPACE[op][1] else (False,)
    for negated in signs:
        keys = torch.full((len(images),), 2 * G.RANDAUGMENT_OPS.index(op) + negated)
        batched = G.randaugment(images, keys, key_counts(keys), magnitude)
        value = G.randaugment_magnitude(op, magnitude, 32)
        for image, result in zip(images, batched):
            expected = torchvision_op(image.contiguous(), op, -value if negated else value)
            assert (result.int() - expected.int()).abs().max() <= 1, (op, negated)


def test_randaugment_gives_each_image_its_own_op():
    images = torch.from_numpy(natural_images(2 * len(KEYS), seed=1)).permute(0, 3, 1, 2)
    keys = torch.tensor(KEYS * 2)[torch.randperm(2 * len(KEYS), generator=generator())]
    batched = G.randaugment(images, keys, key_counts(keys), 9)
    for image, key, result in zip(images, keys.tolist(), batched):
        op = G.RANDAUGMENT_OPS[key // 2]
        value = G.randaugment_magnitude(op, 9, 32)
        expected = torchvision_op(image.contiguous(), op, -value if key % 2 else value)
        assert (result.int() - expected.int()).abs().max() <= 1, op


def test_randaugment_draws_are_uniform_over_ops_with_fair_signs():
    keys = G.draw_randaugment(50_000, 2, generator()).numpy()
    assert keys.shape == (50_000, 2)
    ops, negated = keys // 2, keys % 2 == 1
    counts = np.bincount(ops.ravel(), minlength=14)
    assert chi_square(counts, np.full(14, ops.size / 14)) < 50  # 13 degrees of freedom: p < 1e-5
    signed = np.array([G.RANDAUGMENT_SPACE[op][1] for op in G.RANDAUGMENT_OPS])
    assert not negated[~signed[ops]].any(), "unsigned ops keep their magnitude"
    share = negated[signed[ops]].mean()
    assert abs(share - 0.5) < 5 * np.sqrt(0.25 / signed[ops].sum())
    assert not np.array_equal(ops[:, 0], ops[:, 1]), "each image draws its ops independently"


def test_loader_applies_randaugment_per_image():
    images = natural_images(64, seed=2)
    augment = Augmentation(crop_padding=0, flip=False, randaugment_ops=1)
    loader = TensorLoader(images, np.arange(64), 64, train=True, device="cpu", augment=augment)
    batch, index = next(iter(loader))
    outputs = torch.from_numpy(T.denormalize(batch)).permute(0, 3, 1, 2).int()
    sources = torch.from_numpy(images[index.numpy()]).permute(0, 3, 1, 2)
    candidates = []
    for key in KEYS:
        keys = torch.full((64,), key)
        candidates.append(G.randaugment(sources, keys, key_counts(keys), 9).int())
    assert len(KEYS) == 23  # 9 signed ops with 2 signs, 5 unsigned
    # Each output is one of the 23 (op, sign) results of its own source image (normalization rounds within 1).
    distance = torch.stack([(c - outputs).abs().amax((1, 2, 3)) for c in candidates])
    assert (distance.min(0).values <= 1).all()


def test_cpu_pipeline_is_torchvision_randaugment_and_erasing():
    augment = Augmentation(crop_padding=4, flip=True, randaugment_ops=2, randaugment_magnitude=9, erasing_p=0.25)
    pipeline = repr(augment.cpu_transform())
    for step in ("RandomCrop", "RandomHorizontalFlip", "RandAugment", "Normalize", "RandomErasing"):
        assert step in pipeline
    with pytest.raises(ValueError, match="crop, flip and cutout only"):
        Augmentation(randaugment_ops=2, rotate90_p=0.1).cpu_transform()
    cutout = repr(Augmentation(randaugment_ops=3, randaugment_magnitude=12, cutout_size=16, cutout_p=1.0)
                  .cpu_transform())  # notebook 05: Cutout after RandAugment, on both pipelines
    assert "RandAugment(" in cutout and "num_ops=3" in cutout and "magnitude=12" in cutout
    assert "RandomErasing(p=1.0, scale=(0.25, 0.25), ratio=(1.0, 1.0)" in cutout
    with pytest.raises(ValueError, match="no albumentations path"):
        augment.albumentation_steps()
    rotate = repr(Augmentation(rotate90_p=0.1, rotate_limit=10, cutout_size=8).cpu_transform())
    for step in ("RandomRotate90", "Rotate", "CoarseDropout"):
        assert step in rotate


# ---------------------------------------------------------------- RandomErasing


def erased_rectangles(erased: np.ndarray) -> np.ndarray:
    """(height, width, top, left) of each mask [N, H, W] that holds one full rectangle; checks it is one."""
    rows, cols = erased.any(2), erased.any(1)
    height, width = rows.sum(1), cols.sum(1)
    assert np.array_equal(erased.sum((1, 2)), height * width), "a filled rectangle"
    return np.stack([height, width, rows.argmax(1), cols.argmax(1)], 1)


def test_erasing_rectangles_follow_torchvisions_distribution():
    torch.manual_seed(0)
    erasing = v2.RandomErasing(p=1.0, value=0)
    ones = torch.ones(3, 32, 32)
    theirs = erased_rectangles(np.stack([(erasing(ones) == 0).all(0).numpy() for _ in range(N_SAMPLES)]))
    augment = Augmentation(crop_padding=0, flip=False, erasing_p=0.5)
    outputs = loader_outputs(augment, position_image())  # no pixel of it normalizes to exactly 0
    erased = (outputs == 0).all(1)
    hit = erased.any((1, 2))
    assert abs(hit.mean() - 0.5) < 5 * np.sqrt(0.25 / len(hit))
    ours = erased_rectangles(erased[hit])
    for name, values in (("area", lambda r: r[:, 0] * r[:, 1]), ("aspect", lambda r: np.log(r[:, 0] / r[:, 1])),
                         ("top", lambda r: (r[:, 2] + 0.5) / (33 - r[:, 0])),
                         ("left", lambda r: (r[:, 3] + 0.5) / (33 - r[:, 1]))):
        assert stats.ks_2samp(values(ours), values(theirs)).pvalue > 1e-4, name
    for rectangles in (ours, theirs):  # every position is possible, the last one included: 1 / (33 - size)
        for size, corner in ((rectangles[:, 0], rectangles[:, 2]), (rectangles[:, 1], rectangles[:, 3])):
            expected = (1 / (33 - size)).sum()
            assert abs((corner == 32 - size).sum() - expected) < 5 * np.sqrt(expected)
            assert (corner >= 0).all() and (corner + size <= 32).all()
    # The other pixels are the normalized image, untouched.
    expected = loader_outputs(Augmentation(crop_padding=0, flip=False), position_image(), n=1)[0]
    np.testing.assert_array_equal(np.where(erased[:, None], expected, outputs),
                                  np.broadcast_to(expected, outputs.shape))


def test_black_erasing_erases_the_same_rectangles_before_normalization_on_both_pipelines():
    """`erasing_fill="black"` (notebook 05, as its reference's RandomErasing before Normalize): the tensor pipeline
    erases the rectangles it draws for "mean" with black pixels, the DataLoader pipeline places RandomErasing
    before Normalize; an erased pixel is black normalized, the rest the image."""
    image = position_image()
    black = ((0 - np.array(h.CIFAR10_MEAN)) / np.array(h.CIFAR10_STD)).astype(np.float32)[None, :, None, None]
    mean_fill = loader_outputs(Augmentation(crop_padding=0, flip=False, erasing_p=0.5), image, n=200)
    black_fill = loader_outputs(Augmentation(crop_padding=0, flip=False, erasing_p=0.5, erasing_fill="black"),
                                image, n=200)
    erased = (mean_fill == 0).all(1, keepdims=True)  # no pixel of the image normalizes to exactly 0
    assert 0.3 < erased.any((1, 2, 3)).mean() < 0.7
    np.testing.assert_array_equal(np.isclose(black_fill, black, atol=1e-5).all(1, keepdims=True), erased)
    np.testing.assert_allclose(np.where(erased, black, mean_fill), black_fill, atol=1e-5)
    transform = Augmentation(crop_padding=0, flip=False, randaugment_ops=1, randaugment_magnitude=0, erasing_p=1.0,
                             erasing_fill="black").cpu_transform()
    steps = [type(step).__name__ for step in transform.pipeline.transforms]
    assert steps.index("RandomErasing") < steps.index("Normalize") and steps.count("RandomErasing") == 1
    with pytest.raises(ValueError, match="erasing_fill"):
        Augmentation(erasing_fill="zero")


def test_cpu_cutout_of_the_torchvision_pipeline_matches_the_tensor_loaders():
    """With RandAugment on, the CPU pipeline is torchvision's, and Cutout there is a RandomErasing held to one
    16x16 square: the same hole as TensorLoader's (and albumentations'): a full square inside the image, top-left
    corner uniform over 0..16, filled with the mean pixel. (RandAugment itself is off here, num_ops=0, so that
    only the hole changes the image.)"""
    image, n = position_image(), N_SAMPLES
    torch.manual_seed(0)
    transform = T.randaugment_transform(num_ops=0, erasing_p=0.0, padding=0, flip=False, cutout_size=16,
                                        cutout_p=0.5)
    plain = loader_outputs(Augmentation(crop_padding=0, flip=False), image, n=1)[0]
    mean_pixel = loader_outputs(Augmentation(crop_padding=0, flip=False), np.full_like(image, T.MEAN_PIXEL),
                                n=1)[0][:, 0, 0]
    corners = {}
    for name, outputs in (("cpu", np.stack([transform(image=image)["image"].numpy() for _ in range(n)])),
                          ("tensor", loader_outputs(Augmentation(crop_padding=0, flip=False, cutout_size=16,
                                                              cutout_p=0.5), image))):
        hole = (np.abs(outputs - plain) > 1e-3).any(1)
        hit = hole.any((1, 2))
        assert abs(hit.mean() - 0.5) < 5 * np.sqrt(0.25 / n), name
        rectangles = erased_rectangles(hole[hit])
        assert (rectangles[:, :2] == 16).all(), f"{name}: always a full 16x16 square"
        np.testing.assert_allclose(outputs.transpose(0, 2, 3, 1)[hole], np.broadcast_to(mean_pixel, (hole.sum(), 3)),
                                   atol=1e-4, err_msg=f"{name}: filled with the mean pixel")
        for corner in (rectangles[:, 2], rectangles[:, 3]):  # uniform over 0..16: 17 cells, 16 degrees of freedom
            counts = np.bincount(corner, minlength=17)
            assert len(counts) == 17 and chi_square(counts, np.full(17, len(corner) / 17)) < 60, name
        corners[name] = rectangles[:, 2:]
    for axis in (0, 1):
        assert stats.ks_2samp(corners["cpu"][:, axis], corners["tensor"][:, axis]).pvalue > 1e-4


# ---------------------------------------------------------------- the loader as a whole


NOTEBOOK = {pipeline.name[:2]: pipeline.augment for pipeline in bench.PIPELINES}  # as the notebooks set them
NOTEBOOK_03, NOTEBOOK_05 = NOTEBOOK["03"], NOTEBOOK["05"]


@pytest.mark.parametrize("augment", [NOTEBOOK_03, NOTEBOOK_05], ids=["03", "05"])
def test_epochs_are_reproducible_and_independent_of_chunking(augment, monkeypatch):
    images = h.data.synthetic_images(np.arange(300) % 10)

    def epoch(seed: int, epoch: int) -> list[torch.Tensor]:
        loader = TensorLoader(images, np.arange(300), 32, train=True, device="cpu", augment=augment)
        loader.set_epoch(epoch, seed)
        return [torch.cat([x.flatten(1), y[:, None].float()], 1) for x, y in loader]

    first = epoch(7, 3)
    assert len(first) == 300 // 32 and all(b.shape[0] == 32 for b in first)
    assert all(torch.equal(a, b) for a, b in zip(first, epoch(7, 3)))
    assert not torch.equal(first[0], epoch(7, 4)[0]) and not torch.equal(first[0], epoch(8, 3)[0])
    monkeypatch.setattr(tensor_loader, "CHUNK_IMAGES", 64)  # the same images, augmented two batches at a time
    assert all(torch.equal(a, b) for a, b in zip(first, epoch(7, 3)))


@pytest.mark.parametrize("augment", [NOTEBOOK_03, NOTEBOOK_05], ids=["03", "05"])
def test_both_backends_train_a_model(augment):
    images, labels = h.data.synthetic_images(np.arange(96) % 10), np.arange(96) % 10
    for backend in ("tensor", "dataloader"):
        loader = h.make_train_loader(images, labels, augment, 32, device="cpu", backend=backend, seed=1)
        torch.manual_seed(0)
        model = h.models.resnet9()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        history = h.fit(model, loader, optimizer, 1, device="cpu", seed=1, progress=False)
        assert np.isfinite(history.final("train_loss")), backend
