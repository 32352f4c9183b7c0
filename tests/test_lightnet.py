"""LightNet: under 1M parameters, built from depthwise-separable, dilated, residual blocks, and it learns."""
from __future__ import annotations

import torch
from torch import nn

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
