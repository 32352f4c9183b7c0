"""Devices and precision: which device to use, which mixed precision it gets, copies to it, waiting for it.

`autocast_dtype(device)` is the one place that decides the precision of training and evaluation; `fit`, the
benchmark, `make run`'s estimate and the notebooks' header line (`describe_precision`) all ask it.
"""
from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from functools import lru_cache

import torch
from torch import nn

BF16_CAPABILITY = (8, 0)  # Ampere on: cuDNN has bf16 convolutions (torch's supportsBFloat16ConvolutionWithCuDNNv8)
FP16_CAPABILITY = (7, 0)  # Volta and Turing: fp16 tensor cores
FORCE_FP32 = "HELPERS_FP32"  # set to 1 in the environment: fp32 on every device, for comparison


def select_device(preferred: str | torch.device | None = None) -> torch.device:
    """`preferred` if given, else the best available: cuda > mps > cpu."""
    if preferred not in (None, "", "auto"):
        return torch.device(preferred)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@lru_cache(maxsize=None)
def cpuinfo_field(key: str) -> str:
    """The first value of `key` in /proc/cpuinfo ('model name', 'vendor_id', 'flags'), '' where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.split(":", 1)[0].strip() == key), "")
    except OSError:
        return ""


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name, e.g. 'AMD EPYC' or 'Intel(R) Xeon(R) Platinum 8488C' ('unknown CPU' if not found)."""
    if cpuinfo_field("model name"):
        return cpuinfo_field("model name")
    if platform.system() == "Darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip() or platform.processor()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or "unknown CPU"


MATRIX_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile",
                "amx_bf16", "amx_int8", "amx_fp16")  # the /proc/cpuinfo flags that decide a CPU's training speed


def cpu_flags() -> str:
    """This CPU's flags among `MATRIX_FLAGS`, e.g. 'avx2 fma avx512f avx512_vnni avx512_bf16' ('' off Linux)."""
    flags = set(cpuinfo_field("flags").split())
    return " ".join(flag for flag in MATRIX_FLAGS if flag in flags)


def device_name(device: torch.device | str) -> str:
    """A human-readable device name, e.g. 'NVIDIA H100 80GB HBM3' or 'cpu (AMD EPYC, 2 threads)'."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"
    return device.type


def cpu_vendor() -> str:
    """The CPU's vendor as CPUID names it: 'AuthenticAMD', 'GenuineIntel', ... ('' where /proc/cpuinfo is absent)."""
    return cpuinfo_field("vendor_id")


def cpu_bf16_engine() -> str | None:
    """The CPU's native bf16 matrix instructions, as torch's kernels see them: 'AMX' (AMX tiles, Intel Sapphire
    Rapids and newer), 'AVX512-BF16' (AMD Zen 4 and newer, Intel Cooper Lake, Intel CPUs whose AMX a hypervisor
    hides), or None.

    Asked of torch itself (`torch.cpu._is_amx_tile_supported`, `_is_avx512_bf16_supported`: cpuinfo's reading of
    CPUID, the one oneDNN dispatches on), not of /proc/cpuinfo: it holds on every OS, and under a hypervisor that
    hides a flag from the guest both say the same. Torch builds without these probes (or other architectures:
    ARM's bf16 is not measured here) get None.
    """
    probes = (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported"))
    for name, probe in probes:
        supported = getattr(torch.cpu, probe, None)
        if supported is not None and supported():
            return name
    return None


def cpu_bf16_choice() -> tuple[bool, str]:
    """Whether `fit` trains in bf16 on this CPU, and why ('AMX', 'AVX512-BF16, AMD', 'AVX512-BF16 without AMX,
    GenuineIntel: measured no faster', 'no bf16 instructions').

    bf16 where it was measured faster than fp32 on 2 cores (training, forward + backward + SGD): with AMX (a
    Sapphire Rapids Xeon, channels-last: ResNet-9 294 img/s against 116 in fp32; measured before this benchmark
    had a CPU table) and with AVX512-BF16 on AMD (EPYC, Zen 4: ResNet-9 185 against 72 on the old fp32 NCHW path,
    1.6-2.9x for every model, results/bench_cpu.md). fp32 on an Intel CPU with AVX512-BF16 but no AMX (a Xeon
    whose AMX the hypervisor hides): there bf16 trained ResNet18 at 0.76x and ResNet-9 at 1.13x the old path,
    and evaluated every model slower (results/bench_cpu_xeon_avx512bf16.md). Without bf16 instructions oneDNN
    emulates bf16, several times slower than fp32 (pytorch/pytorch#118499).
    """
    engine = cpu_bf16_engine()
    if engine is None:
        return False, "no bf16 instructions"
    if engine == "AMX":
        return True, engine
    if cpu_vendor() == "AuthenticAMD":
        return True, f"{engine}, AMD"
    return False, f"{engine} without AMX, {cpu_vendor() or 'not AMD'}: measured no faster"


def fp32_forced() -> bool:
    """Whether `HELPERS_FP32` (any value but '', '0') asks for fp32 on every device."""
    return os.environ.get(FORCE_FP32, "") not in ("", "0")


def autocast_dtype(device: torch.device | str, enabled: bool = True) -> torch.dtype | None:
    """The mixed-precision dtype for `device`; None means fp32.

    - CUDA, capability >= 8.0 (A100, A10, L4, RTX 30xx/40xx, H100): bf16, no loss scaling needed.
    - CUDA 7.x (T4, V100, RTX 20xx): fp16, trained with a GradScaler. `torch.cuda.is_bf16_supported()` says True
      on these cards too (it counts emulation), but cuDNN has no bf16 convolution below 8.0: every convolution
      would fall back to a slow per-image kernel.
    - CUDA below 7.0 (P100, GTX 10xx and older): fp32. There are no tensor cores, and on most of these cards fp16
      arithmetic is far slower than fp32.
    - CPU: bf16 with AMX, or with AVX512-BF16 on AMD; fp32 on any other CPU (`cpu_bf16_choice` has the
      measurements).
    - mps: fp32.
    `enabled=False` or `HELPERS_FP32=1` in the environment: fp32 everywhere.
    """
    device = torch.device(device)
    if not enabled or fp32_forced():
        return None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_bf16_choice()[0] else None
    if device.type != "cuda":
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
    """The precision `fit` trains in on `device`, and why: e.g. 'fp16 + GradScaler (Tesla T4, sm_75)',
    'bf16 (cpu: AMX)', 'bf16 (cpu: AVX512-BF16, AMD)', 'fp32 (cpu: no bf16 instructions)',
    'fp32 (HELPERS_FP32=1)'."""
    device = torch.device(device)
    name = precision_name(autocast_dtype(device, enabled))
    if enabled and fp32_forced():
        return f"{name} ({FORCE_FP32}={os.environ[FORCE_FP32]})"
    if device.type == "cpu":
        return f"{name} (cpu: {cpu_bf16_choice()[1]})" if enabled else f"{name} (cpu)"
    if device.type != "cuda":
        return f"{name} ({device.type})"
    major, minor = torch.cuda.get_device_capability(device)
    why = "" if not enabled or (major, minor) >= FP16_CAPABILITY else ": no tensor cores"
    return f"{name} ({device_name(device)}, sm_{major}{minor}{why})"


def has_dilated_grouped_conv(model: nn.Module) -> bool:
    """Whether `model` has a grouped (e.g. depthwise) convolution with a dilation above 1 (LightNet has)."""
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 and max(m.dilation) > 1 for m in model.modules())


def channels_last_default(device: torch.device | str, model: nn.Module | None = None,
                          amp_dtype: torch.dtype | None = None) -> bool:
    """Whether `fit` trains `model` in channels-last memory on `device` under `amp_dtype` (None: fp32): on CUDA and
    on the CPU, not on mps.

    Faster on both for every model here (cuDNN's and oneDNN's convolutions are NHWC-native; results/bench_cpu.md
    has the CPU's figures). One exception, for correctness: on a CPU in bf16, a model with a dilated grouped
    convolution trains NCHW, because oneDNN's channels-last bf16 weight gradient of a dilated depthwise
    convolution on 32x32 maps is wrong (torch 2.14.1, AVX512-BF16 Xeon: relative error 1.4, sometimes NaN, where
    NCHW's is 0.003; `Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)` shows it; tests/test_cpu_training.py).
    """
    kind = torch.device(device).type
    if kind == "cpu" and amp_dtype == torch.bfloat16 and model is not None and has_dilated_grouped_conv(model):
        return False
    return kind in ("cuda", "cpu")


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
    """A batch moved to `device` (asynchronously where `non_blocking` allows), images channels_last if asked, else
    contiguous (NCHW: a convolution runs channels-last when its input is, whatever its weights' format)."""
    x = x.to(device, non_blocking=non_blocking(device, x))
    x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return x, y.to(device, non_blocking=non_blocking(device, y))


def synchronize(device: torch.device | str) -> None:
    """Wait for the work queued on `device` (CUDA, mps or another accelerator); nothing to wait for on a CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type != "cpu":
        getattr(torch, device.type).synchronize()  # torch.mps.synchronize(), torch.xpu.synchronize(), ...


__all__ = ["autocast", "autocast_dtype", "channels_last_default", "cpu_bf16_choice", "cpu_bf16_engine", "cpu_flags",
           "cpu_model", "cpu_vendor", "cpuinfo_field", "describe_precision", "device_name", "fp32_forced",
           "has_dilated_grouped_conv", "non_blocking", "precision_name", "select_device", "synchronize", "to_device"]
