"""Receptive field of every convolution and pooling layer of a model, read from the model's own modules.

The layers are taken in the order the forward pass calls them (found with forward hooks on one dummy input), and
for each one the usual recurrences are applied, with k_eff = dilation * (kernel - 1) + 1:

    RF_out   = RF_in + (k_eff - 1) * jump_in
    jump_out = jump_in * stride

Residual branches: a residual block adds its main branch to a shortcut (identity or 1x1 convolution) that sees a
sub-window of what the main branch sees, so the RF of a block is the RF through its main branch. Layers inside a
shortcut branch (a submodule named `shortcut`, `downsample` or `skip`, as in helpers.models and torchvision) are
therefore left out of the chain (they appear in the table, marked as shortcuts, with the RF they leave unchanged).
Global / adaptive pooling is not a local layer and is left out: the final RF is that of the last spatial map.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LOCAL_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
SHORTCUT_NAMES = ("shortcut", "downsample", "skip")


@dataclass(frozen=True)
class ReceptiveFieldRow:
    """One layer: its geometry, the spacing of its outputs in input pixels (jump) and its receptive field.

    `padding` is -1 for a string padding mode ("same"); it does not enter the RF.
    """

    name: str
    kind: str
    kernel: int
    stride: int
    dilation: int
    padding: int
    output_size: int
    jump: int
    rf: int
    shortcut: bool = False


def _square(value) -> int:
    """A layer's kernel/stride/... as one int; non-square geometry is not supported."""
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            raise ValueError(f"non-square layer geometry {value} is not supported")
        value = value[0]
    return int(value)


def _is_shortcut(name: str) -> bool:
    return any(part in SHORTCUT_NAMES for part in name.split("."))


def _layers_in_forward_order(model: nn.Module, input_size: tuple[int, int, int]) -> list[tuple[str, nn.Module, int]]:
    """(name, module, output size) of each local layer, in the order one forward pass calls them."""
    calls: list[tuple[str, nn.Module, int]] = []
    handles = [module.register_forward_hook(lambda m, i, out, name=name: calls.append((name, m, out.shape[-1])))
               for name, module in model.named_modules() if isinstance(module, LOCAL_LAYERS)]
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=parameter.device, dtype=parameter.dtype))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return calls


def receptive_field_table(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)
                          ) -> list[ReceptiveFieldRow]:
    """One row per Conv2d / MaxPool2d / AvgPool2d call of `model` on an input of `input_size`, in forward order."""
    rows, rf, jump = [], 1, 1
    for name, module, output_size in _layers_in_forward_order(model, input_size):
        kernel, stride = _square(module.kernel_size), _square(module.stride)
        dilation = _square(getattr(module, "dilation", 1))
        padding = _square(module.padding) if not isinstance(module.padding, str) else -1
        shortcut = _is_shortcut(name)
        if shortcut:
            rows.append(ReceptiveFieldRow(name, type(module).__name__, kernel, stride, dilation, padding,
                                          output_size, jump, rf, shortcut=True))
            continue
        rf += dilation * (kernel - 1) * jump
        jump *= stride
        rows.append(ReceptiveFieldRow(name, type(module).__name__, kernel, stride, dilation, padding, output_size,
                                      jump, rf))
    if not rows:
        raise ValueError("the model has no Conv2d, MaxPool2d or AvgPool2d layer")
    return rows


def receptive_field(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> int:
    """Receptive field (in input pixels) of one unit of the model's last spatial feature map."""
    return receptive_field_table(model, input_size)[-1].rf


def format_receptive_field_table(rows: list[ReceptiveFieldRow]) -> str:
    """The table as fixed-width text; shortcut layers are marked and do not change the RF."""
    width = max(len(r.name) for r in rows)
    header = f"{'layer':<{width}}  {'type':<9} {'k':>2} {'s':>2} {'d':>2} {'p':>2} {'out':>4} {'jump':>5} {'RF':>5}"
    lines = [header, "-" * len(header)]
    for r in rows:
        note = "  (shortcut: RF via main branch)" if r.shortcut else ""
        lines.append(f"{r.name:<{width}}  {r.kind:<9} {r.kernel:>2} {r.stride:>2} {r.dilation:>2} {r.padding:>2} "
                     f"{r.output_size:>4} {r.jump:>5} {r.rf:>5}{note}")
    return "\n".join(lines)


__all__ = ["ReceptiveFieldRow", "format_receptive_field_table", "receptive_field", "receptive_field_table"]
