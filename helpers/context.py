"""What every notebook does around its story: smoke mode, where it keeps its files, loading the data it runs on,
saying where it ran."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Literal

import torch

from .data import PROJECT_ROOT, Cifar10, load_cifar10, synthetic_cifar10
from .devices import describe_precision, device_name, select_device
from .engine import History
from .goals import Goal, data_reference


def smoke_mode() -> bool:
    """True when the environment variable SMOKE is set to 1 (CI's quick CPU run of every notebook)."""
    return os.environ.get("SMOKE", "0").strip().lower() in ("1", "true", "yes")


DRIVE = Path("/content/drive/MyDrive")  # Google Drive, where Colab's drive.mount("/content/drive") puts it
DRIVE_FOLDER = "cifar10-notebooks"
STORAGE_VARIABLES = {"checkpoints": "CHECKPOINT_DIR", "results": "RESULTS_DIR"}


def local_cache() -> Path:
    """This machine's cache folder for the project: $XDG_CACHE_HOME/cifar10-notebooks (~/.cache/... by default),
    outside any clone, so that every clone of the project on the machine finds the same checkpoints."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / DRIVE_FOLDER


def storage_dir(kind: Literal["checkpoints", "results"]) -> Path:
    """Where the notebooks keep their checkpoints or run records.

    In order: the folder named by $CHECKPOINT_DIR or $RESULTS_DIR; with Google Drive mounted at Colab's usual
    place, MyDrive/cifar10-notebooks/<kind>, which outlives the Colab runtime, so that running a notebook again
    after a disconnect resumes from its checkpoint; else, for checkpoints, this machine's cache (`local_cache`):
    a run started from one clone resumes from another; for run records, <project>/results, where the README's
    table is built from.
    """
    variable = os.environ.get(STORAGE_VARIABLES[kind])
    if variable:
        return Path(variable).expanduser().resolve()
    if DRIVE.is_dir():
        return DRIVE / DRIVE_FOLDER / kind
    return local_cache() / kind if kind == "checkpoints" else PROJECT_ROOT / kind


def load_data(root: str | None = None, smoke: bool = False, n_train: int | None = None,
              n_test: int | None = None, seed: int = 0) -> Cifar10:
    """CIFAR-10 for a notebook, cut to `n_train`/`n_test` images when given.

    A smoke run (`smoke`) checks the plumbing on synthetic data and never reads or downloads the real data, so it
    does the same on every machine: CI, a fresh clone, one with the dataset in `data/`.
    """
    data = synthetic_cifar10() if smoke else load_cifar10(root)
    if n_train is not None or n_test is not None:
        data = data.subset(n_train, n_test, seed)
    return data


def describe_run(data: Cifar10, device: torch.device | str) -> str:
    """One paragraph saying which data, device, precision and software produced the outputs below it; also
    printed."""
    device = select_device(device)
    text = (f"Data:   {data.source}: {len(data.train_labels):,} training / {len(data.test_labels):,} test images\n"
            f"Device: {device} - {device_name(device)}\n"
            f"Precision: {describe_precision(device)}\n"
            f"Python {platform.python_version()}, torch {torch.__version__}")
    print(text)
    return text


def report_goal(history: History, goal: Goal, parameters: int | None = None, data_source: str = "") -> str:
    """Say whether the run met `goal`, judged on the single raw model `fit` returned; also printed.

    On a copy of CIFAR-10 (`data_source`, the data's `source`) the goal is judged beside airbench94 on the same
    copy (`helpers.goals.DataReference`). The EMA and flip-TTA accuracies of the same run are shown beside the
    verdict, never instead of it.
    """
    final = history.final_model
    accuracy = final.get("test_acc", history.final("test_acc"))
    if accuracy is None:
        text = f"Goal {goal}: no test accuracy was measured."
        print(text)
        return text
    reference = data_reference(data_source)
    missed = goal.shortfalls(accuracy, len(history), parameters, reference)
    verdict = ("MET" if not missed else f"NOT met ({'; '.join(missed)})") + (" on this data" if reference else "")
    epoch = final.get("epoch", len(history))
    lines = [f"Goal {goal}: {verdict}. Raw model: {accuracy:.2%} test accuracy after {len(history)} epochs"
             + (f" (weights of epoch {epoch})" if epoch != len(history) else "")
             + (f", {parameters:,} parameters" if parameters is not None else "") + "."]
    best = history.best("test_acc")
    beside = [f"best epoch of the raw model {best:.2%}"] if best is not None else []
    if "test_acc_tta" in final:
        beside.append(f"flip TTA {final['test_acc_tta']:.2%}")
    if "test_acc_ema" in final:
        beside.append(f"EMA weights {final['test_acc_ema']:.2%}"
                      + (f" (flip TTA {final['test_acc_ema_tta']:.2%})" if "test_acc_ema_tta" in final else ""))
    if reference:
        lines.append(reference.explain(goal))
    if beside:
        lines.append("Beside it, not used for the goal: " + "; ".join(beside) + ".")
    text = "\n".join(lines)
    print(text)
    return text
