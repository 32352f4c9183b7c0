"""David Page's ResNet-9 ("How to train your ResNet"): 94% on CIFAR-10 in 24 epochs."""
from __future__ import annotations

import torch
from torch import nn


def conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    """3x3 conv (no bias) [+ 2x2 max-pool] + BatchNorm + ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + f(x)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


class ResNet9(nn.Module):
    """prep 64 · layer1 128 + pool + residual(2 convs) · layer2 256 + pool · layer3 512 + pool + residual ·
    max-pool 4 · linear. `scale` multiplies the logits (Page used 0.125)."""

    def __init__(self, num_classes: int = 10, scale: float = 0.125) -> None:
        super().__init__()
        self.prep = conv_bn(3, 64)
        self.layer1 = nn.Sequential(conv_bn(64, 128, pool=True), Residual(nn.Sequential(conv_bn(128, 128),
                                                                                         conv_bn(128, 128))))
        self.layer2 = conv_bn(128, 256, pool=True)
        self.layer3 = nn.Sequential(conv_bn(256, 512, pool=True), Residual(nn.Sequential(conv_bn(512, 512),
                                                                                         conv_bn(512, 512))))
        self.pool = nn.AdaptiveMaxPool2d(1)  # 4x4 -> 1x1 at 32x32 input: Page's max-pool 4
        self.linear = nn.Linear(512, num_classes)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))
        return self.linear(self.pool(x).flatten(1)) * self.scale


def resnet9(num_classes: int = 10, scale: float = 0.125) -> ResNet9:
    """Page's ResNet-9: 6,573,130 parameters for 10 classes."""
    return ResNet9(num_classes, scale)
