"""Model summary (torchsummary's layer table) and parameter counts."""
from __future__ import annotations

import copy

from torch import nn
from torchsummary import summary as _torchsummary

from .models import count_parameters


def model_summary(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> int:
    """Print the layer-by-layer table (output shapes, parameters) and return the trainable parameter count.

    The table is made on a CPU copy, on any device: torchsummary runs a forward pass in training mode, which would
    move the model's BatchNorm statistics, and the table comes out the same wherever the model lives (a notebook's
    stored table, from a GPU run, is compared with a CPU run's by `pytest --nbval`).
    """
    _torchsummary(copy.deepcopy(model).cpu(), input_size, device="cpu")
    return count_parameters(model)


__all__ = ["model_summary", "count_parameters"]
