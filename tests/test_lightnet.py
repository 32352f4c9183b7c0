"""LightNet: under 1M parameters, built from depthwise-separable, dilated, residual blocks, and it learns."""
from __future__ import annotations

import albumentations as A
import numpy as np
import torch
from torch import nn

from helpers import transforms as T
from helpers.augmentation import Augmentation
from helpers.tensor_loader import TensorLoader
from helpers.models import count_parameters, lightnet
from helpers.models.lightnet import LightNet, SeparableBlock


def test_under_one_million_parameters() -> None:
    assert 500_000 < count_parameters(lightnet()) < 1_000_000


def test_output_shape_for_a_cifar_image_and_a_batch() -> None:
    model = lightnet().eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert lightnet(num_classes=7)(torch.randn(4, 3, 32, 32)).shape == (4, 7)


def test_has_the_required_building_blocks() -> None:
    model = lightnet()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [c for c in convs if c.groups == c.in_channels > 1 and c.kernel_size == (3, 3)]
    pointwise = [c for c in convs if c.kernel_size == (1, 1)]
    assert len(depthwise) >= 10 and len(pointwise) >= 10
    assert any(c.dilation == (2, 2) for c in depthwise)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(0 < d.p <= 0.2 for d in dropouts)
    assert isinstance(model.head[0], nn.AdaptiveAvgPool2d)
    assert sum(isinstance(m, SeparableBlock) for m in model.modules()) >= 6


def test_residual_block_adds_its_shortcut() -> None:
    block = SeparableBlock(8, 8).eval()
    for p in block.conv2.parameters():  # main branch output 0: the block is relu(x)
        nn.init.zeros_(p)
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(block(x), torch.relu(x))
    down = SeparableBlock(8, 16, stride=2)
    assert down(x).shape == (2, 16, 3, 3)


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = LightNet(widths=(16, 32, 64), blocks_per_stage=(1, 1, 1), stem_width=16)  # same design, small: fast
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(4):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# Notebook 02's augmentation: pad-4 crop, flip, scale/rotate without shift, Cutout; on both input pipelines.
NOTEBOOK_02_AUGMENT = Augmentation(crop_padding=4, flip=True, rotate_limit=10, scale_limit=0.1, shift_limit=0,
                                   affine_p=0.5, cutout_size=8, cutout_p=0.5)


def test_notebook_02_augmentation_builds_for_albumentations_in_order() -> None:
    steps = NOTEBOOK_02_AUGMENT.albumentation_steps()
    assert [type(s).__name__ for s in steps] == ["Compose", "HorizontalFlip", "Affine", "CoarseDropout"]
    assert [type(t).__name__ for t in steps[0].transforms] == ["PadIfNeeded", "RandomCrop"]
    affine = steps[2]
    assert affine.p == 0.5 and affine.rotate == (-10, 10) and affine.scale["x"] == (0.9, 1.1)
    assert affine.translate_percent["x"] == affine.translate_percent["y"] == (0, 0)  # the crop translates
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = NOTEBOOK_02_AUGMENT.cpu_transform(seed=0)(image=image)["image"]
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32


def test_notebook_02_augmentation_agrees_on_the_tensor_loader_and_albumentations() -> None:
    """On a flat image only the crop's zero padding, the warp's mean-pixel border and the mean-pixel hole change
    pixels: both pipelines show them as often (within 5 standard errors of the difference)."""
    n = 1000
    image = np.full((32, 32, 3), 200, np.uint8)
    loader = TensorLoader(np.repeat(image[None], n, 0), np.zeros(n), n, train=True, device="cpu",
                       augment=NOTEBOOK_02_AUGMENT, seed=0)
    tensor = T.denormalize(next(iter(loader))[0])  # uint8 NHWC
    albumentations = A.Compose(NOTEBOOK_02_AUGMENT.albumentation_steps(), seed=0)
    cpu = np.stack([albumentations(image=image)["image"] for _ in range(n)])
    for name, batch in (("tensor", tensor), ("cpu", cpu)):
        assert batch.shape == (n, 32, 32, 3), name
    stats = {}
    for name, batch in (("tensor", tensor), ("cpu", cpu)):
        padded = (batch == 0).all(-1).any((1, 2))  # the crop moved the image: zero padding came in
        mean_filled = (batch == np.array(T.MEAN_PIXEL, np.uint8)).all(-1).sum((1, 2)) >= 64  # a hole or a border
        stats[name] = padded.mean(), mean_filled.mean()
        assert padded.mean() > 0.9, name            # P(offset != (4, 4)) = 80/81, less what a warp or hole covers
        assert 0.4 < mean_filled.mean() < 0.75, name  # hole p 0.5, warp p 0.5, overlapping
    for (g, c) in zip(stats["tensor"], stats["cpu"]):
        assert abs(g - c) < 5 * np.sqrt(2 * 0.25 / n)
