"""Devices and precision: which device to use, which mixed precision it gets, copies to it, waiting for it.

`autocast_dtype(device)` is the one place that decides the precision of training and evaluation; `fit`, the
benchmark, `make run`'s estimate and the notebooks' header line (`describe_precision`) all ask it.
"""
from __future__ import annotations

import contextlib

import torch

BF16_CAPABILITY = (8, 0)  # Ampere on: cuDNN has bf16 convolutions (torch's supportsBFloat16ConvolutionWithCuDNNv8)
FP16_CAPABILITY = (7, 0)  # Volta and Turing: fp16 tensor cores


def select_device(preferred: str | torch.device | None = None) -> torch.device:
    """`preferred` if given, else the best available: cuda > mps > cpu."""
    if preferred not in (None, "", "auto"):
        return torch.device(preferred)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_name(device: torch.device | str) -> str:
    """A human-readable device name, e.g. 'NVIDIA H100 80GB HBM3' or 'cpu (2 threads)'."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def autocast_dtype(device: torch.device | str, enabled: bool = True) -> torch.dtype | None:
    """The mixed-precision dtype for `device`, decided by the GPU's compute capability; None means fp32.

    - CUDA, capability >= 8.0 (A100, A10, L4, RTX 30xx/40xx, H100): bf16, no loss scaling needed.
    - CUDA 7.x (T4, V100, RTX 20xx): fp16, trained with a GradScaler. `torch.cuda.is_bf16_supported()` says True
      on these cards too (it counts emulation), but cuDNN has no bf16 convolution below 8.0: every convolution
      would fall back to a slow per-image kernel.
    - CUDA below 7.0 (P100, GTX 10xx and older): fp32. There are no tensor cores, and on most of these cards fp16
      arithmetic is far slower than fp32.
    - CPU and mps: fp32.
    """
    device = torch.device(device)
    if not enabled or device.type != "cuda":
        return None
    capability = torch.cuda.get_device_capability(device)
    if capability >= BF16_CAPABILITY:
        return torch.bfloat16
    if capability >= FP16_CAPABILITY:
        return torch.float16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    """'bf16', 'fp16 + GradScaler' or 'fp32': how training runs with autocast dtype `dtype`."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16 + GradScaler", None: "fp32"}[dtype]


def describe_precision(device: torch.device | str, enabled: bool = True) -> str:
    """The precision `fit` trains in on `device`, and why: e.g. 'fp16 + GradScaler (Tesla T4, sm_75)'."""
    device = torch.device(device)
    name = precision_name(autocast_dtype(device, enabled))
    if device.type != "cuda":
        return f"{name} ({device.type})"
    major, minor = torch.cuda.get_device_capability(device)
    why = "" if not enabled or (major, minor) >= FP16_CAPABILITY else ": no tensor cores"
    return f"{name} ({device_name(device)}, sm_{major}{minor}{why})"


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast to `dtype` on `device`, or nothing when `dtype` is None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def non_blocking(device: torch.device | str, tensor: torch.Tensor) -> bool:
    """Whether copying `tensor` to `device` may be asynchronous: only to CUDA, and only from pinned memory.

    On mps an asynchronous copy from pageable memory can silently give wrong values (PyTorch's issue of
    `Tensor.to("mps", non_blocking=True)` reading a released source), and from pageable memory CUDA copies
    synchronously anyway.
    """
    return torch.device(device).type == "cuda" and tensor.device.type == "cpu" and tensor.is_pinned()


def to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool = False):
    """A batch moved to `device` (asynchronously where `non_blocking` allows), images channels_last if asked."""
    x = x.to(device, non_blocking=non_blocking(device, x))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=non_blocking(device, y))


def synchronize(device: torch.device | str) -> None:
    """Wait for the work queued on `device` (CUDA, mps or another accelerator); nothing to wait for on a CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type != "cpu":
        getattr(torch, device.type).synchronize()  # torch.mps.synchronize(), torch.xpu.synchronize(), ...


__all__ = ["autocast", "autocast_dtype", "describe_precision", "device_name", "non_blocking", "precision_name",
           "select_device", "synchronize", "to_device"]
