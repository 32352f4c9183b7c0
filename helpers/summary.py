"""Model summary (torchsummary's layer table) and parameter counts."""
from __future__ import annotations

import copy

from torch import nn
from torchsummary import summary as _torchsummary

from .models import count_parameters


def model_summary(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> int:
    """Print the layer-by-layer table (output shapes, parameters) and return the trainable parameter count.

    The table is made on a copy (torchsummary runs a forward pass in training mode, which would move the model's
    BatchNorm statistics); a model on Apple's mps is summarized as a CPU copy (torchsummary knows cuda and cpu).
    """
    device = next(model.parameters()).device.type
    copy_of_model = copy.deepcopy(model) if device in ("cuda", "cpu") else copy.deepcopy(model).cpu()
    _torchsummary(copy_of_model, input_size, device=device if device == "cuda" else "cpu")
    return count_parameters(model)


__all__ = ["model_summary", "count_parameters"]
