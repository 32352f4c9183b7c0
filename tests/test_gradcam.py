"""Grad-CAM wrapper: heatmaps of the input's size in [0, 1] that are not all zero, and hooks released."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from helpers import transforms as T
from helpers.data import CIFAR10_CLASSES, synthetic_images
from helpers.gradcam import CifarGradCAM, plot_gradcam
from helpers.models import resnet18

N = 6


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return resnet18().eval()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, np.ndarray]:
    labels = np.arange(N) % 10
    transform = T.build_transform()
    images = torch.stack([transform(image=img)["image"] for img in synthetic_images(labels)])
    return images, labels


def forward_hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("layer", ["layer3", "layer4"])
def test_heatmaps_have_the_input_size_lie_in_0_1_and_are_not_all_zero(model, batch, layer) -> None:
    images, labels = batch
    with CifarGradCAM(model, layer) as cam:
        assert forward_hooks(model) > 0, "the CAM is hooked into the target layer while in use"
        maps = cam.heatmaps(images, labels)
    assert maps.shape == (N, 32, 32)
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    peaks = maps.reshape(N, -1).max(1)
    spreads = maps.reshape(N, -1).std(1)
    assert (peaks > 0.99).sum() >= N // 2, f"most heatmaps must be non-zero (peaks {peaks})"
    assert (spreads[peaks > 0] > 0.05).all(), "a non-zero heatmap must vary over the image"
    assert forward_hooks(model) == 0, "hooks released when the context exits"


def test_target_class_and_layer_change_the_heatmap(model, batch) -> None:
    images, _ = batch
    with CifarGradCAM(model, "layer4") as cam:
        class0, class1 = cam.heatmaps(images, [0] * N), cam.heatmaps(images, [1] * N)
    with CifarGradCAM(model, model.layer3) as cam:
        layer3 = cam.heatmaps(images, [0] * N)
    assert not np.allclose(class0, class1)
    assert not np.allclose(class0, layer3)


def test_hooks_released_on_error_and_by_release(model, batch) -> None:
    with pytest.raises(RuntimeError):
        with CifarGradCAM(model, ["layer3", "layer4"]):
            raise RuntimeError("boom")
    assert forward_hooks(model) == 0
    cam = CifarGradCAM(model, "layer4")
    cam.release()
    assert forward_hooks(model) == 0


def test_unknown_layer_name_fails_loudly(model) -> None:
    with pytest.raises(AttributeError):
        CifarGradCAM(model, "layer9")


def test_overlays_and_plot(model, batch) -> None:
    images, labels = batch
    with CifarGradCAM(model, "layer4") as cam:
        maps = cam.heatmaps(images, labels)
        overlays = cam.overlays(images, maps)
    assert overlays.shape == (N, 32, 32, 3) and overlays.dtype == np.uint8
    heat_only = cam.overlays(images, maps, image_weight=0.0)
    assert not np.array_equal(heat_only, T.denormalize(images)), "the heatmap is blended in"
    fig = plot_gradcam(overlays, labels, (labels + 1) % 10, CIFAR10_CLASSES, title="test")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == N and titles[0] == f"{CIFAR10_CLASSES[0]} → {CIFAR10_CLASSES[1]}"
    plt.close(fig)
