"""Kaggle-style inference: a trained model and an unlabeled CIFAR pickle in, `submission.csv` out.

    python -m helpers.kaggle CHECKPOINT INPUT.pkl -o submission.csv [--model NAME] [--tta] [--device cuda]

Input pickle: a dict `{b'data': images, b'ids': ids}` (str keys are accepted too), the Kaggle layout. `images` is
uint8 `[N, 32, 32, 3]` (HWC, Kaggle), `[N, 3, 32, 32]` (CHW) or `[N, 3072]` (CIFAR batch rows: the 1024 red, then
green, then blue pixels, row-major). Pickles are untrusted: they are read with `safe_pickle.load_dict`, which
refuses, before anything runs, a pickle that asks for more than numpy arrays and plain containers.

Checkpoint: either an exported model, written by `export_model(path, model, "resnet_kaggle")` as
`{"format": EXPORT_FORMAT, "model_name": <factory in helpers.models>, "num_classes": 10, "state_dict": ...}`,
or a `fit()` training checkpoint (`{"model": state_dict, ...}`) together with `--model NAME`. Either is loaded with
`torch.load(weights_only=True)`: tensors and plain data only.

Output CSV: header `ID,Labels` and one row per id, in input order; `Labels` is the predicted class index 0-9
(0 airplane, 1 automobile, ..., 9 truck, the order of `CIFAR10_CLASSES`), as this course's Kaggle CIFAR-10
competitions score it. `--tta` averages the softmax of each image and its mirror image (off by default).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from . import models
from .data import CIFAR10_CLASSES
from .engine import CheckpointError, load_checkpoint, predict, save_checkpoint, select_device
from .loaders import make_loader
from .safe_pickle import UnsafePickleError, load_dict
from .transforms import build_transform

EXPORT_FORMAT = "cifar10-notebooks/exported-model/1"
CSV_HEADER = ("ID", "Labels")
MODEL_REMEDY = "export the model again with helpers.kaggle.export_model (or pass a fit() checkpoint with --model)"


class KaggleInputError(ValueError):
    """An input file (pickle or checkpoint) is unreadable or not in a layout the tool knows; the message says why."""


@dataclass(frozen=True)
class UnlabeledImages:
    """Images uint8 [N, 32, 32, 3] (HWC), their ids in file order, and the layout they were found in."""

    images: np.ndarray
    ids: list
    layout: str


def to_hwc(data: np.ndarray) -> tuple[np.ndarray, str]:
    """uint8 [N, 32, 32, 3] from any of the three accepted layouts, and the name of the layout found.

    Raises `KaggleInputError` describing the array when it is none of them.
    """
    data = np.asarray(data)
    expected = ("expected uint8 images as [N, 32, 32, 3] (HWC, the Kaggle layout), [N, 3, 32, 32] (CHW) "
                "or [N, 3072] (flat CIFAR rows)")
    if data.dtype != np.uint8:
        if not np.issubdtype(data.dtype, np.integer) or (data.size and not 0 <= data.min() <= data.max() <= 255):
            raise KaggleInputError(f"got {data.dtype} data {list(data.shape)}; {expected} with values 0-255 "
                                   "(not normalized floats)")
        data = data.astype(np.uint8)
    if data.ndim == 4 and data.shape[1:] == (32, 32, 3):
        return np.ascontiguousarray(data), "[N, 32, 32, 3] HWC"
    if data.ndim == 4 and data.shape[1:] == (3, 32, 32):
        return np.ascontiguousarray(data.transpose(0, 2, 3, 1)), "[N, 3, 32, 32] CHW"
    if data.ndim == 2 and data.shape[1] == 3 * 32 * 32:
        return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), "[N, 3072] CIFAR rows"
    raise KaggleInputError(f"got {data.dtype} data of shape {list(data.shape)}; {expected}")


def load_unlabeled(path: str | os.PathLike) -> UnlabeledImages:
    """Read an unlabeled pickle `{b'data': images, b'ids': ids}` safely (see the module docstring)."""
    path = Path(path)
    content = load_dict(path, ("data", "ids"), KaggleInputError)
    try:
        images, layout = to_hwc(content["data"])
    except KaggleInputError as err:
        raise KaggleInputError(f"{path}: {err}") from None
    ids = [_plain(i) for i in content["ids"]]
    if len(ids) != len(images):
        raise KaggleInputError(f"{path}: {len(images)} images but {len(ids)} ids")
    return UnlabeledImages(images, ids, layout)


def _plain(value):
    """An id as a plain Python value for the CSV (numpy scalars and bytes are unwrapped)."""
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value


def _factory(name: str):
    if name not in models.FACTORIES:
        raise KaggleInputError(f"unknown model '{name}'; known: {', '.join(sorted(models.FACTORIES))}")
    return models.FACTORIES[name]


def export_model(path: str | os.PathLike, model: nn.Module, model_name: str, num_classes: int = 10) -> Path:
    """Write the weights of `model`, built by `helpers.models.<model_name>(num_classes)`, as the small checkpoint
    this tool reads (CPU tensors, contiguous). Returns the path."""
    _factory(model_name)  # fail now, not at inference time
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_checkpoint(path, {"format": EXPORT_FORMAT, "model_name": model_name, "num_classes": num_classes,
                           "state_dict": state})
    return Path(path)


def load_model(path: str | os.PathLike, model_name: str | None = None) -> tuple[nn.Module, str]:
    """The model in an exported or `fit()` checkpoint (with `model_name` for the latter), in eval mode on the CPU,
    and its factory name."""
    path = Path(path)
    try:
        state = load_checkpoint(path, map_location="cpu", remedy=MODEL_REMEDY)
    except CheckpointError as err:
        raise KaggleInputError(str(err)) from None
    if state.get("format") == EXPORT_FORMAT:
        weights, num_classes = state["state_dict"], state["num_classes"]
        model_name = model_name or state["model_name"]
    elif "model" in state:
        if model_name is None:
            raise KaggleInputError(f"{path} is a training checkpoint, which does not say which architecture it "
                                   "holds: pass --model NAME (e.g. --model resnet_kaggle), or export the model "
                                   "with helpers.kaggle.export_model")
        weights, num_classes = state["model"], len(CIFAR10_CLASSES)
    else:
        raise KaggleInputError(f"{path}: neither an exported model nor a fit() checkpoint "
                               f"(keys {sorted(map(str, state))})")
    model = _factory(model_name)(num_classes=num_classes)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise KaggleInputError(f"{path}: the weights do not fit '{model_name}': {err}") from None
    return model.eval(), model_name


def predict_probabilities(model: nn.Module, images: np.ndarray, device: torch.device | str | None = None,
                          batch_size: int = 500, tta: bool = False) -> np.ndarray:
    """Softmax probabilities [N, classes] for uint8 HWC `images` (normalized as in training, fp32).

    With `tta`, the average of the probabilities of each image and of its horizontal mirror.
    """
    device = select_device(device)
    loader = make_loader(images, np.zeros(len(images), dtype=np.int64), build_transform(), batch_size,
                         train=False, device=device, num_workers=0)
    return predict(model.to(device), loader, device, flip_tta=tta)[2]


def write_submission(path: str | os.PathLike, ids: Sequence, labels: Sequence[int]) -> Path:
    """Write `ID,Labels` and one row per id (input order) with its integer label."""
    if len(ids) != len(labels):
        raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        writer.writerows((_plain(i), int(label)) for i, label in zip(ids, labels))
    return path


def make_submission(checkpoint: str | os.PathLike, input_path: str | os.PathLike,
                    output: str | os.PathLike = "submission.csv", model_name: str | None = None,
                    tta: bool = False, device: torch.device | str | None = None, batch_size: int = 500) -> Path:
    """Predict every image of an unlabeled pickle with the checkpoint's model and write the submission CSV.

    Says what it read, which model and device it used, and whether TTA was on. Returns the CSV path.
    """
    unlabeled = load_unlabeled(input_path)
    model, model_name = load_model(checkpoint, model_name)
    device = select_device(device)
    print(f"Read {len(unlabeled.ids):,} images ({unlabeled.layout}) from {input_path}")
    print(f"Model {model_name} from {checkpoint} on {device}; test-time augmentation (flip): "
          f"{'ON' if tta else 'off'}")
    probs = predict_probabilities(model, unlabeled.images, device, batch_size, tta)
    path = write_submission(output, unlabeled.ids, probs.argmax(1))
    print(f"Wrote {len(unlabeled.ids):,} predictions to {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring). Returns the exit status: 0, or 2 for an unusable input."""
    parser = argparse.ArgumentParser(prog="python -m helpers.kaggle",
                                     description="Write a Kaggle submission.csv (ID,Labels) for an unlabeled "
                                                 "CIFAR pickle.")
    parser.add_argument("checkpoint", help="exported model (export_model) or fit() checkpoint with --model")
    parser.add_argument("input", help="unlabeled pickle {b'data': images, b'ids': ids}")
    parser.add_argument("-o", "--output", default="submission.csv", help="CSV to write (default: submission.csv)")
    parser.add_argument("--model", choices=sorted(models.FACTORIES),
                        help="architecture (needed for a fit() checkpoint; overrides an exported one's name)")
    parser.add_argument("--tta", action="store_true", help="average predictions with the mirrored image")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args(argv)
    try:
        make_submission(args.checkpoint, args.input, args.output, args.model, args.tta, args.device,
                        args.batch_size)
    except (KaggleInputError, UnsafePickleError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
