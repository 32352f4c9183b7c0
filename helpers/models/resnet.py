"""ResNets for 32x32 inputs (CIFAR stem: one 3x3 convolution, no max-pool), after kuangliu/pytorch-cifar."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem, one stage per entry of `num_blocks` (stride 2 from the second), global pooling."""

    def __init__(self, num_blocks: Sequence[int], widths: Sequence[int] = (64, 128, 256, 512),
                 num_classes: int = 10, block: type[nn.Module] = BasicBlock) -> None:
        super().__init__()
        if len(num_blocks) != len(widths):
            raise ValueError(f"one width per stage: got {len(num_blocks)} stages and {len(widths)} widths")
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        for i, (n, width) in enumerate(zip(num_blocks, widths)):
            setattr(self, f"layer{i + 1}", self._make_layer(block, width, n, stride=1 if i == 0 else 2))
        self.num_stages = len(num_blocks)
        self.linear = nn.Linear(widths[-1] * block.expansion, num_classes)

    def _make_layer(self, block: type[nn.Module], planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            out = getattr(self, f"layer{i + 1}")(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet18(num_classes: int = 10) -> ResNet:
    """ResNet18 for CIFAR: BasicBlock [2, 2, 2, 2], 11,173,962 parameters for 10 classes."""
    return ResNet([2, 2, 2, 2], num_classes=num_classes)


def resnet34(num_classes: int = 10) -> ResNet:
    """ResNet34 for CIFAR: BasicBlock [3, 4, 6, 3]."""
    return ResNet([3, 4, 6, 3], num_classes=num_classes)


def resnet_kaggle(num_classes: int = 10) -> ResNet:
    """The Kaggle notebook's ResNet under 5M parameters: BasicBlock [3, 4, 3] with 66, 132 and 264 channels
    (32x32, 16x16, 8x8 maps); the global average pool is an 8x8 average pool. 4,916,284 parameters for 10 classes."""
    return ResNet([3, 4, 3], widths=(66, 132, 264), num_classes=num_classes)
