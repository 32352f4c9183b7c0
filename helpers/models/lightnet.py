"""LightNet: a ResNet-like stack of depthwise-separable residual blocks for CIFAR-10 under 1M parameters.

Three stages at 32x32, 16x16 and 8x8 (downsampling by a stride-2 depthwise convolution), each of residual blocks of
two depthwise-separable 3x3 convolutions; the last block of every stage dilates its second convolution (rate 2)
to widen the receptive field at no cost in parameters. BatchNorm after every convolution, global average pooling,
a little dropout before the classifier.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class SeparableConv(nn.Sequential):
    """Depthwise k x k convolution (one filter per channel) + BN, then pointwise 1x1 convolution + BN."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1) -> None:
        padding = dilation * (kernel_size - 1) // 2  # keeps the size at stride 1
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                      groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )


class SeparableBlock(nn.Module):
    """relu(x' + shortcut(x)) with x' = sep(relu(sep(x))); the second convolution may be dilated.

    The shortcut is the identity, or a strided 1x1 convolution + BN when the shape changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = SeparableConv(in_channels, out_channels, stride=stride)
        self.conv2 = SeparableConv(out_channels, out_channels, dilation=dilation)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu(self.conv1(x)))
        return self.relu(out + self.shortcut(x))


class LightNet(nn.Module):
    """3x3 stem, one stage per width (stride 2 from the second), global average pooling, dropout, linear.

    `features` maps an image to the last spatial feature map; `head` pools and classifies it.
    """

    def __init__(self, widths: Sequence[int] = (96, 192, 384), blocks_per_stage: Sequence[int] = (2, 3, 2),
                 stem_width: int = 32, dropout: float = 0.1, num_classes: int = 10) -> None:
        super().__init__()
        if len(widths) != len(blocks_per_stage):
            raise ValueError(f"one width per stage: got {len(widths)} widths and {len(blocks_per_stage)} stages")
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, stem_width, 3, padding=1, bias=False),
                                                 nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True))]
        in_channels = stem_width
        for stage, (width, n_blocks) in enumerate(zip(widths, blocks_per_stage)):
            blocks = []
            for i in range(n_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                dilation = 2 if i == n_blocks - 1 else 1
                blocks.append(SeparableBlock(in_channels, width, stride=stride, dilation=dilation))
                in_channels = width
            layers.append(nn.Sequential(*blocks))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(in_channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def lightnet(num_classes: int = 10, dropout: float = 0.1) -> LightNet:
    """LightNet with widths 96/192/384 and 2/3/2 blocks per stage: 886,986 parameters, receptive field 75."""
    return LightNet(num_classes=num_classes, dropout=dropout)
