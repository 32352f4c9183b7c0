"""find_lr: torch-lr-finder's range test, a suggestion that never fails, the model and optimizer restored."""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helpers.lr_finder import MIN_ITERATIONS, analysis_window, cycle_bounds, find_lr, suggest_lr

FIXTURES = Path(__file__).parent / "fixtures"


def tiny_setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 10))
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 10, (64,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return model, optimizer, loader


def assert_restored(model, optimizer, weights) -> None:
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, weights[k], rtol=0, atol=0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    assert not optimizer.state, "no momentum buffers left from the range test"


def assert_usable(result, start_lr: float, end_lr: float) -> None:
    assert math.isfinite(result.suggested_lr) and start_lr <= result.suggested_lr <= end_lr
    assert isinstance(result.figure, plt.Figure)
    title = " ".join(result.figure.axes[0].get_title().split())  # wrapped to the figure's width
    assert f"{result.suggested_lr:.2e}" in title and " ".join(result.method.split()) in title
    plt.close(result.figure)


def test_minimum_iterations_is_17() -> None:
    assert MIN_ITERATIONS == 17


def test_raises_for_too_few_iterations() -> None:
    model, optimizer, loader = tiny_setup()
    with pytest.raises(ValueError, match="at least 17"):
        find_lr(model, optimizer, loader, num_iter=16, device="cpu")


def test_restores_weights_and_optimizer_and_suggests_within_the_range() -> None:
    model, optimizer, loader = tiny_setup()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    result = find_lr(model, optimizer, loader, start_lr=1e-4, end_lr=1.0, num_iter=20, device="cpu")
    assert_restored(model, optimizer, weights)
    assert len(result.lrs) == len(result.losses) == 20 and not result.stopped_early
    assert result.lrs[0] == pytest.approx(1e-4) and result.lrs == sorted(result.lrs)
    assert_usable(result, 1e-4, 1.0)


def test_accepts_any_iterable_of_batches() -> None:
    model, optimizer, loader = tiny_setup()
    batches = [(x, y) for x, y in loader]
    result = find_lr(model, optimizer, batches, start_lr=1e-4, end_lr=1.0, num_iter=17, device="cpu")
    assert_usable(result, 1e-4, 1.0)


def test_a_loss_that_explodes_after_a_few_steps_still_gives_a_suggestion(capsys) -> None:
    """At a huge end LR the loss passes 5x its best within a few steps: fewer points than torch-lr-finder's
    own suggestion needs (it would raise 'Need at least 17 iterations')."""
    model, optimizer, loader = tiny_setup()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    result = find_lr(model, optimizer, loader, start_lr=1e-2, end_lr=1e12, num_iter=40, device="cpu")
    assert result.stopped_early and len(result.lrs) < MIN_ITERATIONS
    assert_restored(model, optimizer, weights)
    assert_usable(result, 1e-2, 1e12)
    assert "stopped early" in capsys.readouterr().out


def test_a_flat_loss_falls_back_and_says_so(capsys) -> None:
    model, optimizer, loader = tiny_setup()
    weights = {k: v.clone() for k, v in model.state_dict().items()}

    def flat_loss(logits, labels):
        return logits.sum() * 0 + 1.0

    result = find_lr(model, optimizer, loader, criterion=flat_loss, start_lr=1e-4, end_lr=1.0, num_iter=20,
                     device="cpu")
    assert_restored(model, optimizer, weights)
    assert result.method.startswith("fallback") and not result.stopped_early
    assert_usable(result, 1e-4, 1.0)
    assert "fallback" in capsys.readouterr().out


def test_steepest_descent_is_found_on_a_known_curve() -> None:
    lrs = np.logspace(-5, 1, 100)
    losses = 2.3 - 1.5 / (1 + np.exp(-4 * (np.log10(lrs) + 2)))  # falls fastest at 1e-2
    losses[lrs > 1] += (np.log10(lrs[lrs > 1])) * 5                 # and blows up past 1
    suggestion = suggest_lr(lrs.tolist(), losses.tolist())
    assert suggestion.method.startswith("steepest descent")
    assert suggestion.lr == pytest.approx(1e-2, rel=0.15)


def test_a_loss_that_spikes_and_comes_down_again_does_not_pull_the_suggestion_past_the_minimum() -> None:
    """What a 60-step test of ResNet-9 looked like: a shallow dip to 0.08, a spike at 2, a fall after it (steeper
    than the dip); torch-lr-finder's rule would suggest an LR of about 4."""
    lrs = np.logspace(-4, 1, 60)
    dip = -0.05 / (1 + np.exp(-8 * (np.log10(lrs) + 1.6)))
    spike = np.where(lrs > 0.08, 1.2 * np.exp(-((np.log10(lrs) - 0.35) / 0.35) ** 2), 0.0)
    losses = 2.32 + dip + spike
    suggestion = suggest_lr(lrs.tolist(), losses.tolist())
    assert suggestion.method.startswith("steepest descent")
    assert 0.01 <= suggestion.lr <= lrs[int(np.argmin(losses))]


@pytest.mark.parametrize("n", range(1, 20))
def test_any_number_of_points_gives_a_finite_suggestion_within_the_tested_range(n) -> None:
    lrs = np.logspace(-4, 1, 20)[:n]
    losses = np.r_[np.linspace(2.3, 1.0, 20)[: max(n - 1, 1)], 50.0][:n]  # falls, then one diverged point
    suggestion = suggest_lr(lrs.tolist(), losses.tolist())
    assert math.isfinite(suggestion.lr) and lrs[0] <= suggestion.lr <= lrs[-1]
    window = analysis_window(n)
    assert 0 <= window.start < window.stop <= n and window.stop - window.start >= min(n, 2)


def test_non_finite_losses_end_the_curve() -> None:
    lrs = np.logspace(-4, 0, 30).tolist()
    losses = np.r_[np.linspace(2.3, 0.5, 20), np.nan, np.full(9, np.inf)].tolist()
    suggestion = suggest_lr(lrs, losses)
    assert suggestion.lr <= lrs[19] and suggestion.window.stop <= 20
    nothing = suggest_lr(lrs[:3], [math.nan] * 3)
    assert nothing.lr == lrs[0] and nothing.method.startswith("fallback")


def test_a_loss_that_only_rises_falls_back_to_the_first_lr() -> None:
    lrs = np.logspace(-4, 0, 30).tolist()
    suggestion = suggest_lr(lrs, np.linspace(1.0, 3.0, 30).tolist())
    assert suggestion.method.startswith("fallback") and suggestion.lr == pytest.approx(lrs[0])


def test_a_test_too_short_to_show_the_fall_suggests_a_tenth_of_where_the_loss_rises() -> None:
    """Flat (within noise), then rising from 0.5 on: what a 30-step test of a fresh ResNet looks like."""
    lrs = np.logspace(-4, 1, 30)
    losses = 2.32 + 0.003 * np.sin(np.arange(30)) + np.where(lrs > 0.5, np.log10(lrs / 0.5), 0.0)
    suggestion = suggest_lr(lrs.tolist(), losses.tolist())
    first_rise = int(np.argmax(losses > 2.32 * 1.05))
    assert suggestion.method.startswith("fallback") and "starts to rise" in suggestion.method
    assert suggestion.lr == pytest.approx(lrs[first_rise] / 10)


def test_a_loss_that_never_moves_suggests_a_tenth_of_the_largest_lr() -> None:
    lrs = np.logspace(-4, 0, 30).tolist()
    suggestion = suggest_lr(lrs, [2.3] * 30)
    assert "never rises" in suggestion.method and suggestion.lr == pytest.approx(lrs[-1] / 10)


# cycle_bounds: Smith's lower and upper bound of a cycle, and where the loss diverged.

def smoothed(values: np.ndarray, smooth_f: float = 0.05) -> np.ndarray:
    """torch-lr-finder's smoothing: an exponential moving average, debiased (LRFinder.range_test)."""
    out, average = [], 0.0
    for i, value in enumerate(values):
        average = smooth_f * value + (1 - smooth_f) * average
        out.append(average / (1 - (1 - smooth_f) ** (i + 1)))
    return np.array(out)


def sigmoid_curve(lrs: np.ndarray, centre: float = 1e-2, drop: float = 1.0, diverge_at: float = 1.0) -> np.ndarray:
    """2.3 falling by `drop` around `centre` (a decade wide), rising steeply past `diverge_at`."""
    log_lr = np.log10(lrs)
    losses = 2.3 - drop / (1 + np.exp(-4 * (log_lr - np.log10(centre))))
    return losses + np.where(lrs > diverge_at, 6 * np.log10(lrs / diverge_at) ** 2 * 10, 0.0)


def test_bounds_of_a_clean_curve_bracket_the_fall() -> None:
    lrs = np.logspace(-5, 1, 100)
    losses = sigmoid_curve(lrs)
    bounds = cycle_bounds(lrs.tolist(), losses.tolist())
    lowest = lrs[int(np.argmin(losses))]
    assert bounds.method.startswith("Smith")
    assert bounds.lr_max == pytest.approx(lowest, rel=0.3)      # where the loss stops falling
    assert 1e-3 <= bounds.lr_min <= 5e-3                         # a tenth of the way down the sigmoid: 10^-2.55
    assert bounds.lr_min < suggest_lr(lrs.tolist(), losses.tolist()).lr < bounds.lr_max
    assert bounds.lr_diverged is not None and lowest < bounds.lr_diverged <= 2.0
    assert bounds.decay_start_lr() == pytest.approx(max(bounds.lr_max, bounds.lr_diverged / 2))


def test_bounds_are_robust_to_noise() -> None:
    """Noise of 0.05 per step (a batch's loss), smoothed as torch-lr-finder does: the bounds move little."""
    lrs = np.logspace(-5, 1, 100)
    clean = cycle_bounds(lrs.tolist(), sigmoid_curve(lrs).tolist())
    for seed in range(5):
        noise = np.random.default_rng(seed).normal(0, 0.05, len(lrs))
        noisy = cycle_bounds(lrs.tolist(), smoothed(sigmoid_curve(lrs) + noise).tolist())
        assert noisy.method.startswith("Smith")
        assert 1 / 3 <= noisy.lr_max / clean.lr_max <= 3
        assert 1 / 3 <= noisy.lr_min / clean.lr_min <= 3


def test_a_loss_that_falls_again_after_diverging_keeps_the_first_minimum() -> None:
    """ResNet-9's curve: down to a minimum near 0.35, up until 2, then falling again (lower than the minimum)
    towards 10; the upper bound stays at the first minimum."""
    lrs = np.logspace(-4, 1, 100)
    log_lr = np.log10(lrs)
    losses = 2.35 - 0.3 / (1 + np.exp(-5 * (log_lr + 1.5)))
    losses += np.where(lrs > 0.35, 0.6 * np.log10(lrs / 0.35), 0.0)   # up from 0.35 ...
    losses -= np.where(lrs > 2, 1.5 * np.log10(lrs / 2), 0.0)          # ... and down again past 2, below 2.05
    assert losses[-1] < losses[lrs <= 0.35].min()
    bounds = cycle_bounds(lrs.tolist(), losses.tolist())
    assert bounds.method.startswith("Smith")
    assert 0.2 <= bounds.lr_max <= 0.45
    assert bounds.lr_min < 0.05


def test_a_test_that_diverged_early_still_gives_bounds_within_it() -> None:
    """Stopped by torch-lr-finder after 25 steps: a short fall, then a jump past its starting level."""
    lrs = np.logspace(-3, 2, 100)[:25]
    losses = np.r_[np.linspace(2.3, 1.9, 20), [2.0, 2.4, 3.5, 6.0, 12.0]]
    bounds = cycle_bounds(lrs.tolist(), losses.tolist())
    assert bounds.method.startswith("Smith")
    assert lrs[0] <= bounds.lr_min < bounds.lr_max <= lrs[19]
    assert bounds.lr_diverged is not None and lrs[19] < bounds.lr_diverged <= lrs[-1]


@pytest.mark.parametrize("losses", [np.full(60, 2.3), 2.3 + 0.003 * np.sin(np.arange(60)), np.linspace(2.3, 4, 60)],
                         ids=["flat", "flat with noise", "only rising"])
def test_a_curve_without_a_fall_says_it_has_no_cycle(losses) -> None:
    lrs = np.logspace(-4, 1, 60)
    bounds = cycle_bounds(lrs.tolist(), losses.tolist())
    fallback = suggest_lr(lrs.tolist(), losses.tolist())
    assert bounds.method.startswith("no cycle") and bounds.lr_diverged is None
    assert bounds.lr_max == fallback.lr and lrs[0] <= bounds.lr_min <= bounds.lr_max
    assert bounds.decay_start_lr() == bounds.lr_max


@pytest.mark.parametrize("n", range(1, 20))
def test_any_number_of_points_gives_finite_bounds_within_the_tested_range(n) -> None:
    lrs = np.logspace(-4, 1, 20)[:n]
    losses = np.r_[np.linspace(2.3, 1.0, 20)[: max(n - 1, 1)], 50.0][:n]
    bounds = cycle_bounds(lrs.tolist(), losses.tolist())
    assert lrs[0] <= bounds.lr_min <= bounds.lr_max <= lrs[-1]


def test_non_finite_losses_end_the_curve_for_the_bounds_too() -> None:
    lrs = np.logspace(-4, 0, 40)
    losses = np.r_[sigmoid_curve(lrs[:30], centre=1e-3, diverge_at=10), np.nan, np.full(9, np.inf)]
    bounds = cycle_bounds(lrs.tolist(), losses.tolist())
    assert bounds.method.startswith("Smith") and bounds.lr_max <= lrs[29]


def test_the_measured_notebook_03_curve() -> None:
    """Notebook 03's range test on the real training set (ResNet18, batch 128, 200 steps from 1e-5 to 10; measured
    on a CPU, ../shared/measured): steepest descent 0.0024, lowest smoothed loss at 0.024, back at its starting level
    past 0.2. The upper bound sits at the minimum; the start of a decaying schedule is Smith's half of the largest
    LR that still converged, about 0.1: the LR with which ResNet18 + SGD reaches 95 % (kuangliu/pytorch-cifar)."""
    curve = json.loads((FIXTURES / "nb03_lr_range_test.json").read_text())
    bounds = cycle_bounds(curve["lrs"], curve["losses"])
    assert bounds.method.startswith("Smith")
    assert 0.015 <= bounds.lr_max <= 0.03
    assert bounds.lr_min < curve["suggested_lr_steepest"] < bounds.lr_max
    assert bounds.lr_diverged is not None and 0.15 <= bounds.lr_diverged <= 0.3
    assert 0.07 <= bounds.decay_start_lr() <= 0.15


def test_find_lr_reports_the_bounds_beside_the_suggestion(capsys) -> None:
    model, optimizer, loader = tiny_setup()
    result = find_lr(model, optimizer, loader, start_lr=1e-4, end_lr=1.0, num_iter=20, device="cpu")
    assert result.bounds.lr_min <= result.bounds.lr_max
    assert "Cycle bounds" in capsys.readouterr().out
    assert f"{result.bounds.lr_max:.2e}" in result.figure.axes[0].get_title()
    labels = [text.get_text() for text in result.figure.axes[0].get_legend().get_texts()]
    assert any(label.startswith("cycle bounds") for label in labels)
    plt.close(result.figure)


@pytest.mark.parametrize("seed", range(20))
def test_any_curve_gives_ordered_bounds_within_the_tested_range(seed) -> None:
    """Random walks, smoothed as torch-lr-finder does, of random length: never an error, always
    first LR <= lr_min <= lr_max <= last LR, and lr_diverged (when found) past lr_max."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 120))
    lrs = np.logspace(-5, 1, n)
    losses = smoothed(2.3 + np.cumsum(rng.normal(0, 0.1, n)))
    bounds = cycle_bounds(lrs.tolist(), losses.tolist())
    assert lrs[0] <= bounds.lr_min <= bounds.lr_max <= lrs[-1]
    assert bounds.lr_diverged is None or bounds.lr_max < bounds.lr_diverged <= lrs[-1]
