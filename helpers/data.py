"""CIFAR-10 loading that works offline: reads the standard batch files itself, splits, subsets.

`load_cifar10()` returns uint8 HWC images, so every pipeline (albumentations, the tensor loader, plots)
starts from the same arrays.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .safe_pickle import load_dict, safe_load

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
FULL_TRAIN, FULL_TEST = 50_000, 10_000  # images in the whole training and test sets

BATCH_DIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class DataError(RuntimeError):
    """The dataset is missing or malformed; the message says what to do."""


@dataclass(frozen=True)
class Cifar10:
    """CIFAR-10 as arrays: images uint8 [N, 32, 32, 3] (HWC, RGB), labels int64 [N]."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    source: str  # where the data came from, for plots and run records

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> "Cifar10":
        """A class-balanced random subset (for smoke runs and quick experiments); None keeps a split whole."""
        train = _stratified_take(self.train_labels, n_train, seed)
        test = _stratified_take(self.test_labels, n_test, seed + 1)
        return replace(self, train_images=self.train_images[train], train_labels=self.train_labels[train],
                       test_images=self.test_images[test], test_labels=self.test_labels[test])


@dataclass(frozen=True)
class Split:
    """Training data cut into a part to train on and a held-out validation part."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray


def _stratified_take(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Indices of `n` items with classes as balanced as `labels` allows, in random order."""
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    # Rank each item within its class (in the shuffled order), then take items by rank: round-robin over classes.
    ranks = np.empty(len(labels), dtype=np.int64)
    for cls in np.unique(labels):
        members = order[labels[order] == cls]
        ranks[members] = np.arange(len(members))
    chosen = order[np.argsort(ranks[order], kind="stable")[:n]]
    return rng.permutation(chosen)


def train_val_split(images: np.ndarray, labels: np.ndarray, val_size: int | float = 5000,
                    seed: int = 0) -> Split:
    """Hold out a stratified validation set from the training data.

    `val_size` is a count or a fraction. Early stopping and model selection use this split, never the test set.
    """
    n_val = int(round(val_size * len(labels))) if isinstance(val_size, float) else int(val_size)
    if not 0 < n_val < len(labels):
        raise ValueError(f"val_size must leave both parts non-empty; got {val_size} for {len(labels)} images")
    val = _stratified_take(labels, n_val, seed)
    mask = np.ones(len(labels), dtype=bool)
    mask[val] = False
    return Split(images[mask], labels[mask], images[val], labels[val])


def default_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: the argument, else `$CIFAR10_ROOT`, else the project's `data/` folder."""
    if root is not None:
        return Path(root)
    if os.environ.get("CIFAR10_ROOT"):
        return Path(os.environ["CIFAR10_ROOT"])
    return PROJECT_ROOT / "data"


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch file into (images uint8 [N, 32, 32, 3], labels int64 [N]).

    Raises `DataError` naming the file if it is truncated, corrupt or of the wrong shape, and `UnsafePickleError`
    (before anything runs) if it is a pickle that would call more than numpy needs.
    """
    return _batch_arrays(_load_batch(path), path)


def _load_batch(path: str | os.PathLike) -> dict:
    return load_dict(path, ("data", "labels"), DataError, hint="Delete it and write or download the dataset again.")


def _batch_arrays(batch: dict, path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: expected 'data' as uint8 [N, 3072] (3 colour planes of 32x32), "
                        f"got {data.dtype} {list(data.shape)}")
    if labels.shape != (len(data),) or (len(labels) and not 0 <= labels.min() <= labels.max() <= 9):
        raise DataError(f"{path}: expected {len(data)} labels in 0..9, got shape {list(labels.shape)}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # planar rows -> HWC
    return np.ascontiguousarray(images), labels


def _read_classes(folder: Path) -> tuple[str, ...]:
    meta_path = folder / META_FILE
    if not meta_path.exists():
        return CIFAR10_CLASSES
    with open(meta_path, "rb") as f:
        try:
            meta = safe_load(f)
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise DataError(f"{meta_path} is truncated or corrupt ({err})") from None
    meta = {k.decode() if isinstance(k, bytes) else k: v for k, v in meta.items()}
    names = meta.get("label_names", CIFAR10_CLASSES)
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _read_folder(folder: Path, source: str) -> Cifar10:
    missing = [name for name in (*TRAIN_FILES, TEST_FILE) if not (folder / name).exists()]
    if missing:
        raise DataError(f"{folder} is incomplete: missing {', '.join(missing)}")
    train = [read_batch(folder / name) for name in TRAIN_FILES]
    test_batch = _load_batch(folder / TEST_FILE)
    test_images, test_labels = _batch_arrays(test_batch, folder / TEST_FILE)
    return Cifar10(np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]),
                   test_images, test_labels, _read_classes(folder), source + _jpeg_note(test_batch))


def shown_path(path: str | os.PathLike) -> str:
    """`path` as a source line shows it: relative to the project when inside it, else to the folder named by
    `$CIFAR10_ROOT` as `$CIFAR10_ROOT/...`, else to the home folder as `~/...` (a run record or a stored output names
    no absolute path of the machine that made it), else as it is."""
    resolved = Path(path).expanduser().resolve()
    roots = [(PROJECT_ROOT, "")]
    if os.environ.get("CIFAR10_ROOT"):
        roots.append((Path(os.environ["CIFAR10_ROOT"]).expanduser().resolve(), "$CIFAR10_ROOT/"))
    for root, prefix in (*roots, (Path.home().resolve(), "~/")):
        if resolved.is_relative_to(root):
            return prefix + str(resolved.relative_to(root))
    return str(path)


def _jpeg_note(batch: dict) -> str:
    """A note for the data source when the batch's images were decoded from JPEG files (a re-encoded copy)."""
    names = batch.get("filenames") or []
    as_text = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    if as_text and all(n.lower().endswith((".jpg", ".jpeg")) for n in as_text):
        return " (decoded from JPEG files: a re-encoded copy such as the offline JPEG-75 one, not the original pixels)"
    return ""


def _download(root: Path) -> None:
    try:
        from torchvision.datasets import CIFAR10
        CIFAR10(str(root), train=True, download=True)
    except Exception as err:  # no network, DNS failure, HTTP error...: all end in the same advice
        raise DataError(
            f"CIFAR-10 is not in {root / BATCH_DIR} and could not be downloaded ({type(err).__name__}: {err}).\n"
            f"Put the standard '{BATCH_DIR}' folder (data_batch_1..5, test_batch, batches.meta) under {root}, "
            "or set CIFAR10_ROOT to the folder that holds it (docs/data.md: CIFAR-10 without network).") from None


def load_cifar10(root: str | os.PathLike | None = None, download: bool = True,
                 synthetic_if_missing: bool = False) -> Cifar10:
    """Load CIFAR-10 from `root/cifar-10-batches-py` (root: argument, `$CIFAR10_ROOT`, or `data/`).

    Missing data is downloaded with torchvision when `download` is true. With `synthetic_if_missing` (the
    benchmark), `synthetic_cifar10()` stands in for it instead.
    """
    root = default_root(root)
    folder = root / BATCH_DIR
    if folder.exists():
        return _read_folder(folder, f"CIFAR-10 batch files in {shown_path(folder)}")
    if synthetic_if_missing:
        data = synthetic_cifar10()
        return replace(data, source=f"{data.source}: no real CIFAR-10 in {folder}")
    if not download:
        raise DataError(f"CIFAR-10 is not in {folder}. Put the standard '{BATCH_DIR}' folder under {root}, "
                        "set CIFAR10_ROOT, or call load_cifar10(download=True).")
    _download(root)
    return _read_folder(folder, f"CIFAR-10 downloaded by torchvision into {shown_path(folder)}")


def synthetic_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Learnable fake images: each class has its own colour and stripe orientation, plus noise."""
    palette = np.random.default_rng(2024).integers(40, 216, size=(10, 3))  # the same classes in every split
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    images = np.empty((len(labels), 32, 32, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        angle = np.pi * label / 10
        stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / 2.0 + rng.uniform(0, 2 * np.pi))
        img = palette[label] + 40 * stripes[..., None] + rng.normal(0, 20, size=(32, 32, 3))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images


def write_cifar_batch(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray, label: str = "") -> None:
    """Write images uint8 [N, 32, 32, 3] and labels as a batch file in the standard CIFAR-10 format."""
    rows = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1), dtype=np.uint8)
    batch = {b"batch_label": label.encode(), b"labels": [int(v) for v in labels], b"data": rows,
             b"filenames": [f"{i:05d}.png".encode() for i in range(len(images))]}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def write_synthetic_cifar10(root: str | os.PathLike, n_train: int = 1000, n_test: int = 200,
                            seed: int = 0) -> Path:
    """Write a tiny synthetic dataset as `root/cifar-10-batches-py` in the standard format; returns that folder."""
    folder = Path(root) / BATCH_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train_labels = rng.permutation(np.arange(n_train) % 10)
    test_labels = rng.permutation(np.arange(n_test) % 10)
    train_images = synthetic_images(train_labels, seed)
    for k, part in enumerate(np.array_split(np.arange(n_train), len(TRAIN_FILES))):
        write_cifar_batch(folder / TRAIN_FILES[k], train_images[part], train_labels[part], f"synthetic {k + 1}")
    write_cifar_batch(folder / TEST_FILE, synthetic_images(test_labels, seed + 1), test_labels, "synthetic test")
    with open(folder / META_FILE, "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072}, f, protocol=2)
    return folder


def synthetic_cifar10(n_train: int = 1000, n_test: int = 200, seed: int = 0) -> Cifar10:
    """A tiny generated dataset (`synthetic_images`) for smoke runs: written in the standard format to a temporary
    folder and read back through the batch reader, so a smoke run goes through the same code as a real one."""
    with tempfile.TemporaryDirectory(prefix="synthetic-cifar10-") as tmp:
        folder = write_synthetic_cifar10(tmp, n_train, n_test, seed)
        return replace(_read_folder(folder, ""), source="SYNTHETIC smoke-test data (generated, not CIFAR-10)")
