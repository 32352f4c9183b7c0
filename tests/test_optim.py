"""weight_decay_groups: every parameter in exactly one group; decay on conv/linear weights only; depthwise filters,
normalization parameters and biases undecayed; works with SGD + OneCycleLR and through a checkpoint resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import helpers as h
from helpers.augmentation import Augmentation
from helpers.models import lightnet
from helpers.optim import describe_groups, is_depthwise, weight_decay_groups


def by_name(groups: list[dict]) -> dict[str, list[nn.Parameter]]:
    return {group["name"]: list(group["params"]) for group in groups}


def ids(params) -> set[int]:
    return {id(p) for p in params}


def test_every_trainable_parameter_is_in_exactly_one_group() -> None:
    model = lightnet()
    groups = weight_decay_groups(model, 5e-4)
    listed = [id(p) for group in groups for p in group["params"]]
    assert len(listed) == len(set(listed)), "a parameter in two groups"
    assert set(listed) == ids(model.parameters())
    assert [(g["name"], g["weight_decay"]) for g in groups] == [("decay", 5e-4), ("no_decay", 0.0)]


def test_lightnet_decays_only_full_and_pointwise_conv_and_linear_weights() -> None:
    model = lightnet()
    groups = by_name(weight_decay_groups(model, 5e-4))
    depthwise = [m.weight for m in model.modules() if is_depthwise(m)]
    dense = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and not is_depthwise(m)]
    norms = [p for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in (m.weight, m.bias)]
    biases = [m.bias for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None]
    assert len(depthwise) == 14 and all(w.shape[1] == 1 for w in depthwise)  # one 3x3 filter per channel
    assert ids(groups["decay"]) == ids(dense)
    assert ids(groups["no_decay"]) == ids(depthwise + norms + biases)
    assert biases and norms  # the classifier's bias; every BatchNorm's scale and shift


def test_depthwise_detection() -> None:
    assert is_depthwise(nn.Conv2d(8, 8, 3, groups=8))
    assert is_depthwise(nn.Conv2d(8, 16, 3, groups=8))       # channel multiplier 2: still one group per input
    assert not is_depthwise(nn.Conv2d(8, 8, 3))               # dense
    assert not is_depthwise(nn.Conv2d(8, 8, 3, groups=2))     # grouped, not depthwise
    assert not is_depthwise(nn.Conv2d(1, 4, 3, groups=1))     # a single input channel: an ordinary convolution
    assert not is_depthwise(nn.Linear(4, 4))


def test_skip_depthwise_false_decays_depthwise_filters_too() -> None:
    model = lightnet()
    groups = by_name(weight_decay_groups(model, 1e-4, skip_depthwise=False))
    depthwise = ids(m.weight for m in model.modules() if is_depthwise(m))
    assert depthwise <= ids(groups["decay"]) and not depthwise & ids(groups["no_decay"])


def test_biases_of_conv_and_linear_layers_shared_and_frozen_parameters() -> None:
    conv = nn.Conv2d(3, 4, 3, bias=True)
    frozen = nn.Linear(4, 4)
    frozen.weight.requires_grad_(False)
    model = nn.Sequential(conv, nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(4, 4), frozen)
    model.append(model[3])  # the same layer twice: its parameters once
    groups = by_name(weight_decay_groups(model, 0.1))
    assert ids(groups["decay"]) == ids([conv.weight, model[3].weight])
    assert ids(groups["no_decay"]) == ids([conv.bias, model[1].weight, model[1].bias, model[3].bias, frozen.bias])
    assert sum(len(g) for g in groups.values()) == len(ids(p for p in model.parameters() if p.requires_grad))


def test_empty_group_is_left_out() -> None:
    groups = weight_decay_groups(nn.BatchNorm2d(4), 5e-4)
    assert [g["name"] for g in groups] == ["no_decay"]


def small_lightnet() -> nn.Module:
    return h.models.LightNet(widths=(8, 16), blocks_per_stage=(1, 1), stem_width=8)


def test_sgd_applies_the_group_decay_and_one_cycle_sets_every_group() -> None:
    model = small_lightnet()
    optimizer = torch.optim.SGD(weight_decay_groups(model, 5e-4), lr=0.1, momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, epochs=2, steps_per_epoch=3)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [5e-4, 0.0]
    for _ in range(4):
        optimizer.zero_grad()
        model(torch.randn(4, 3, 16, 16)).logsumexp(1).mean().backward()
        optimizer.step()
        scheduler.step()
        lrs = {g["lr"] for g in optimizer.param_groups}
        assert len(lrs) == 1, "one-cycle gives every group the same learning rate"
    assert "decay: weight decay 0.0005" in describe_groups(optimizer)
    assert "no_decay: weight decay 0" in describe_groups(optimizer)


def test_no_decay_group_is_really_undecayed() -> None:
    """With zero gradient, SGD moves a decayed weight and leaves an exempt one where it is."""
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4, bias=True), nn.Conv2d(4, 4, 1))
    optimizer = torch.optim.SGD(weight_decay_groups(model, 0.5), lr=0.1)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    after = dict(model.named_parameters())
    torch.testing.assert_close(after["0.weight"], before["0.weight"])   # depthwise: no decay
    torch.testing.assert_close(after["0.bias"], before["0.bias"])       # bias: no decay
    torch.testing.assert_close(after["1.weight"], before["1.weight"] * (1 - 0.1 * 0.5))  # pointwise: decayed


def test_fit_with_two_param_groups_checkpoints_and_resumes(tmp_path) -> None:
    """A run killed after epoch 1 and resumed ends with the history of an uninterrupted one; the groups survive."""
    images = h.data.synthetic_images(np.arange(64) % 10)
    labels = np.arange(64) % 10
    augment = Augmentation(crop_padding=4, flip=True, rotate_limit=10, scale_limit=0.1, affine_p=0.5,
                           cutout_size=8, cutout_p=0.5)  # notebook 02's augmentation

    def run(checkpoint, stop_after_first=False):
        torch.manual_seed(0)
        model = small_lightnet()
        train = h.TensorLoader(images, labels, 32, train=True, device="cpu", augment=augment)
        test = h.TensorLoader(images[:32], labels[:32], 32, train=False, device="cpu")
        optimizer = torch.optim.SGD(weight_decay_groups(model, 5e-4), lr=0.05, momentum=0.9, nesterov=True)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, epochs=2,
                                                        steps_per_epoch=len(train))

        def stop(epoch, history):
            if stop_after_first:
                raise KeyboardInterrupt

        history = h.fit(model, train, optimizer, 2, test_loader=test, scheduler=scheduler, checkpoint_path=checkpoint,
                        device="cpu", seed=3, progress=False, on_epoch_end=stop)
        return history, optimizer

    whole, _ = run(None)
    checkpoint = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint, stop_after_first=True)
    saved = h.load_checkpoint(checkpoint)["optimizer"]["param_groups"]
    assert [(g["name"], g["weight_decay"]) for g in saved] == [("decay", 5e-4), ("no_decay", 0.0)]
    resumed, optimizer = run(checkpoint)
    assert [g["name"] for g in optimizer.param_groups] == ["decay", "no_decay"]
    for metric in ("train_loss", "test_acc"):
        np.testing.assert_allclose(resumed[metric], whole[metric], rtol=1e-5)
