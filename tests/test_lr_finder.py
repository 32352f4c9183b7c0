"""find_lr: torch-lr-finder's range test, a suggestion that never fails, the model and optimizer restored."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helpers.lr_finder import MIN_ITERATIONS, analysis_window, find_lr, suggest_lr


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
    title = result.figure.axes[0].get_title()
    assert f"{result.suggested_lr:.2e}" in title and result.method in title
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
