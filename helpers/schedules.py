"""Learning-rate schedules stepped once per batch: a linear one-cycle (notebook 04) and warm-up + cosine (05).

Both are plain torch schedulers, so `fit` checkpoints and resumes them. `fit` recognizes OneCycleLR as per-batch by
itself; pass `scheduler_interval="batch"` for `warmup_cosine` (a LambdaLR).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR


def linear_one_cycle(optimizer: torch.optim.Optimizer, max_lr: float, epochs: int, steps_per_epoch: int,
                     peak_epoch: float = 5, div_factor: float = 100.0) -> OneCycleLR:
    """One cycle without an annihilation phase: linear from `max_lr / div_factor` up to `max_lr` at `peak_epoch`,
    then linear back down to the starting LR at the end of the last epoch.

    This is torch's OneCycleLR with `three_phase=False`, `anneal_strategy="linear"` and `final_div_factor=1`
    (torch's final LR is initial LR / final_div_factor, so 1 ends exactly where it began instead of annealing
    orders of magnitude below). Momentum is not cycled (David Page kept it at 0.9).
    """
    if not 0 < peak_epoch < epochs:
        raise ValueError(f"peak_epoch must lie inside the run: got {peak_epoch} for {epochs} epochs")
    return OneCycleLR(optimizer, max_lr=max_lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
                      pct_start=peak_epoch / epochs, anneal_strategy="linear", three_phase=False,
                      div_factor=div_factor, final_div_factor=1.0, cycle_momentum=False)


@dataclass(frozen=True)
class WarmupCosine:
    """LR multiplier for step `step`: linear warm-up to 1 over `warmup_steps`, then a half cosine down to
    `final_fraction` at `total_steps`. The cosine's phase counts from `cosine_start` (default: `warmup_steps`); an
    earlier start joins the warm-up part-way down the cosine, as the per-epoch schedule
    `0.5 * (1 + cos(pi * (epoch - 5) / (epochs - 5)))` after a 10-epoch warm-up does. A dataclass rather than a
    closure so its settings are checkpointed."""

    warmup_steps: int
    total_steps: int
    final_fraction: float = 0.0
    cosine_start: int | None = None

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        start = self.warmup_steps if self.cosine_start is None else self.cosine_start
        progress = min(1.0, (step - start) / max(1, self.total_steps - start))
        return self.final_fraction + (1 - self.final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  final_fraction: float = 0.0, cosine_start: int | None = None) -> LambdaLR:
    """Per-batch schedule: linear warm-up from `lr / warmup_steps` to the optimizer's `lr` over `warmup_steps`,
    then cosine annealing to `final_fraction * lr` at `total_steps` (step it once per batch). The cosine's phase
    counts from step `cosine_start` (0 <= cosine_start <= warmup_steps; default `warmup_steps`, a cosine that
    starts at its top)."""
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps} and {total_steps}")
    if cosine_start is not None and not 0 <= cosine_start <= warmup_steps:
        raise ValueError(f"need 0 <= cosine_start <= warmup_steps, got {cosine_start} and {warmup_steps}")
    return LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, final_fraction, cosine_start))


def plot_lr_schedule(build: Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler], epochs: int,
                     steps_per_epoch: int, title: str | None = None) -> plt.Figure:
    """Plot the LR of every batch of the schedule `build(optimizer)` would make, replayed on a throwaway optimizer
    (the real optimizer and scheduler are not touched)."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build(optimizer)
    lrs = []
    for _ in range(epochs * steps_per_epoch):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(np.arange(len(lrs)) / steps_per_epoch, lrs)
    ax.set(xlabel="epoch", ylabel="learning rate", title=title or "Learning-rate schedule (per batch)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


__all__ = ["WarmupCosine", "linear_one_cycle", "plot_lr_schedule", "warmup_cosine"]
