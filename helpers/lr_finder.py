"""Learning-rate range test with torch-lr-finder, wrapped for the notebooks' loaders and plots.

torch-lr-finder runs the test (learning rate raised every step, loss smoothed, the test stopped when the loss passes
`diverge_th` times its best) and `reset()` puts the model and optimizer back. The suggestion is made here, by
`suggest_lr`, over whatever points the test produced: torch-lr-finder's own `plot(suggest_lr=True)` raises when a
test that diverged early left fewer than `skip_start + skip_end + 2` points, and suggests a meaningless LR when the
loss never falls.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch_lr_finder import LRFinder
from torch_lr_finder.lr_finder import TrainDataLoaderIter

from .engine import select_device

SKIP_START, SKIP_END = 10, 5  # torch-lr-finder's defaults: the noisy start and the diverging end of the curve
MIN_ITERATIONS = SKIP_START + SKIP_END + 2  # what a test that runs its course needs for those skips
MIN_DROP = 0.02  # the smoothed loss must fall by this fraction of its first value for a steepest-descent suggestion
RISE = 0.05  # the fallback: the loss "starts to rise" where it first exceeds its lowest value so far by this fraction


@dataclass(frozen=True)
class Suggestion:
    """A suggested learning rate and how it was found: `method` says it in words, `window` the points used."""

    lr: float
    method: str
    window: slice


@dataclass
class LRRangeTest:
    """Result of `find_lr`: the learning rates tried, the smoothed losses, the suggestion, its method and plot."""

    lrs: list[float]
    losses: list[float]
    suggested_lr: float
    method: str
    stopped_early: bool  # the test ended before `num_iter` steps (the loss diverged)
    figure: plt.Figure


def analysis_window(n_points: int, skip_start: int = SKIP_START, skip_end: int = SKIP_END) -> slice:
    """The points the suggestion looks at: `skip_start` and `skip_end` trimmed off when there are enough points,
    else both trims shrunk in proportion so that at least two points remain (all of them when only two exist)."""
    if n_points >= skip_start + skip_end + 2:
        return slice(skip_start, n_points - skip_end)
    spare = max(n_points - 2, 0)
    start = skip_start * spare // (skip_start + skip_end)
    end = skip_end * spare // (skip_start + skip_end)
    return slice(start, n_points - end)


def suggest_lr(lrs: Sequence[float], losses: Sequence[float], *, skip_start: int = SKIP_START,
               skip_end: int = SKIP_END, min_drop: float = MIN_DROP) -> Suggestion:
    """Suggest a learning rate from a range test's history; always finite and within the learning rates tried.

    - Steepest descent (torch-lr-finder's rule, kept to the descent): the LR where the smoothed loss falls
      fastest on its way down to its lowest point, within the window of `analysis_window` of the finite part of the
      curve (a NaN or infinite loss ends it). Past the lowest point a loss that spikes and comes down again would
      otherwise win with an LR far into divergence.
    - Fallback when the loss never falls by `min_drop` of its first value in that window (a test too short to
      show the fall, a flat loss, one that only rises): a tenth of the LR where the loss starts to rise (first
      exceeds its lowest value so far by `RISE`), or of the largest LR tried if it never does; not below the first.
    """
    if not lrs or len(lrs) != len(losses):
        raise ValueError(f"need as many losses as learning rates (at least one), got {len(lrs)} and {len(losses)}")
    lrs_array, losses_array = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    finite = np.isfinite(losses_array)
    n = len(losses_array) if finite.all() else int(np.argmin(finite))  # the points before the first bad one
    if n == 0:
        return Suggestion(float(lrs_array[0]), "fallback: no finite loss was recorded; the first LR tried",
                          slice(0, 1))
    window = analysis_window(n, skip_start, skip_end)
    points = f"points {window.start + 1}-{window.stop} of {len(lrs)}"
    descent = losses_array[window][: int(np.argmin(losses_array[window])) + 1]  # down to the lowest point
    if len(descent) >= 2 and descent[-1] <= descent[0] - min_drop * abs(descent[0]):
        steepest = int(np.argmin(np.gradient(descent)))
        used = slice(window.start, window.start + len(descent))
        return Suggestion(float(lrs_array[window.start + steepest]),
                          f"steepest descent of the smoothed loss down to its lowest point (points "
                          f"{used.start + 1}-{used.stop} of {len(lrs)})", used)
    lowest_so_far = np.minimum.accumulate(losses_array[:n])
    rising = np.flatnonzero(losses_array[:n] > lowest_so_far + RISE * np.abs(lowest_so_far))
    where = (f"the LR where it starts to rise (point {rising[0] + 1})" if len(rising)
             else "the largest LR tried (it never rises)")
    lr = max(float(lrs_array[rising[0] if len(rising) else n - 1]) / 10, float(lrs_array[0]))
    return Suggestion(lr, f"fallback: the loss never fell by {min_drop:.0%} over {points}; a tenth of {where}",
                      window)


def plot_range_test(lrs: Sequence[float], losses: Sequence[float], suggestion: Suggestion,
                    title: str) -> plt.Figure:
    """Smoothed loss against learning rate (log scale): the analysed window in colour, the trimmed points grey,
    the suggestion in red."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    finite = [(lr, loss) for lr, loss in zip(lrs, losses) if np.isfinite(loss)]
    if finite:
        ax.plot(*zip(*finite), color="0.7", marker=".", markersize=3, label="all points")
    window = [(lr, loss) for lr, loss in zip(lrs[suggestion.window], losses[suggestion.window]) if np.isfinite(loss)]
    if window:
        ax.plot(*zip(*window), color="C0", marker=".", markersize=4, label="points analysed")
    ax.axvline(suggestion.lr, color="red", linestyle="--", label=f"suggested {suggestion.lr:.2e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def find_lr(model: nn.Module, optimizer: torch.optim.Optimizer, loader: Iterable, *,
            criterion: Callable | None = None, start_lr: float = 1e-5, end_lr: float = 10.0, num_iter: int = 100,
            step_mode: str = "exp", diverge_th: float = 5, device: torch.device | str | None = None
            ) -> LRRangeTest:
    """Run torch-lr-finder's range test, suggest a learning rate (`suggest_lr`) and plot it; the model and
    optimizer are restored afterwards (`reset()`), whatever happens.

    A test that diverges early or a loss that never falls still gives a finite suggestion within the range; the
    printed line and the plot title say how it was found. The test runs in fp32; batches are copied to the device
    asynchronously only on CUDA (on mps such a copy can read released memory). `loader` may be a DataLoader or any iterable of
    (images, labels) batches (such as the GPU-resident loader).
    """
    if num_iter < MIN_ITERATIONS:
        raise ValueError(f"num_iter must be at least {MIN_ITERATIONS}: the suggestion skips the first {SKIP_START} "
                         f"and last {SKIP_END} points of a test that runs its course")
    device = select_device(device)
    finder = LRFinder(model, optimizer, criterion or nn.CrossEntropyLoss(), device=device)
    train_iter = loader if isinstance(loader, DataLoader) else TrainDataLoaderIter(loader)
    try:
        finder.range_test(train_iter, start_lr=start_lr, end_lr=end_lr, num_iter=num_iter, step_mode=step_mode,
                          diverge_th=diverge_th, non_blocking_transfer=device.type == "cuda")
    finally:
        finder.reset()  # back to the weights and optimizer state from before the test
    lrs, losses = [float(v) for v in finder.history["lr"]], [float(v) for v in finder.history["loss"]]
    suggestion = suggest_lr(lrs, losses)
    stopped_early = len(lrs) < num_iter
    steps = f"{len(lrs)} of {num_iter} steps" + (" (stopped early: the loss diverged)" if stopped_early else "")
    print(f"LR range test, {steps}: suggested LR {suggestion.lr:.2e} by {suggestion.method}.")
    figure = plot_range_test(lrs, losses, suggestion,
                             f"LR range test, {steps}: suggested {suggestion.lr:.2e}\nby {suggestion.method}")
    return LRRangeTest(lrs, losses, suggestion.lr, suggestion.method, stopped_early, figure)
