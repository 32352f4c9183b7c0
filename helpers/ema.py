"""An exponential moving average (EMA) of a model's weights, kept by torch's own `swa_utils.AveragedModel`."""
from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class ModelEMA:
    """EMA of a model's parameters and BatchNorm buffers, updated by `fit` and evaluated beside the raw model.

    Every `every` optimizer steps the average moves towards the current weights:
    ``ema = d * ema + (1 - d) * weights`` with ``d = decay ** every``, so `decay` is per optimizer step whatever
    `every` is (its time constant is about ``1 / (1 - decay)`` steps). With `warmup`, ``d`` is capped at
    ``(1 + n) / (10 + n)`` for the n-th update (TensorFlow's rule), so the first epochs are not dominated by the
    initial weights. The first update copies the weights.

        ema = ModelEMA(model, decay=0.999)
        history = fit(model, ..., ema=ema)     # history["test_acc_ema"]; ema.module is the averaged network
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, every: int = 5, warmup: bool = True):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), not {decay}")
        if every < 1:
            raise ValueError(f"every must be a positive number of steps, not {every}")
        self.decay, self.every, self.warmup = decay, every, warmup
        self.steps = 0  # optimizer steps seen
        self.averaged = AveragedModel(model, multi_avg_fn=self._average, use_buffers=True)

    @property
    def module(self) -> nn.Module:
        """The averaged network (a copy of the model's architecture)."""
        return self.averaged.module

    def update_decay(self, update: int) -> float:
        """The decay applied at the `update`-th update (0: the first, which copies the weights)."""
        decay = self.decay**self.every
        return min(decay, (1 + update) / (10 + update)) if self.warmup else decay

    def step(self, model: nn.Module) -> None:
        """Count one optimizer step of `model`; every `every` steps, move the average towards its weights."""
        self.steps += 1
        if self.steps % self.every == 0:
            self.averaged.update_parameters(model)

    def _average(self, averaged, current, num_averaged) -> None:
        decay = self.update_decay(self.steps // self.every - 1)  # this update's index, from the step count
        get_ema_multi_avg_fn(decay)(averaged, current, num_averaged)

    def state_dict(self) -> dict:
        return {"averaged": self.averaged.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state["averaged"])
        self.steps = state["steps"]

    def __repr__(self) -> str:
        return (f"ModelEMA(decay={self.decay}, every={self.every}, warmup={self.warmup}, "
                f"time constant ~{1 / (1 - self.decay):.0f} steps)")
