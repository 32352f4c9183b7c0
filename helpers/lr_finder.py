"""Learning-rate range test with torch-lr-finder, wrapped for the notebooks' loaders and plots.

torch-lr-finder runs the test (learning rate raised every step, loss smoothed, the test stopped when the loss passes
`diverge_th` times its best) and `reset()` puts the model and optimizer back. What the curve says is read here, over
whatever points the test produced:
- `suggest_lr`: one LR by steepest descent, the convention for a constant LR (torch-lr-finder, fastai).
  torch-lr-finder's own `plot(suggest_lr=True)` raises when a test that diverged early left fewer than
  `skip_start + skip_end + 2` points, and suggests a meaningless LR when the loss never falls.
- `cycle_bounds`: Smith's bounds for a cyclical or one-cycle schedule (lower bound where the loss starts to fall,
  upper bound where it stops falling), and where the loss diverged, from which `CycleBounds.decay_start_lr` gives
  the start of a schedule that only decays.
"""
from __future__ import annotations

import contextlib
import io
import textwrap
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch_lr_finder import LRFinder
from torch_lr_finder.lr_finder import TrainDataLoaderIter

from .devices import autocast_dtype, channels_last_default, device_name, select_device

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
    """Result of `find_lr`: the learning rates tried, the smoothed losses, the suggestion, its method and plot.

    `state()` is it as plain data (a checkpoint keeps it), `from_state` shows it again, with its figure and lines.
    """

    lrs: list[float]
    losses: list[float]
    suggested_lr: float
    method: str
    bounds: CycleBounds  # a cycle's lower and upper bound, and where the loss diverged (`cycle_bounds`)
    stopped_early: bool  # the test ended before `num_iter` steps (the loss diverged)
    figure: plt.Figure
    num_iter: int = 0  # the steps asked for
    measured_on: str = ""  # the device it ran on and when, e.g. "cpu (AMD EPYC, 2 threads), 2026-12-02T21:55"

    def state(self) -> dict:
        """Everything but the figure, as plain data."""
        return {"lrs": self.lrs, "losses": self.losses, "suggested_lr": self.suggested_lr, "method": self.method,
                "bounds": asdict(self.bounds), "num_iter": self.num_iter, "measured_on": self.measured_on}

    @classmethod
    def from_state(cls, state: dict, origin: str) -> LRRangeTest:
        """The range test `state()` kept, with the suggestion and bounds it found then (not computed anew), its
        figure and the lines `find_lr` printed, both saying where it comes from (`origin`)."""
        bounds = CycleBounds(**state["bounds"])
        window = suggest_lr(state["lrs"], state["losses"]).window
        return _shown(state["lrs"], state["losses"], state["num_iter"],
                      Suggestion(state["suggested_lr"], state["method"], window), bounds, state["measured_on"],
                      origin)


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


GIVE_BACK = 0.5  # the loss has diverged once it climbs back above its lowest point by this fraction of its fall
STARTS_TO_FALL = 0.1  # the loss "starts to fall" once it is this fraction of the way down to its lowest point


@dataclass(frozen=True)
class CycleBounds:
    """A learning-rate range from a range test (Smith 2017, section 3.3), and where the loss diverged.

    - `lr_min`: where the smoothed loss starts to fall: a cycle's lower bound.
    - `lr_max`: where it stops falling (its lowest point before it diverges): a cycle's upper bound.
    - `lr_diverged`: where it first climbs back to its starting level after that, i.e. where the test stopped
      converging; None when it never does within the test.
    - `method`: how they were found, in words.
    """

    lr_min: float
    lr_max: float
    lr_diverged: float | None
    method: str

    def decay_start_lr(self) -> float:
        """The starting LR of a schedule that only decays (ReduceLROnPlateau, step decay), by Smith's rule of
        thumb (2017, section 3.3): the best LR is usually within a factor of two of the largest one that converges.
        Half of `lr_diverged`, never below `lr_max` (where the loss still fell); `lr_max` when the test never
        diverged."""
        return max(self.lr_max, self.lr_diverged / 2) if self.lr_diverged else self.lr_max


def _moving_average(values: np.ndarray, width: int = 5) -> np.ndarray:
    """A centred moving average that keeps the length (the window shrinks at the ends)."""
    half = width // 2
    return np.array([values[max(i - half, 0): i + half + 1].mean() for i in range(len(values))])


def cycle_bounds(lrs: Sequence[float], losses: Sequence[float], *, skip_start: int = SKIP_START,
                 skip_end: int = SKIP_END, min_drop: float = MIN_DROP) -> CycleBounds:
    """A cycle's `(lr_min, lr_max)` from a range test's learning rates and smoothed losses (Smith's rule: the
    lower bound where the loss starts to fall, the upper bound where it stops falling), and where it diverged.

    Over the finite part of the curve, trimmed as in `analysis_window`, with the starting level the median of the
    first three points:
    - the curve is cut where the loss first climbs back above its lowest point so far by `GIVE_BACK` of the fall
      made so far (once that fall is at least `min_drop` of the starting level): a loss that falls again after
      diverging (as ResNet-9's does beyond LR 2) is never read;
    - `lr_max` is the lowest point before the cut, on a 5-point moving average (robust to noise);
    - `lr_min` is the first point `STARTS_TO_FALL` of the way down from the starting level to that lowest point;
    - `lr_diverged` is the first point after `lr_max`, trimmed end included, whose loss is back at the starting
      level (None if none).
    A loss that never falls by `min_drop` of its starting level has no cycle in it: then `lr_max` is `suggest_lr`'s
    fallback and `lr_min` a hundredth of it (OneCycleLR's range is 25; Page's cycle starts from 0), and `method`
    says so.
    """
    if not lrs or len(lrs) != len(losses):
        raise ValueError(f"need as many losses as learning rates (at least one), got {len(lrs)} and {len(losses)}")
    lrs_array, losses_array = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    finite = np.isfinite(losses_array)
    n = len(losses_array) if finite.all() else int(np.argmin(finite))
    smoothed = np.empty(0)
    if n >= 2:
        window = analysis_window(n, skip_start, skip_end)
        x, y = lrs_array[window], losses_array[window]
        start = float(np.median(y[:3]))
        lowest_so_far = np.minimum.accumulate(y)
        fell = start - lowest_so_far
        gave_back = np.flatnonzero((fell >= min_drop * abs(start)) & (y - lowest_so_far > GIVE_BACK * fell))
        smoothed = _moving_average(y[: gave_back[0] if len(gave_back) else len(y)])
    if len(smoothed) < 2 or start - smoothed.min() < min_drop * abs(start):
        fallback = suggest_lr(lrs, losses, skip_start=skip_start, skip_end=skip_end, min_drop=min_drop)
        return CycleBounds(max(fallback.lr / 100, float(lrs_array[0])), fallback.lr, None,
                           f"no cycle: the loss never fell by {min_drop:.0%}; upper bound the suggestion "
                           f"({fallback.method}), lower bound a hundredth of it")
    lowest = int(np.argmin(smoothed))
    falling = np.flatnonzero(y[: lowest + 1] <= start - STARTS_TO_FALL * (start - smoothed[lowest]))
    first_fall = int(falling[0]) if len(falling) else lowest
    after = window.start + lowest  # the trimmed end is read here: it is where a test diverges
    back_up = np.flatnonzero(losses_array[after:n] >= start)
    lr_diverged = float(lrs_array[after + back_up[0]]) if len(back_up) else None
    return CycleBounds(float(x[first_fall]), float(x[lowest]), lr_diverged,
                       f"Smith's bounds: the loss starts to fall ({STARTS_TO_FALL:.0%} of the way down) at lr_min "
                       f"and is lowest at lr_max" + (f"; back at its starting level at {lr_diverged:.2e}"
                                                      if lr_diverged else "; never back at its starting level"))


def plot_range_test(lrs: Sequence[float], losses: Sequence[float], suggestion: Suggestion,
                    title: str, bounds: CycleBounds | None = None) -> plt.Figure:
    """Smoothed loss against learning rate (log scale): the analysed window in colour, the trimmed points grey,
    the suggestion in red, a cycle's bounds (when given) as a green band and where the loss diverged in orange."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    finite = [(lr, loss) for lr, loss in zip(lrs, losses) if np.isfinite(loss)]
    if finite:
        ax.plot(*zip(*finite), color="0.7", marker=".", markersize=3, label="all points")
    window = [(lr, loss) for lr, loss in zip(lrs[suggestion.window], losses[suggestion.window]) if np.isfinite(loss)]
    if window:
        ax.plot(*zip(*window), color="C0", marker=".", markersize=4, label="points analysed")
    ax.axvline(suggestion.lr, color="red", linestyle="--", label=f"steepest descent {suggestion.lr:.2e}")
    if bounds is not None:
        ax.axvspan(bounds.lr_min, bounds.lr_max, color="C2", alpha=0.12,
                   label=f"cycle bounds {bounds.lr_min:.2e} - {bounds.lr_max:.2e}")
        ax.axvline(bounds.lr_max, color="C2", linestyle="-", linewidth=1.2)
        if bounds.lr_diverged:
            ax.axvline(bounds.lr_diverged, color="C1", linestyle=":",
                       label=f"loss back at its start {bounds.lr_diverged:.2e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss")
    ax.set_title("\n".join(textwrap.fill(line, 95) for line in title.splitlines()), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


class _ChannelsLastIter(TrainDataLoaderIter):
    """torch-lr-finder's iterator over `loader`, each batch of images in channels-last memory, as `fit` feeds them."""

    def inputs_labels_from_batch(self, batch_data):
        inputs, labels = batch_data
        return inputs.contiguous(memory_format=torch.channels_last), labels


def find_lr(model: nn.Module, optimizer: torch.optim.Optimizer, loader: Iterable, *,
            criterion: Callable | None = None, start_lr: float = 1e-5, end_lr: float = 10.0, num_iter: int = 100,
            step_mode: str = "exp", diverge_th: float = 5, device: torch.device | str | None = None,
            amp: bool = True) -> LRRangeTest:
    """Run torch-lr-finder's range test, suggest a learning rate (`suggest_lr`) and a cycle's bounds
    (`cycle_bounds`), and plot them; the model and optimizer are restored afterwards (`reset()`), whatever
    happens.

    A test that diverges early or a loss that never falls still gives a finite suggestion within the range; the
    printed line and the plot title say how it was found. The test runs in the precision and memory format `fit`
    uses on `device` (`autocast_dtype`, `channels_last_default`; `amp=False`: fp32): torch-lr-finder's
    `amp_backend="torch"` wraps each step's forward pass in `torch.autocast(**amp_config)` and steps through a
    GradScaler, enabled for fp16 only. Batches are copied to the device asynchronously only on CUDA (on mps such
    a copy can read released memory). `loader` may be a DataLoader or any iterable of
    (images, labels) batches (such as a `TensorLoader`).
    """
    if num_iter < MIN_ITERATIONS:
        raise ValueError(f"num_iter must be at least {MIN_ITERATIONS}: the suggestion skips the first {SKIP_START} "
                         f"and last {SKIP_END} points of a test that runs its course")
    device = select_device(device)
    amp_dtype = autocast_dtype(device, amp)
    channels_last = channels_last_default(device, model, amp_dtype)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    precision = {} if amp_dtype is None else {
        "amp_backend": "torch", "amp_config": {"device_type": device.type, "dtype": amp_dtype},
        "grad_scaler": torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)}
    finder = LRFinder(model, optimizer, criterion or nn.CrossEntropyLoss(), device=device, **precision)
    if channels_last:
        train_iter = _ChannelsLastIter(loader)
    else:
        train_iter = loader if isinstance(loader, DataLoader) else TrainDataLoaderIter(loader)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its closing remark; the line printed below says more
            finder.range_test(train_iter, start_lr=start_lr, end_lr=end_lr, num_iter=num_iter,
                              step_mode=step_mode, diverge_th=diverge_th,
                              non_blocking_transfer=device.type == "cuda")
    finally:
        finder.reset()  # back to the weights and optimizer state from before the test
    lrs, losses = [float(v) for v in finder.history["lr"]], [float(v) for v in finder.history["loss"]]
    measured_on = f"{device_name(device)}, {time.strftime('%Y-%m-%dT%H:%M')}"
    return _shown(lrs, losses, num_iter, suggest_lr(lrs, losses), cycle_bounds(lrs, losses), measured_on)


def _shown(lrs: list[float], losses: list[float], num_iter: int, suggestion: Suggestion, bounds: CycleBounds,
           measured_on: str, origin: str = "") -> LRRangeTest:
    """A range test's result with its two printed lines and its figure; `origin` (a stored test) heads both."""
    stopped_early = len(lrs) < num_iter
    steps = f"{len(lrs)} of {num_iter} steps" + (" (stopped early: the loss diverged)" if stopped_early else "")
    heading = f"LR range test ({origin})" if origin else "LR range test"
    print(f"{heading}, {steps}: suggested LR {suggestion.lr:.2e} by {suggestion.method}.\n"
          f"Cycle bounds {bounds.lr_min:.2e} - {bounds.lr_max:.2e}: {bounds.method}.")
    figure = plot_range_test(lrs, losses, suggestion,
                             f"{heading}, {steps}: steepest descent {suggestion.lr:.2e}, cycle "
                             f"{bounds.lr_min:.2e} - {bounds.lr_max:.2e}\nsuggestion by {suggestion.method}",
                             bounds)
    return LRRangeTest(lrs, losses, suggestion.lr, suggestion.method, bounds, stopped_early, figure, num_iter,
                       measured_on)
