"""The receptive-field table, checked against a gradient probe on the same model."""
from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.models import lightnet, resnet9, resnet18
from helpers.receptive_field import format_receptive_field_table, receptive_field, receptive_field_table


def gradient_extent(model: nn.Module, features: Callable[[torch.Tensor], torch.Tensor], size: int) -> int:
    """Rows (and columns) of input pixels with a non-zero gradient of one central unit of the last feature map."""
    torch.manual_seed(0)
    model.eval()
    x = torch.randn(1, 3, size, size, requires_grad=True)
    fmap = features(x)
    center = fmap.shape[-1] // 2
    fmap[0, :, center, center].sum().backward()
    touched = x.grad[0].abs().sum(0) > 0
    rows, cols = touched.any(1).nonzero(), touched.any(0).nonzero()
    height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    assert height == width
    return height


def resnet18_features(model):
    def features(x):
        out = F.relu(model.bn1(model.conv1(x)))
        for i in range(model.num_stages):
            out = getattr(model, f"layer{i + 1}")(out)
        return out
    return features


def test_table_rows_follow_the_recurrence() -> None:
    rows = receptive_field_table(lightnet())
    assert rows[0].rf == 3 and rows[0].jump == 1
    chain = [r for r in rows if not r.shortcut]
    for before, after in zip(chain, chain[1:]):
        assert after.rf == before.rf + after.dilation * (after.kernel - 1) * before.jump
        assert after.jump == before.jump * after.stride
    assert any(r.dilation == 2 for r in rows)
    assert all(r.name.split(".")[-2] == "shortcut" for r in rows if r.shortcut)
    assert rows[-1].output_size == 8


def test_lightnet_receptive_field_exceeds_44() -> None:
    assert receptive_field(lightnet()) > 44


@pytest.mark.parametrize("make_model, features, size", [
    (lightnet, lambda m: m.features, 96),
    (resnet18, resnet18_features, 128),
    (resnet9, lambda m: (lambda x: m.layer3(m.layer2(m.layer1(m.prep(x))))), 96),
])
def test_computed_receptive_field_matches_the_gradient_probe(make_model, features, size) -> None:
    torch.manual_seed(0)
    model = make_model()
    computed = receptive_field(model, (3, size, size))
    assert computed < size - 8, "the probe must not be clipped by the image"
    assert gradient_extent(model, features(model), size) == computed


def test_receptive_field_at_32_equals_the_size_independent_value() -> None:
    model = lightnet()
    assert receptive_field(model) == receptive_field(model, (3, 96, 96))


def test_hooks_are_removed_and_mode_kept() -> None:
    model = lightnet().train()
    receptive_field_table(model)
    assert model.training
    assert not any(m._forward_hooks for m in model.modules())


def test_format_lists_every_layer() -> None:
    rows = receptive_field_table(lightnet())
    text = format_receptive_field_table(rows)
    assert len(text.splitlines()) == len(rows) + 2
    assert "shortcut" in text and str(rows[-1].rf) in text.splitlines()[-1]


def test_model_without_local_layers_is_rejected() -> None:
    with pytest.raises(ValueError):
        receptive_field_table(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)))
