"""The per-batch schedules have the shape their docstrings promise, and survive a checkpoint round trip."""
import io
import math

import numpy as np
import pytest
import torch

from helpers.engine import _scheduler_interval
from helpers.schedules import linear_one_cycle, plot_lr_schedule, warmup_cosine


def _lrs(scheduler, steps: int) -> np.ndarray:
    """The LR used by each of `steps` batches."""
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return np.array(lrs)


def _optimizer(lr: float = 0.1) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9, nesterov=True)


def test_warmup_cosine_shape():
    warmup, total, lr = 50, 500, 0.1
    lrs = _lrs(warmup_cosine(_optimizer(lr), warmup, total), total)
    assert lrs[0] == pytest.approx(lr / warmup)
    assert np.all(np.diff(lrs[:warmup]) > 0), "warm-up rises"
    assert lrs[warmup - 1] == pytest.approx(lr) and lrs[warmup] == pytest.approx(lr), "peak at the end of warm-up"
    assert np.all(np.diff(lrs[warmup:]) <= 1e-12), "cosine never rises"
    middle = warmup + (total - warmup) // 2
    assert lrs[middle] == pytest.approx(lr / 2, rel=1e-6), "half the peak halfway through the cosine"
    assert lrs[-1] < lr * 1e-3, "ends near zero"
    # a cosine, not a line: above the straight line in the first half of the decay
    quarter = warmup + (total - warmup) // 4
    assert lrs[quarter] > lr * 0.75 + 1e-3


def test_warmup_cosine_final_fraction_and_bad_arguments():
    lrs = _lrs(warmup_cosine(_optimizer(1.0), 0, 100, final_fraction=0.1), 101)
    assert lrs[0] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="warmup_steps < total_steps"):
        warmup_cosine(_optimizer(), 100, 100)


def test_warmup_cosine_with_an_earlier_cosine_start_is_the_reference_per_epoch_schedule_per_batch():
    """Notebook 05's schedule: the reference project's per-epoch LambdaLR, `epoch / 10` for 10 epochs, then
    `0.5 * (1 + cos(pi * (epoch - 5) / (epochs - 5)))`, taken per batch: at every epoch boundary from epoch 10 on
    the per-batch LR is the reference's, and the warm-up reaches the full LR at the end of epoch 10."""
    epochs, steps, lr = 60, 8, 0.1
    lrs = _lrs(warmup_cosine(_optimizer(lr), 10 * steps, epochs * steps, cosine_start=5 * steps), epochs * steps)
    reference = [lr * 0.5 * (1 + math.cos(math.pi * (epoch - 5) / (epochs - 5))) for epoch in range(10, epochs)]
    assert np.allclose(lrs[10 * steps::steps], reference)
    assert lrs[10 * steps - 1] == pytest.approx(lr) and np.all(np.diff(lrs[:10 * steps]) > 0)
    assert lrs[10 * steps] == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi / 11))), "joins the cosine part-way"
    assert np.all(np.diff(lrs[10 * steps:]) <= 1e-12) and lrs[-1] < lr * 1e-3
    with pytest.raises(ValueError, match="cosine_start <= warmup_steps"):
        warmup_cosine(_optimizer(), 10, 100, cosine_start=11)


def test_warmup_cosine_resumes_from_a_weights_only_checkpoint():
    scheduler = warmup_cosine(_optimizer(), 10, 100)
    _lrs(scheduler, 30)
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    resumed = warmup_cosine(_optimizer(), 1, 2)  # wrong settings on purpose: the checkpoint restores them
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    resumed.optimizer.param_groups[0]["lr"] = scheduler.optimizer.param_groups[0]["lr"]
    assert np.allclose(_lrs(resumed, 20), _lrs(scheduler, 20))


def test_linear_one_cycle_peaks_at_epoch_5_and_returns_to_the_start():
    max_lr, epochs, steps, div = 0.4, 24, 10, 100.0
    scheduler = linear_one_cycle(_optimizer(), max_lr, epochs, steps, peak_epoch=5, div_factor=div)
    assert _scheduler_interval(scheduler) == "batch", "fit steps it per batch by itself"
    lrs = _lrs(scheduler, epochs * steps)
    peak = int(np.argmax(lrs))
    assert lrs[peak] == pytest.approx(max_lr)
    assert peak == 5 * steps - 1, "peak at the end of epoch 5"
    assert lrs[0] == pytest.approx(max_lr / div)
    assert lrs[-1] == pytest.approx(max_lr / div, rel=0.05), "no annihilation below the starting LR"
    assert lrs.min() >= max_lr / div - 1e-12
    # linear on both sides of the peak: constant differences
    assert np.allclose(np.diff(lrs[:peak + 1]), np.diff(lrs[:peak + 1])[0])
    assert np.allclose(np.diff(lrs[peak:]), np.diff(lrs[peak:])[0])
    assert scheduler.optimizer.param_groups[0]["momentum"] == 0.9, "momentum is not cycled"


def test_linear_one_cycle_rejects_a_peak_outside_the_run():
    with pytest.raises(ValueError, match="peak_epoch"):
        linear_one_cycle(_optimizer(), 0.4, 24, 10, peak_epoch=24)


def test_plot_lr_schedule_replays_the_schedule_without_touching_the_real_optimizer():
    optimizer = _optimizer(0.1)
    fig = plot_lr_schedule(lambda opt: warmup_cosine(opt, 5, 40), epochs=4, steps_per_epoch=10)
    x, y = fig.axes[0].lines[0].get_data()
    assert len(y) == 40 and x[-1] == pytest.approx(3.9)
    assert np.argmax(y) == 4 and y[4] == pytest.approx(1.0), "replayed on a throwaway optimizer with lr 1"
    assert optimizer.param_groups[0]["lr"] == 0.1
