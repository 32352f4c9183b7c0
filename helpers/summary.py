"""Model summary (torchsummary's layer table) and parameter counts."""
from __future__ import annotations

from torch import nn
from torchsummary import summary as _torchsummary

from .models import count_parameters


def model_summary(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> int:
    """Print the layer-by-layer table (output shapes, parameters) and return the trainable parameter count.

    Runs on the model's own device; the model is left in the mode it was in.
    """
    device = next(model.parameters()).device
    was_training = model.training
    # torchsummary only knows "cuda" and "cpu" by name.
    _torchsummary(model, input_size, device="cuda" if device.type == "cuda" else "cpu")
    model.train(was_training)
    return count_parameters(model)


__all__ = ["model_summary", "count_parameters"]
