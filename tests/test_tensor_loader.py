"""TensorLoader: its augmentations match the albumentations path in distribution; shuffling, seeding, eval mode, the
backend switch, and fit with the loader and torch.compile."""
from __future__ import annotations

import functools

import albumentations as A
import numpy as np
import pytest
import torch
from torch import nn

import helpers as h
from helpers import transforms as T
from helpers.augmentation import NO_AUGMENTATION, Augmentation
from helpers.tensor_loader import TensorLoader

N_SAMPLES = 3000  # augmented copies per distribution test: each count is within a few standard deviations


def position_image() -> np.ndarray:
    """A 32x32 image whose pixels say where they came from: R encodes the row, G the column, B is constant.

    No pixel is black (zero padding) or the cutout fill (MEAN_PIXEL), so both are recognisable.
    """
    rows, cols = np.mgrid[0:32, 0:32]
    return np.stack([10 + 7 * rows, 10 + 7 * cols, np.full_like(rows, 200)], axis=-1).astype(np.uint8)


def tensor_outputs(augment: Augmentation, n: int = N_SAMPLES, seed: int = 0) -> np.ndarray:
    """`n` augmented copies of the position image from TensorLoader, back as uint8 HWC."""
    images = np.repeat(position_image()[None], n, axis=0)
    loader = TensorLoader(images, np.zeros(n), batch_size=n, train=True, device="cpu", augment=augment, seed=seed)
    batch, _ = next(iter(loader))
    return T.denormalize(batch)


def albumentations_outputs(augment: Augmentation, n: int = N_SAMPLES, seed: int = 0) -> np.ndarray:
    """The same from the albumentations steps of `augment` (normalization is tested on its own below)."""
    transform = A.Compose(augment.albumentation_steps(), seed=seed)
    image = position_image()
    return np.stack([transform(image=image)["image"] for _ in range(n)])


def decode_crop(outputs: np.ndarray, padding: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crop_y, crop_x, flipped) of each output, read from its centre pixel (always inside the source image)."""
    centre = outputs[:, 16, 16].astype(int)
    source_row, source_col = (centre[:, 0] - 10) // 7, (centre[:, 1] - 10) // 7
    flipped = outputs[:, 16, 17, 1].astype(int) < outputs[:, 16, 16, 1]  # columns run backwards
    crop_y = source_row - 16 + padding
    crop_x = np.where(flipped, source_col - 15 + padding, source_col - 16 + padding)
    return crop_y, crop_x, flipped


def reference_crop(crop_y: int, crop_x: int, flipped: bool, reflect: bool, padding: int = 4) -> np.ndarray:
    """The expected output, computed with numpy: pad (zeros or reflect-101), crop, flip."""
    mode = {"mode": "reflect"} if reflect else {"mode": "constant", "constant_values": 0}
    padded = np.pad(position_image(), ((padding, padding), (padding, padding), (0, 0)), **mode)
    crop = padded[crop_y:crop_y + 32, crop_x:crop_x + 32]
    return crop[:, ::-1] if flipped else crop


def offset_counts(crop_y: np.ndarray, crop_x: np.ndarray, padding: int = 4) -> np.ndarray:
    span = 2 * padding + 1
    return np.bincount(crop_y * span + crop_x, minlength=span * span).reshape(span, span)


def chi_square_uniform(counts: np.ndarray) -> float:
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("reflect", [False, True])
def test_crop_and_flip_match_the_albumentations_path(reflect):
    augment = Augmentation(crop_padding=4, reflect=reflect, flip=True)
    for outputs in (tensor_outputs(augment), albumentations_outputs(augment)):
        crop_y, crop_x, flipped = decode_crop(outputs)
        # Every output is exactly the padded image cropped at its offset (and mirrored): the padding fill matches.
        for i in range(0, len(outputs), 97):
            np.testing.assert_array_equal(outputs[i], reference_crop(crop_y[i], crop_x[i], flipped[i], reflect))
        counts = offset_counts(crop_y, crop_x)
        assert counts.shape == (9, 9) and counts.min() > 0, "every offset in 0..8 x 0..8 occurs"
        # 81 cells, 80 degrees of freedom: the statistic's mean is 80, sd 12.6; 150 is p < 1e-6.
        assert chi_square_uniform(counts) < 150
        for axis in (0, 1):  # each offset's marginal frequency is 1/9 within 5 standard deviations
            marginal = counts.sum(axis) / len(outputs)
            assert np.all(np.abs(marginal - 1 / 9) < 5 * np.sqrt(1 / 9 * 8 / 9 / len(outputs)))
        assert abs(flipped.mean() - 0.5) < 5 * np.sqrt(0.25 / len(outputs))


def test_no_flip_and_no_crop_means_identity():
    outputs = tensor_outputs(Augmentation(crop_padding=0, flip=False), n=50)
    assert np.all(outputs == position_image())


def hole_stats(outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output: changed-pixel count, and the top-left corner of the changed region (-1 if none)."""
    changed = np.any(outputs != position_image(), axis=-1)
    count = changed.sum(axis=(1, 2))
    top = np.where(count > 0, changed.any(2).argmax(1), -1)
    left = np.where(count > 0, changed.any(1).argmax(1), -1)
    return count, top, left


def test_cutout_matches_albumentations_coarse_dropout_in_area_fill_and_position():
    augment = Augmentation(crop_padding=0, flip=False, cutout_size=8, cutout_p=0.5)
    results = {}
    for name, outputs in (("tensor", tensor_outputs(augment)), ("albumentations", albumentations_outputs(augment))):
        count, top, left = hole_stats(outputs)
        changed = np.any(outputs != position_image(), axis=-1)
        assert np.all(outputs[changed] == T.MEAN_PIXEL), f"{name}: the hole is filled with the dataset mean"
        # albumentations 2.0.8 CoarseDropout keeps the hole inside the image: always a full 8x8 square.
        assert set(np.unique(count)) == {0, 64}, name
        holes = count > 0
        assert abs(holes.mean() - 0.5) < 5 * np.sqrt(0.25 / len(outputs)), name
        for corner in (top[holes], left[holes]):  # corners uniform over 0..24
            freq = np.bincount(corner, minlength=25)
            assert len(freq) == 25 and freq.min() > 0, name
            assert chi_square_uniform(freq) < 70, name  # 24 degrees of freedom: p < 1e-5
        results[name] = count.mean()
    # Expected changed-pixel count p * 64 = 32 for both paths.
    for mean_changed in results.values():
        assert abs(mean_changed - 32) < 5 * 32 / np.sqrt(N_SAMPLES)


def test_normalization_equals_build_transform_without_augmentation():
    images = np.random.default_rng(0).integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    expected = torch.stack([T.build_transform()(image=img)["image"] for img in images])
    for train in (False, True):
        loader = TensorLoader(images, np.arange(10), batch_size=10, train=train, device="cpu",
                           augment=NO_AUGMENTATION)
        batch, labels = next(iter(loader))
        order = labels.numpy()
        assert batch.dtype == torch.float32 and batch.shape == (10, 3, 32, 32)
        assert batch.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(batch, expected[order], atol=1e-5, rtol=1e-5)


def test_shuffling_covers_every_sample_once_per_epoch_and_drops_the_last_batch():
    labels = np.arange(1000)
    images = np.zeros((1000, 32, 32, 3), dtype=np.uint8)
    loader = TensorLoader(images, labels, batch_size=64, train=True, device="cpu", augment=Augmentation())
    assert len(loader) == 1000 // 64
    orders = []
    for _ in range(2):
        seen = torch.cat([y for _, y in loader])
        assert seen.dtype == torch.int64 and len(seen) == len(loader) * 64
        assert len(torch.unique(seen)) == len(seen), "no sample twice in an epoch"
        orders.append(seen)
    assert not torch.equal(orders[0], orders[1]), "reshuffled every epoch"
    whole = TensorLoader(images[:256], labels[:256], batch_size=64, train=True, device="cpu")
    assert sorted(torch.cat([y for _, y in whole]).tolist()) == list(range(256))


def test_set_epoch_makes_an_epoch_reproducible():
    images = np.random.default_rng(1).integers(0, 256, size=(100, 32, 32, 3), dtype=np.uint8)

    def epoch_batches(epoch: int, seed: int) -> list[torch.Tensor]:
        loader = TensorLoader(images, np.arange(100), 32, train=True, device="cpu", augment=Augmentation(cutout_size=8))
        loader.set_epoch(epoch, seed)
        return [x for x, _ in loader]

    first, again, other_epoch, other_seed = (epoch_batches(3, 7), epoch_batches(3, 7), epoch_batches(4, 7),
                                             epoch_batches(3, 8))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other_epoch[0]) and not torch.equal(first[0], other_seed[0])


def test_eval_mode_is_ordered_unaugmented_and_keeps_the_last_batch():
    images = np.random.default_rng(2).integers(0, 256, size=(70, 32, 32, 3), dtype=np.uint8)
    loader = TensorLoader(images, np.arange(70), 32, train=False, device="cpu", augment=Augmentation(cutout_size=8))
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and len(batches[-1][1]) == 6
    assert torch.equal(torch.cat([y for _, y in batches]), torch.arange(70))
    assert np.array_equal(T.denormalize(torch.cat([x for x, _ in batches])), images)


def test_backend_switch_yields_the_same_kind_of_batches(monkeypatch):
    images = h.data.synthetic_images(np.arange(80) % 10)
    labels = np.arange(80) % 10
    augment = Augmentation(cutout_size=8)
    tensor = h.make_train_loader(images, labels, augment, 16, device="cpu", backend="tensor")
    dataloader = h.make_train_loader(images, labels, augment, 16, device="cpu", backend="dataloader")
    auto = h.make_train_loader(images, labels, augment, 16, device="cpu", backend="auto")
    assert isinstance(tensor, TensorLoader) and isinstance(auto, TensorLoader), "auto: the tensor pipeline on a CPU"
    assert isinstance(dataloader, torch.utils.data.DataLoader)
    assert h.loaders.resolve_backend("auto", "cuda") == h.loaders.resolve_backend("auto", "cpu") == "tensor"
    assert len(tensor) == len(dataloader) == 5
    for loader in (tensor, dataloader):
        x, y = next(iter(loader))
        assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    monkeypatch.setattr(h.loaders, "CPU_EVAL_BATCH", 50)
    for backend in ("tensor", "dataloader"):  # eval: dataset order, no augmentation, identical batches
        batches = list(h.make_eval_loader(images, labels, 80, device="cpu", backend=backend))
        assert [len(y) for _, y in batches] == [50, 30], "on a CPU at most CPU_EVAL_BATCH images a batch"
        x, y = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
        assert np.array_equal(T.denormalize(x), images) and torch.equal(y, torch.as_tensor(labels))
    with pytest.raises(ValueError, match="backend"):
        h.make_train_loader(images, labels, augment, 16, backend="gpu")


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 10))


CUTOUT = Augmentation(cutout_size=8)
EVERYTHING = Augmentation(rotate90_p=0.5, rotate_limit=10, scale_limit=0.1, shift_limit=0.1, randaugment_ops=2,
                          erasing_p=0.5)  # every draw of the tensor pipeline


def run_fit(epochs: int, checkpoint, compile: bool = False,
            augment: Augmentation = CUTOUT) -> tuple[h.History, nn.Module]:
    images = h.data.synthetic_images(np.arange(160) % 10)
    labels = np.arange(160) % 10
    train = TensorLoader(images, labels, 32, train=True, device="cpu", augment=augment)
    test = TensorLoader(images[:64], labels[:64], 64, train=False, device="cpu")
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = h.fit(model, train, optimizer, epochs, test_loader=test, checkpoint_path=checkpoint, device="cpu",
                    seed=3, progress=False, compile=compile)
    return history, model


@pytest.mark.parametrize("augment", [CUTOUT, EVERYTHING], ids=["cutout", "everything"])
def test_seeded_fit_with_the_tensor_loader_is_reproducible_and_resumable(tmp_path, augment):
    whole, _ = run_fit(2, None, augment=augment)
    ckpt = tmp_path / "run.pt"
    images = h.data.synthetic_images(np.arange(160) % 10)
    train = TensorLoader(images, np.arange(160) % 10, 32, train=True, device="cpu", augment=augment)
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def stop_after_first(epoch, history):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        h.fit(model, train, optimizer, 2, test_loader=TensorLoader(images[:64], np.arange(64) % 10, 64, train=False,
                                                                device="cpu"),
              checkpoint_path=ckpt, device="cpu", seed=3, progress=False, on_epoch_end=stop_after_first)
    resumed, _ = run_fit(2, ckpt, augment=augment)
    for metric in ("train_loss", "test_acc"):
        np.testing.assert_allclose(resumed[metric], whole[metric], rtol=1e-5)


def test_fit_with_compile_trains_and_checkpoints_plain_keys(tmp_path, monkeypatch):
    # The eager backend runs the same dynamo wrapping as the default one, without minutes of C++ compilation.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    before = {k: v.clone() for k, v in tiny_model().state_dict().items()}
    history, model = run_fit(1, tmp_path / "compiled.pt", compile=True)
    saved = h.load_checkpoint(tmp_path / "compiled.pt")["model"]
    assert list(saved) == list(before), "no '_orig_mod.' prefix"
    assert not torch.equal(saved["0.weight"], before["0.weight"]), "the original module was trained"
    assert torch.equal(saved["0.weight"], model.state_dict()["0.weight"])
    assert history.final("test_acc") is not None
