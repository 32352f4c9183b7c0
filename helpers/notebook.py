"""What every notebook does around its story: smoke mode, loading the data it runs on, saying where it ran."""
from __future__ import annotations

import os
import platform

import torch

from .data import Cifar10, load_cifar10, synthetic_cifar10
from .engine import device_name, select_device


def smoke_mode() -> bool:
    """True when the environment variable SMOKE is set to 1 (CI's quick CPU run of every notebook)."""
    return os.environ.get("SMOKE", "0").strip().lower() in ("1", "true", "yes")


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
    """One paragraph saying which data, device and software produced the outputs below it; also printed."""
    device = select_device(device)
    text = (f"Data:   {data.source}: {len(data.train_labels):,} training / {len(data.test_labels):,} test images\n"
            f"Device: {device} - {device_name(device)}\n"
            f"Python {platform.python_version()}, torch {torch.__version__}")
    print(text)
    return text


def report_goal(history, goal: float, max_epochs: int | None = None, metric: str = "test_acc") -> str:
    """Say whether the run met its accuracy goal (within `max_epochs`), from the history itself; also printed."""
    values = history[metric]
    measured = [(v, e) for v, e in zip(values, history["epoch"]) if v is not None]
    if not measured:
        text = f"No {metric} was measured."
    else:
        best, best_epoch = max(measured)
        within = [e for v, e in measured if v >= goal and (max_epochs is None or e <= max_epochs)]
        limit = f" within {max_epochs} epochs" if max_epochs else ""
        verdict = (f"goal {goal:.2%}{limit} MET first at epoch {within[0]}" if within
                   else f"goal {goal:.2%}{limit} NOT met (short by {goal - best:.2%})")
        text = (f"Best {metric} {best:.2%} at epoch {best_epoch} of {len(history)}; final {measured[-1][0]:.2%}; "
                f"{verdict}.")
    print(text)
    return text
