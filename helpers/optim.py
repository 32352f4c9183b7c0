"""Optimizer parameter groups: weight decay only where it regularizes.

`weight_decay_groups(model, 5e-4)` returns torch param-group dicts for any `torch.optim` optimizer:

- decayed: the weights of convolutions and linear layers, except depthwise filters;
- not decayed: BatchNorm (and other normalization) scales and shifts, every bias (the "no bias decay" of He et al.
  2019, *Bag of Tricks*, Sec. 3.1; timm's `param_groups_weight_decay` rule: `ndim <= 1` or a `.bias`), and, with
  `skip_depthwise`, depthwise filters (a convolution with `groups == in_channels > 1`): the MobileNet paper (Howard
  et al. 2017, Sec. 3.2) found that depthwise filters, holding very few parameters, should get very little weight
  decay or none.

    optimizer = torch.optim.SGD(h.weight_decay_groups(model, 5e-4), lr=0.1, momentum=0.9, nesterov=True)

Every group carries a `name` ("decay", "no_decay") beside `params` and `weight_decay`; torch keeps extra keys in
`optimizer.param_groups` and in its state dict, so a checkpoint resumes into the same groups. Schedulers such as
OneCycleLR set the learning rate of every group alike.
"""
from __future__ import annotations

from torch import nn


def is_depthwise(module: nn.Module) -> bool:
    """A depthwise convolution: one filter group per input channel (`groups == in_channels > 1`)."""
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and module.groups == module.in_channels


def weight_decay_groups(model: nn.Module, weight_decay: float, *, skip_depthwise: bool = True) -> list[dict]:
    """Two param groups of `model`'s trainable parameters: `weight_decay` on convolution and linear weights, 0 on
    normalization parameters, biases and (with `skip_depthwise`) depthwise filters. Each parameter is in exactly one
    group, once even when shared; frozen ones (`requires_grad=False`) are left out; an empty group is left out."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            exempt = param.ndim <= 1 or name == "bias" or (skip_depthwise and is_depthwise(module))
            (no_decay if exempt else decay).append(param)
    groups = [{"name": "decay", "params": decay, "weight_decay": weight_decay},
              {"name": "no_decay", "params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def describe_groups(optimizer_or_groups) -> str:
    """One line per param group: its name, weight decay, and how many tensors and scalars it holds."""
    groups = getattr(optimizer_or_groups, "param_groups", optimizer_or_groups)
    lines = []
    for i, group in enumerate(groups):
        params = list(group["params"])
        lines.append(f"{group.get('name', f'group {i}')}: weight decay {group.get('weight_decay', 0.0):g}, "
                     f"{len(params)} tensors, {sum(p.numel() for p in params):,} parameters")
    return "\n".join(lines)


__all__ = ["describe_groups", "is_depthwise", "weight_decay_groups"]
