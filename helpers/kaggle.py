"""Kaggle-style inference: a trained model and an unlabeled CIFAR pickle in, `submission.csv` out.

    python -m helpers.kaggle INPUT.pkl -o submission.csv [--tta] [--device cuda]     # the released model
    python -m helpers.kaggle MODEL INPUT.pkl -o submission.csv [--model NAME] [--tta]

Input pickle: a dict `{b'data': images, b'ids': ids}` (str keys are accepted too), the Kaggle layout. `images` is
uint8 `[N, 32, 32, 3]` (HWC, Kaggle), `[N, 3, 32, 32]` (CHW) or `[N, 3072]` (CIFAR batch rows: the 1024 red, then
green, then blue pixels, row-major). Pickles are untrusted: they are read with `safe_pickle.load_dict`, which
refuses, before anything runs, a pickle that asks for more than numpy arrays and plain containers.

Model: without MODEL, notebook 05's released weights (`weights/05_kaggle_resnet.safetensors`, checked against its
run record: `helpers.release`). Else either weights written by `export_model` or `helpers.release` (safetensors,
which name their architecture), or a `fit()` training checkpoint (`{"model": state_dict, ...}`, read with
`torch.load(weights_only=True)`) together with `--model NAME`. Weights that belong to another architecture than
the one asked for stop with one line naming both.

Output CSV: header `ID,Labels` and one row per id, in input order; `Labels` is the predicted class index 0-9
(0 airplane, 1 automobile, ..., 9 truck, the order of `CIFAR10_CLASSES`), as this course's Kaggle CIFAR-10
competitions score it. `--tta` averages the softmax of each image and its mirror image (off by default). An input
the tool cannot use ends in one line on stderr and exit status 2, and no CSV is written.
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
from .engine import CheckpointError, load_checkpoint, predict, select_device
from .goals import ASSIGNMENTS
from .loaders import make_eval_loader
from .release import ReleaseError, is_safetensors, load_pretrained, load_weights, release_path, save_weights
from .safe_pickle import UnsafePickleError, load_dict

RELEASED = "05_kaggle_resnet"  # the notebook whose released model is the default
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
    if not len(images):
        raise KaggleInputError(f"{path} holds no images ({layout} with N = 0): nothing to predict")
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


def export_model(path: str | os.PathLike, model: nn.Module, model_name: str) -> Path:
    """Write the weights of `model`, built by `helpers.models.<model_name>()`, as the file this tool reads:
    safetensors in fp32, naming its architecture (`helpers.release.save_weights`). Returns the path."""
    _factory(model_name)  # fail now, not at inference time
    return save_weights(path, model, model_name, half=False)


def fitting_architectures(state_dict: dict) -> list[str]:
    """The factories of `helpers.models` whose state_dict has exactly these keys and shapes."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    found = []
    for name, factory in sorted(models.FACTORIES.items()):
        with torch.device("meta"):
            expected = factory().state_dict()
        if shapes == {k: tuple(v.shape) for k, v in expected.items()}:
            found.append(name)
    return found


def load_model(path: str | os.PathLike | None = None, model_name: str | None = None) -> tuple[nn.Module, str]:
    """The model to predict with, in eval mode on the CPU, and its factory name: the released notebook-05 model
    when `path` is None, else the weights in `path` (see the module docstring; `model_name` for a fit()
    checkpoint, or to insist on an architecture)."""
    try:
        if path is None:
            model = load_pretrained(RELEASED, "cpu")
            released = ASSIGNMENTS[RELEASED].model
            if model_name not in (None, released):
                raise KaggleInputError(f"the released model ({release_path(RELEASED).name}) is a {released}, not "
                                       f"{model_name}: drop --model, or pass the weights of a {model_name}")
            return model, released
        path = Path(path)
        if path.is_file() and is_safetensors(path):
            model, metadata = load_weights(path, model_name, "cpu")
            return model, metadata["model"]
    except ReleaseError as err:
        hint = "; or pass a MODEL file before the pickle" if path is None else ""
        raise KaggleInputError(f"{err}{hint}") from None
    try:
        state = load_checkpoint(path, map_location="cpu", remedy=MODEL_REMEDY)
    except CheckpointError as err:
        raise KaggleInputError(str(err)) from None
    if "model" not in state:
        raise KaggleInputError(f"{path}: neither exported weights nor a fit() checkpoint "
                               f"(keys {sorted(map(str, state))})")
    if model_name is None:
        raise KaggleInputError(f"{path} is a training checkpoint, which does not say which architecture it holds: "
                               "pass --model NAME (e.g. --model resnet_kaggle), or export the model with "
                               "helpers.kaggle.export_model")
    model = _factory(model_name)(num_classes=len(CIFAR10_CLASSES))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        fits = fitting_architectures(state["model"])
        held = f"holds {' / '.join(fits)} weights" if fits else "holds weights of none of helpers.models' networks"
        raise KaggleInputError(f"{path} {held}, not {model_name}"
                               + (f": pass --model {fits[0]}" if fits else "")) from None
    return model.eval(), model_name


def predict_probabilities(model: nn.Module, images: np.ndarray, device: torch.device | str | None = None,
                          batch_size: int = 500, tta: bool = False) -> np.ndarray:
    """Softmax probabilities [N, classes] for uint8 HWC `images` (normalized as in training, fp32).

    With `tta`, the average of the probabilities of each image and of its horizontal mirror.
    """
    device = select_device(device)
    loader = make_eval_loader(images, np.zeros(len(images), dtype=np.int64), batch_size, device, backend="dataloader")
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


def make_submission(checkpoint: str | os.PathLike | None, input_path: str | os.PathLike,
                    output: str | os.PathLike = "submission.csv", model_name: str | None = None,
                    tta: bool = False, device: torch.device | str | None = None, batch_size: int = 500) -> Path:
    """Predict every image of an unlabeled pickle with the checkpoint's model (None: the released notebook-05
    model) and write the submission CSV.

    Says what it read, which model and device it used, and whether TTA was on. Returns the CSV path.
    """
    unlabeled = load_unlabeled(input_path)
    model, model_name = load_model(checkpoint, model_name)
    device = select_device(device)
    print(f"Read {len(unlabeled.ids):,} images ({unlabeled.layout}) from {input_path}")
    source = checkpoint if checkpoint is not None else f"{release_path(RELEASED)} (released)"
    print(f"Model {model_name} from {source} on {device}; test-time augmentation (flip): "
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
    parser.add_argument("files", nargs="+", metavar="[MODEL] INPUT.pkl",
                        help="weights (export_model, a released .safetensors, or a fit() checkpoint with --model; "
                             "default: notebook 05's released model), then the unlabeled pickle "
                             "{b'data': images, b'ids': ids}")
    parser.add_argument("-o", "--output", default="submission.csv", help="CSV to write (default: submission.csv)")
    parser.add_argument("--model", choices=sorted(models.FACTORIES),
                        help="architecture (needed for a fit() checkpoint; overrides an exported one's name)")
    parser.add_argument("--tta", action="store_true", help="average predictions with the mirrored image")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args(argv)
    if len(args.files) > 2:
        parser.error(f"expected [MODEL] INPUT.pkl, got {len(args.files)} files")
    checkpoint, input_path = args.files if len(args.files) == 2 else (None, args.files[0])
    try:
        make_submission(checkpoint, input_path, args.output, args.model, args.tta, args.device, args.batch_size)
    except (KaggleInputError, UnsafePickleError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
