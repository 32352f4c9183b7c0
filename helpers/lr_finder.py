"""Learning-rate range test with torch-lr-finder, wrapped for the notebooks' loaders and plots."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import matplotlib.pyplot as plt
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch_lr_finder import LRFinder
from torch_lr_finder.lr_finder import TrainDataLoaderIter

from .engine import select_device

SKIP_START, SKIP_END = 10, 5
MIN_ITERATIONS = SKIP_START + SKIP_END + 2  # what torch-lr-finder needs before it can suggest a learning rate


@dataclass
class LRRangeTest:
    """Result of `find_lr`: the learning rates tried, the smoothed losses, the suggestion and the plot."""

    lrs: list[float]
    losses: list[float]
    suggested_lr: float
    figure: plt.Figure


def find_lr(model: nn.Module, optimizer: torch.optim.Optimizer, loader: Iterable, *,
            criterion: Callable | None = None, start_lr: float = 1e-5, end_lr: float = 10.0, num_iter: int = 100,
            step_mode: str = "exp", device: torch.device | str | None = None) -> LRRangeTest:
    """Run torch-lr-finder's range test and plot it; the model and optimizer are restored afterwards (`reset()`).

    The suggestion is torch-lr-finder's: the learning rate where the loss falls fastest. `loader` may be a
    DataLoader or any iterable of (images, labels) batches (such as the GPU-resident loader).
    """
    if num_iter < MIN_ITERATIONS:
        raise ValueError(f"num_iter must be at least {MIN_ITERATIONS}: torch-lr-finder skips the first {SKIP_START} "
                         f"and last {SKIP_END} points before it suggests a learning rate")
    device = select_device(device)
    finder = LRFinder(model, optimizer, criterion or nn.CrossEntropyLoss(), device=device)
    train_iter = loader if isinstance(loader, DataLoader) else TrainDataLoaderIter(loader)
    try:
        finder.range_test(train_iter, start_lr=start_lr, end_lr=end_lr, num_iter=num_iter, step_mode=step_mode)
        fig, ax = plt.subplots(figsize=(6, 4))
        _, suggested = finder.plot(skip_start=SKIP_START, skip_end=SKIP_END, ax=ax, suggest_lr=True)
        ax.set_title(f"LR range test ({len(finder.history['lr'])} iterations): suggested {suggested:.2e}")
        lrs, losses = list(finder.history["lr"]), list(finder.history["loss"])
    finally:
        finder.reset()  # back to the weights and optimizer state from before the test
    return LRRangeTest(lrs, losses, float(suggested), fig)
