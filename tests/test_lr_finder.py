"""find_lr: torch-lr-finder's range test, with the model and optimizer restored afterwards."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helpers.lr_finder import MIN_ITERATIONS, find_lr


def tiny_setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 10))
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 10, (64,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return model, optimizer, loader


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
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, weights[k], rtol=0, atol=0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    assert not optimizer.state, "no momentum buffers left from the range test"
    assert 1e-4 <= result.suggested_lr <= 1.0
    assert len(result.lrs) == len(result.losses) == 20
    assert result.lrs[0] == pytest.approx(1e-4) and result.lrs == sorted(result.lrs)
    assert isinstance(result.figure, plt.Figure)
    plt.close(result.figure)


def test_accepts_any_iterable_of_batches() -> None:
    model, optimizer, loader = tiny_setup()
    batches = [(x, y) for x, y in loader]
    result = find_lr(model, optimizer, batches, start_lr=1e-4, end_lr=1.0, num_iter=17, device="cpu")
    assert 1e-4 <= result.suggested_lr <= 1.0
    plt.close(result.figure)
