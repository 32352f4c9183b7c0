"""Grad-CAM for the CIFAR models, with pytorch-grad-cam doing the work.

`CifarGradCAM` picks the target layer by name ("layer3", "layer4"), takes normalized image batches and class
targets, and releases its hooks when used as a context manager; `plot_gradcam` draws the overlays in a grid.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from .data import CIFAR10_MEAN, CIFAR10_STD
from .transforms import denormalize


class CifarGradCAM:
    """Grad-CAM heatmaps of `model` at `target_layers` (names such as "layer4", or modules).

    Use it as a context manager (`with CifarGradCAM(model, "layer4") as cam: ...`) or call `release()`: the
    forward hooks pytorch-grad-cam puts on the target layers stay until then. The model is put in eval mode.
    """

    def __init__(self, model: nn.Module, target_layers: str | nn.Module | Sequence[str | nn.Module] = "layer4",
                 mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD) -> None:
        if isinstance(target_layers, (str, nn.Module)):
            target_layers = [target_layers]
        self.model = model
        self.layers = [model.get_submodule(t) if isinstance(t, str) else t for t in target_layers]
        self.mean, self.std = tuple(mean), tuple(std)
        self.cam = GradCAM(model=model, target_layers=self.layers)

    def heatmaps(self, images: torch.Tensor, classes: Sequence[int] | None = None) -> np.ndarray:
        """Heatmaps [N, H, W] in [0, 1] for normalized `images` [N, 3, H, W], explaining the logit of `classes`
        (one per image; None: each image's predicted class)."""
        targets = None if classes is None else [ClassifierOutputTarget(int(c)) for c in classes]
        return self.cam(input_tensor=images, targets=targets)

    def overlays(self, images: torch.Tensor, heatmaps: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
        """The de-normalized images with their heatmaps blended in (uint8 [N, H, W, 3])."""
        pictures = denormalize(images, self.mean, self.std).astype(np.float32) / 255
        return np.stack([show_cam_on_image(p, m, use_rgb=True, image_weight=image_weight)
                         for p, m in zip(pictures, heatmaps)])

    def release(self) -> None:
        """Remove the hooks from the target layers."""
        self.cam.activations_and_grads.release()

    def __enter__(self) -> "CifarGradCAM":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def plot_gradcam(overlays: np.ndarray, y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str],
                 cols: int = 5, title: str | None = None) -> plt.Figure:
    """A grid of Grad-CAM overlays, each titled 'true → predicted'."""
    rows = max(1, -(-len(overlays) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.9, rows * 2.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, picture, t, p in zip(axes.flat, overlays, y_true, y_pred):
        ax.imshow(picture)
        ax.set_title(f"{classes[int(t)]} → {classes[int(p)]}", fontsize=8,
                     color="tab:red" if int(t) != int(p) else "black")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ = ["CifarGradCAM", "plot_gradcam"]
