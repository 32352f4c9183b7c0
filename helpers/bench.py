"""Training and input-pipeline throughput on this device, and the airbench94 reference: `python -m helpers.bench`.

1. Training paths (on a CPU by default; `--paths`): per notebook model at its batch size, training and evaluation
   images/s on the OLD path (fp32, NCHW memory, the albumentations DataLoader: what `fit` did on a CPU before it
   used the device's mixed precision) and on the NEW one (`fit`'s: `autocast_dtype`, `channels_last_default`,
   `TensorLoader`), in the same run; then the new path's evaluation images/s at several batch sizes, the evidence
   for `loaders.CPU_EVAL_BATCH`.
2. Input pipelines, all with the same augmentation (random crop with 4 pixels of zero padding, horizontal flip,
   normalization), feeding `--model` on the new path:
   (a) torchvision: a DataLoader over the uint8 arrays with RandomCrop, RandomHorizontalFlip, ToTensor, Normalize;
   (b) albumentations: `helpers.loaders.make_loader` with `helpers.transforms` (the "dataloader" backend);
   (c) tensor: `helpers.tensor_loader.TensorLoader` (uint8 dataset on the device, batched tensor augmentation).
   For each: training images/s (forward + backward + SGD step) and data-only images/s (the loader alone, batches
   moved to the device), each the median of `--repeats` timed chunks of `--steps` steps after warm-up (CUDA
   events on a GPU, time.perf_counter elsewhere). Ratios are to path (a).
3. The notebooks' stronger augmentations (02: crop, flip, scale/rotate, cutout; 03: crop, flip, quarter turns,
   rotation, cutout; 05: crop, flip, RandAugment, erasing), each on its DataLoader path (albumentations or
   torchvision v2) and its tensor path (`TensorLoader`): data-only images/s over whole epochs of
   `--pipeline-images` images. On CUDA also the training images/s of the notebook's model and batch size with the
   tensor path, against the same with crop and flip only: the epoch-time cost of the augmentation.
4. airbench94 (Keller Jordan's 94 % CIFAR-10 speedrun, 94.01 % mean of 1,000 runs on the original CIFAR-10) trained
   on the same local data, once per `--airbench-seeds`: its accuracy on this copy is the yardstick for the goals
   (the copy's cost), printed next to notebook 04's recorded result. On CUDA as airbench ships it (fp16); on a
   CPU with its network in fp32 under `autocast_dtype`'s autocast (bf16 where `cpu_bf16_choice` says so),
   which airbench 0.1.8 cannot do by itself (`airbench_on_cpu`). airbench is installed by requirements.txt; on
   the GPU machine it comes with the bundle.

airbench reads `cifar10/train.pt` and `cifar10/test.pt` relative to the working directory (dicts of uint8 HWC
images, int64 labels, class names, as torch.save'd by its CifarLoader); `write_airbench_data` writes them from
`load_cifar10()` under data/airbench/, so nothing is downloaded.

    python -m helpers.bench --out results/bench_cpu.md      # on a CPU: about 45 min, 30 of them airbench94
    python -m helpers.bench --out results/bench_cuda.md     # on a GPU machine; add --compile to compile models
    python -m helpers.bench --compile-models --out results/bench_cuda_compile.md   # each model eager vs compiled
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence
from unittest import mock

import numpy as np
import torch
import torchvision.transforms as TV
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import models
from .data import CIFAR10_MEAN, CIFAR10_STD, PROJECT_ROOT, Cifar10, load_cifar10
from .devices import (autocast, autocast_dtype, channels_last_default, cpu_flags, describe_precision, device_name,
                      precision_name, select_device, synchronize, to_device)
from .engine import describe_final_model
from .augmentation import Augmentation
from .tensor_loader import TensorLoader
from .loaders import CPU_EVAL_BATCH, default_num_workers, make_eval_loader, make_loader

AUGMENT = Augmentation(crop_padding=4, flip=True)  # what all three paths do


@dataclass(frozen=True)
class NotebookPipeline:
    """A notebook's training augmentation, model and batch size (as its parameter cell sets them)."""

    name: str
    augment: Augmentation
    model: str
    batch_size: int


PIPELINES = (
    NotebookPipeline("02 crop, flip, scale/rotate, cutout",
                     Augmentation(crop_padding=4, flip=True, rotate_limit=10, scale_limit=0.1, shift_limit=0,
                                  affine_p=0.5, cutout_size=8, cutout_p=0.5), "lightnet", 128),
    NotebookPipeline("03 crop, flip, rot90, rotate, cutout",
                     Augmentation(crop_padding=4, flip=True, rotate90_p=0.1, rotate_limit=10, affine_p=0.5,
                                  cutout_size=16, cutout_p=1.0), "resnet18", 128),
    NotebookPipeline("05 crop, flip, RandAugment, erasing",
                     Augmentation(crop_padding=4, flip=True, randaugment_ops=2, randaugment_magnitude=9,
                                  cutout_size=0, cutout_p=1.0, erasing_p=0.5, erasing_fill="black"), "resnet_kaggle",
                     128),
)


class TorchvisionDataset(Dataset):
    """The classic torchvision CIFAR-10 recipe over uint8 HWC arrays: PIL image, then `transform`."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, np.asarray(labels, dtype=np.int64), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def torchvision_loader(images: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device,
                       num_workers: int | None = None) -> DataLoader:
    """Path (a): RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize in a standard DataLoader."""
    transform = TV.Compose([TV.RandomCrop(32, padding=4), TV.RandomHorizontalFlip(), TV.ToTensor(),
                            TV.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    workers = default_num_workers(device) if num_workers is None else num_workers
    return DataLoader(TorchvisionDataset(images, labels, transform), batch_size=batch_size, shuffle=True,
                      drop_last=True, num_workers=workers, pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0)


def build_loaders(images: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device,
                  num_workers: int | None = None) -> dict[str, DataLoader | TensorLoader]:
    """The three training loaders, keyed by the name printed in the table."""
    return {
        "(a) torchvision DataLoader": torchvision_loader(images, labels, batch_size, device, num_workers),
        "(b) albumentations DataLoader": make_loader(images, labels, AUGMENT.cpu_transform(), batch_size,
                                                     train=True, device=device, num_workers=num_workers),
        "(c) TensorLoader": TensorLoader(images, labels, batch_size, train=True, device=device, augment=AUGMENT),
    }


def endless(loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches from `loader`, epoch after epoch."""
    while True:
        yield from loader


def median_seconds(step: Callable[[], None], steps: int, repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall time of `repeats` chunks of `steps` calls of `step`, after `warmup` calls."""
    for _ in range(warmup):
        step()
    timings = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                step()
            end.record()
            end.synchronize()
            timings.append(start.elapsed_time(end) / 1000)
        else:
            synchronize(device)
            began = time.perf_counter()
            for _ in range(steps):
                step()
            synchronize(device)
            timings.append(time.perf_counter() - began)
    return statistics.median(timings)


@dataclass
class Measurement:
    path: str
    data_images_per_s: float
    train_images_per_s: float | None


def data_throughput(loader, batch_size: int, device: torch.device, steps: int, repeats: int, warmup: int) -> float:
    """Images/s of the loader alone, each batch moved to the device (what training would consume)."""
    batches = endless(loader)

    def step() -> None:
        to_device(*next(batches), device, channels_last=channels_last_default(device))

    return steps * batch_size / median_seconds(step, steps, repeats, warmup, device)


def train_throughput(make_model: Callable[[], nn.Module], loader, batch_size: int, device: torch.device,
                     steps: int, repeats: int, warmup: int, compile: bool = False, *,
                     amp_dtype: torch.dtype | None | str = "fit", channels_last: bool | None = None) -> float:
    """Images/s of SGD training steps fed by `loader`, in `fit`'s mixed precision and memory format on `device`
    unless `amp_dtype` (None: fp32) and `channels_last` say otherwise."""
    amp_dtype = autocast_dtype(device) if amp_dtype == "fit" else amp_dtype
    torch.manual_seed(0)
    model = make_model()
    channels_last = channels_last_default(device, model, amp_dtype) if channels_last is None else channels_last
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    forward = torch.compile(model) if compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss()
    batches = endless(loader)
    model.train()

    def step() -> None:
        x, y = to_device(*next(batches), device, channels_last)
        with autocast(device, amp_dtype):
            loss = loss_fn(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return steps * batch_size / median_seconds(step, steps, repeats, warmup, device)


def eval_throughput(make_model: Callable[[], nn.Module], loader, device: torch.device, images: int, repeats: int,
                    *, amp_dtype: torch.dtype | None, channels_last: bool) -> float:
    """Images/s of evaluation forward passes over batches of `loader` (at least `images` per timed chunk)."""
    torch.manual_seed(0)
    model = make_model().to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    model.eval()
    batches = endless(loader)
    steps = max(1, -(-images // loader.batch_size))

    @torch.no_grad()
    def step() -> None:
        x, _ = to_device(*next(batches), device, channels_last)
        with autocast(device, amp_dtype):
            model(x)

    return steps * loader.batch_size / median_seconds(step, steps, repeats, 1, device)


@dataclass(frozen=True)
class ModelPath:
    """A notebook model benchmarked on the old and the new training path at its notebook's batch size."""

    model: str
    batch_size: int
    notebooks: str


MODEL_PATHS = (ModelPath("resnet9", 512, "04"), ModelPath("resnet18", 128, "01, 03"),
               ModelPath("resnet_kaggle", 128, "05"), ModelPath("lightnet", 128, "02"))
EVAL_BATCHES = (25, 50, 100, 250, 500)
GPU_EVAL_BATCH = 1024  # the paths' evaluation batch off the CPU (where `CPU_EVAL_BATCH` holds)


def paths_eval_batch(device: torch.device) -> int:
    """The evaluation batch both paths are measured at on `device`."""
    return CPU_EVAL_BATCH if device.type == "cpu" else GPU_EVAL_BATCH


@dataclass
class PathMeasurement:
    path: ModelPath
    old_train: float
    new_train: float
    old_eval: float
    new_eval: float
    new_eval_by_batch: dict[int, float]
    new_format: str  # the new path's precision and memory format for this model


def measure_paths(path: ModelPath, images: np.ndarray, labels: np.ndarray, device: torch.device, steps: int,
                  repeats: int, eval_images: int, eval_batches: Sequence[int]) -> PathMeasurement:
    """Training and evaluation images/s of one model on the old path (fp32, NCHW, albumentations DataLoader) and
    the new one (`fit`'s precision and memory format, `TensorLoader`), and the new path's evaluation at each of
    `eval_batches`."""
    make_model = models.FACTORIES[path.model]
    path = ModelPath(path.model, min(path.batch_size, len(labels)), path.notebooks)  # a tiny test set: one batch
    old_loader = make_loader(images, labels, AUGMENT.cpu_transform(), path.batch_size, train=True, device=device,
                             num_workers=0)
    new_loader = TensorLoader(images, labels, path.batch_size, train=True, device=device, augment=AUGMENT)
    amp_dtype = autocast_dtype(device)
    channels_last = channels_last_default(device, make_model(), amp_dtype)
    old_train = train_throughput(make_model, old_loader, path.batch_size, device, steps, repeats, 1,
                                 amp_dtype=None, channels_last=False)
    new_train = train_throughput(make_model, new_loader, path.batch_size, device, steps, repeats, 1,
                                 amp_dtype=amp_dtype, channels_last=channels_last)
    eval_batch = paths_eval_batch(device)
    old_eval = eval_throughput(make_model, make_eval_loader(images, labels, eval_batch, device, backend="dataloader"),
                               device, eval_images, repeats, amp_dtype=None, channels_last=False)
    by_batch = {batch: eval_throughput(make_model, TensorLoader(images, labels, batch, train=False, device=device),
                                       device, eval_images, repeats, amp_dtype=amp_dtype, channels_last=channels_last)
                for batch in sorted({*eval_batches, eval_batch})}
    return PathMeasurement(path, old_train, new_train, old_eval, by_batch[eval_batch],
                           {b: by_batch[b] for b in eval_batches},
                           f"{precision_name(amp_dtype)}, {'channels-last' if channels_last else 'NCHW'}")


def paths_table(rows: Sequence[PathMeasurement]) -> str:
    """Old against new path per model: training and evaluation images/s and their ratios."""
    lines = ["| model (notebooks), batch | new path | training, old | training, new | × | evaluation, old | "
             "evaluation, new | × |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.path.model} ({r.path.notebooks}), {r.path.batch_size} | {r.new_format} | "
                     f"{r.old_train:,.0f} | {r.new_train:,.0f} | {r.new_train / r.old_train:.2f} | {r.old_eval:,.0f} | "
                     f"{r.new_eval:,.0f} | {r.new_eval / r.old_eval:.2f} |")
    return "\n".join(lines)


@dataclass
class CompileMeasurement:
    path: ModelPath
    eager: float  # training images/s
    compiled: float
    compiled_seconds: float  # the compiled measurement's wall time, compilation (in its warm-up) included


def measure_compile(path: ModelPath, images: np.ndarray, labels: np.ndarray, device: torch.device, steps: int,
                    repeats: int, warmup: int) -> CompileMeasurement:
    """Training images/s of a notebook's model at its batch size on the tensor path (crop and flip), eager and
    under `torch.compile`, in `fit`'s precision and memory format."""
    loader = TensorLoader(images, labels, path.batch_size, train=True, device=device, augment=AUGMENT)
    make_model = models.FACTORIES[path.model]
    eager = train_throughput(make_model, loader, path.batch_size, device, steps, repeats, warmup)
    began = time.perf_counter()
    compiled = train_throughput(make_model, loader, path.batch_size, device, steps, repeats, warmup, compile=True)
    return CompileMeasurement(path, eager, compiled, time.perf_counter() - began)


def compile_table(rows: Sequence[CompileMeasurement]) -> str:
    """Eager against compiled training images/s per model."""
    lines = ["| model (notebooks), batch | training, eager | training, `torch.compile` | × | compiled run's wall time |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r.path.model} ({r.path.notebooks}), {r.path.batch_size} | {r.eager:,.0f} | {r.compiled:,.0f} | "
              f"{r.compiled / r.eager:.2f} | {r.compiled_seconds:.0f} s |" for r in rows]
    return "\n".join(lines)


def eval_batches_table(rows: Sequence[PathMeasurement]) -> str:
    """The new path's evaluation images/s per model and batch size, the fastest in bold."""
    batches = list(rows[0].new_eval_by_batch)
    lines = ["| model | " + " | ".join(f"batch {b}" for b in batches) + " |", "|---|" + "---:|" * len(batches)]
    for r in rows:
        best = max(r.new_eval_by_batch.values())
        cells = [f"**{v:,.0f}**" if v == best else f"{v:,.0f}" for v in r.new_eval_by_batch.values()]
        lines.append(f"| {r.path.model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def epoch_throughput(loader, device: torch.device, repeats: int) -> float:
    """Images/s of whole epochs of `loader` (batches moved to the device), the median of `repeats` after one."""
    images = len(loader) * loader.batch_size

    def epoch() -> None:
        for batch in loader:
            to_device(*batch, device, channels_last=channels_last_default(device))

    return images / median_seconds(epoch, 1, repeats, 1, device)


@dataclass
class PipelineMeasurement:
    pipeline: NotebookPipeline
    dataloader_images_per_s: float
    tensor_images_per_s: float
    train_images_per_s: float | None = None            # tensor path, the notebook's augmentation ...
    crop_flip_train_images_per_s: float | None = None  # ... and crop + flip only


def measure_pipeline(pipeline: NotebookPipeline, images: np.ndarray, labels: np.ndarray, device: torch.device,
                     repeats: int, num_workers: int | None, train: bool, compile: bool) -> PipelineMeasurement:
    """One notebook's augmentation: data-only images/s on both paths; with `train`, the training images/s of its
    model on the tensor path with it and with crop + flip only (one epoch of `images` per timed chunk)."""
    batch = pipeline.batch_size
    dataloader = make_loader(images, labels, pipeline.augment.cpu_transform(), batch, train=True, device=device,
                      num_workers=num_workers)
    tensor = TensorLoader(images, labels, batch, train=True, device=device, augment=pipeline.augment)
    result = PipelineMeasurement(pipeline, epoch_throughput(dataloader, device, repeats),
                                 epoch_throughput(tensor, device, repeats))
    if train:
        crop_flip = TensorLoader(images, labels, batch, train=True, device=device,
                              augment=Augmentation(crop_padding=pipeline.augment.crop_padding, flip=True))
        result.train_images_per_s, result.crop_flip_train_images_per_s = (
            train_throughput(models.FACTORIES[pipeline.model], loader, batch, device, len(loader), repeats,
                             len(loader), compile) for loader in (tensor, crop_flip))
    return result


def pipelines_table(rows: Sequence[PipelineMeasurement]) -> str:
    """Per notebook: data-only images/s of both paths and their ratio; training images/s where measured."""
    lines = ["| notebook augmentation | DataLoader path images/s | tensor path images/s | tensor / DataLoader | "
             "model, batch | training images/s (tensor path) | same, crop + flip only | epoch time × crop + flip |",
             "|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        trained = r.train_images_per_s is not None
        lines.append(
            f"| {r.pipeline.name} | {r.dataloader_images_per_s:,.0f} | {r.tensor_images_per_s:,.0f} | "
            f"{r.tensor_images_per_s / r.dataloader_images_per_s:.1f} | {r.pipeline.model}, {r.pipeline.batch_size} | "
            + (f"{r.train_images_per_s:,.0f} | {r.crop_flip_train_images_per_s:,.0f} | "
               f"{r.crop_flip_train_images_per_s / r.train_images_per_s:.2f} |" if trained else "- | - | - |"))
    return "\n".join(lines)


def markdown_table(rows: Sequence[Measurement]) -> str:
    """Path, data-only and training images/s, each with its ratio to path (a)."""
    base = rows[0]
    lines = ["| path | data-only images/s | × (a) | training images/s | × (a) |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        train = "-" if r.train_images_per_s is None else f"{r.train_images_per_s:,.0f}"
        train_ratio = ("-" if r.train_images_per_s is None or not base.train_images_per_s
                       else f"{r.train_images_per_s / base.train_images_per_s:.2f}")
        lines.append(f"| {r.path} | {r.data_images_per_s:,.0f} | {r.data_images_per_s / base.data_images_per_s:.2f}"
                     f" | {train} | {train_ratio} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- airbench


def write_airbench_data(data: Cifar10, folder: str | os.PathLike) -> Path:
    """Write `folder/train.pt` and `folder/test.pt` in airbench's CifarLoader format; returns `folder`.

    Each is a torch.save'd dict: 'images' uint8 [N, 32, 32, 3] (HWC), 'labels' int64 [N], 'classes' list of str.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, images, labels in (("train.pt", data.train_images, data.train_labels),
                                 ("test.pt", data.test_images, data.test_labels)):
        torch.save({"images": torch.from_numpy(np.ascontiguousarray(images)),
                    "labels": torch.from_numpy(np.asarray(labels, dtype=np.int64)), "classes": list(data.classes)},
                   folder / name)
    return folder


@contextlib.contextmanager
def airbench_on_cpu(amp_dtype: torch.dtype | None):
    """airbench 0.1.8 on a CPU, the same code and network. It hard-codes CUDA in three places; here
    - its `CifarLoader` reads the data to the CPU and holds it in fp32 (not fp16: a CPU converts fp16 slowly);
    - `make_net94` builds the network in fp32 on the CPU (its `.half().cuda()` a no-op while it runs), and each
      forward pass runs under autocast to `amp_dtype` (None: fp32) with fp32 master weights, as `fit` trains; the
      whitening layer's initialization (a covariance and its eigenvectors) stays in fp32;
    - its CUDA timing events and synchronizations do nothing (it is timed from outside).
    Yields (the CPU `CifarLoader`, the `make_net` to pass to `train94`)."""
    import airbench.utils
    from airbench.lib_airbench94 import make_net94

    class CpuCifarLoader(airbench.utils.CifarLoader):
        def __init__(self, path, train=True, batch_size=500, aug=None, drop_last=None, shuffle=None, altflip=False,
                     gpu=None):
            super().__init__(path, train, batch_size, aug, drop_last, shuffle, altflip, gpu="cpu")
            self.images = self.images.float()

    class NoEvent:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def record(self, *args) -> None:
            pass

        def elapsed_time(self, other) -> float:
            return 0.0

    def make_net_on_cpu() -> nn.Module:
        with mock.patch.object(nn.Module, "half", lambda self: self), \
                mock.patch.object(nn.Module, "cuda", lambda self, device=None: self):
            net = make_net94()
        forward = net.forward

        def forward_in_precision(x: torch.Tensor) -> torch.Tensor:
            with autocast(torch.device("cpu"), amp_dtype):
                return forward(x).float()

        net.forward = forward_in_precision
        return net

    with mock.patch.object(airbench.utils, "CifarLoader", CpuCifarLoader), \
            mock.patch.object(torch.cuda, "Event", NoEvent), \
            mock.patch.object(torch.cuda, "synchronize", lambda *args, **kwargs: None):
        yield CpuCifarLoader, make_net_on_cpu


def run_airbench94(data: Cifar10, workdir: str | os.PathLike, device: torch.device, seed: int = 0,
                   epochs: float | None = None, batch_size: int | None = None) -> dict:
    """Train airbench94 once on `data` (written under `workdir/cifar10`) from `seed`: seconds, accuracy with its
    TTA and without. On CUDA as airbench ships it (after its warm-up run); on a CPU through `airbench_on_cpu`.
    `epochs` and `batch_size` (airbench's 9.9 and 1024 by default) only for tests."""
    import airbench  # see the module docstring
    from airbench.lib_airbench94 import hyp

    workdir = Path(workdir)
    write_airbench_data(data, workdir / "cifar10")
    epochs = epochs or hyp["opt"]["train_epochs"]
    batch_size = batch_size or hyp["opt"]["batch_size"]
    previous = os.getcwd()
    os.chdir(workdir)  # airbench opens 'cifar10/train.pt' and 'cifar10/test.pt' relative to the working directory
    try:
        with contextlib.ExitStack() as stack:
            loader_class, make_net = airbench.CifarLoader, airbench.lib_airbench94.make_net94
            amp_dtype = autocast_dtype(device)
            if device.type == "cuda":
                airbench.warmup94()
            else:
                loader_class, make_net = stack.enter_context(airbench_on_cpu(amp_dtype))
            train_loader = loader_class("cifar10", train=True, batch_size=batch_size, aug=hyp["aug"], altflip=True)
            test_loader = loader_class("cifar10", train=False, batch_size=2000)
            torch.manual_seed(seed)
            synchronize(device)
            began = time.perf_counter()
            model = airbench.train94(train_loader, epochs=epochs, make_net=make_net, verbose=False)
            synchronize(device)
            seconds = time.perf_counter() - began
            accuracy = airbench.evaluate(model, test_loader, tta_level=hyp["net"]["tta_level"])
            plain = airbench.evaluate(model, test_loader, tta_level=0)
    finally:
        os.chdir(previous)
    return {"seconds": seconds, "test_acc": accuracy, "test_acc_plain": plain, "epochs": epochs, "seed": seed,
            "precision": "fp16 (airbench's own)" if device.type == "cuda" else precision_name(amp_dtype)}


def notebook04_result(results_dir: Path = PROJECT_ROOT / "results") -> str:
    """Notebook 04's recorded run (results/04_*.json), as one line."""
    paths = sorted(glob.glob(str(results_dir / "04_*.json")))
    if not paths:
        return "notebook 04: no results/04_*.json yet (a full run of notebook 04 fills this in)"
    record = json.loads(Path(paths[0]).read_text())
    return (f"notebook 04 ({Path(paths[0]).name}): {record.get('epochs')} epochs, "
            f"{describe_final_model(record['final_model'])}; {record.get('wall_seconds')} s of training on "
            f"{record.get('device')}")


def duration(seconds: float) -> str:
    """A training time as the airbench table shows it: seconds under 90 (a GPU's few), minutes from there (a CPU's)."""
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def airbench_section(data: Cifar10, device: torch.device, seeds: Sequence[int]) -> str:
    """airbench94's accuracy on this data and device, per seed and as a mean, next to notebook 04's; or why it
    was skipped."""
    try:
        import airbench  # noqa: F401
    except ImportError:
        return "airbench94: skipped (package not installed: pip install airbench==0.1.8, see helpers/bench.py)."
    runs = []
    for seed in seeds:
        runs.append(run_airbench94(data, PROJECT_ROOT / "data" / "airbench", device, seed))
        print(f"airbench94 seed {seed}: {runs[-1]['test_acc']:.2%} with its TTA, {runs[-1]['test_acc_plain']:.2%} "
              f"without ({duration(runs[-1]['seconds'])})", flush=True)
    tta, plain = [r["test_acc"] for r in runs], [r["test_acc_plain"] for r in runs]
    spread = lambda values: f" (spread {min(values):.2%} - {max(values):.2%})" if len(values) > 1 else ""  # noqa: E731
    lines = [f"## airbench94 on this data ({runs[0]['precision']}, {device_name(device)})", "",
             f"- data: {data.source}, {len(data.train_labels):,} training / {len(data.test_labels):,} test images; "
             f"airbench 0.1.8's own loop, network, augmentation and TTA" + (
                 "; on a CPU through `airbench_on_cpu` (fp32 weights, the forward pass under autocast)"
                 if device.type == "cpu" else ""), "",
             "The reference: 94.01 % (mean of 1,000 runs, fp16 on a GPU, with its TTA) on the original CIFAR-10. On "
             "this data it measures what the copy costs any recipe.", "",
             "| seed | epochs | training time | test accuracy, its TTA | without TTA |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['seed']} | {r['epochs']} | {duration(r['seconds'])} | {r['test_acc']:.2%} | "
              f"{r['test_acc_plain']:.2%} |" for r in runs]
    lines += ["", f"Mean over {len(runs)} seed{'s' * (len(runs) > 1)}: {statistics.mean(tta):.2%} with its TTA"
              f"{spread(tta)}, {statistics.mean(plain):.2%} without{spread(plain)}.", "", notebook04_result()]
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m helpers.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: best available)")
    parser.add_argument("--model", default="resnet9", choices=sorted(models.FACTORIES))
    parser.add_argument("--images", type=int, default=None,
                        help="training images to use (default: all on CUDA, 2048 elsewhere)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 512 on CUDA, 64 elsewhere")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per timed chunk (default: one epoch on CUDA, 4 elsewhere)")
    parser.add_argument("--data-steps", type=int, default=None,
                        help="steps per timed chunk of the data-only measurement (default: max(20, --steps))")
    parser.add_argument("--repeats", type=int, default=3, help="timed chunks; the median is reported")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 20 CUDA, 1 CPU)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers for (a), (b)")
    parser.add_argument("--data-only", action="store_true", help="measure the loaders without the model")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--compile-models", action="store_true",
                        help="only the table of each notebook's model (--path-models) at its batch size, trained "
                             "eager and under torch.compile on the tensor path (the GPU's short check)")
    parser.add_argument("--pipeline-images", type=int, default=None,
                        help="images per epoch of the notebook pipelines (default: 10,000 on CUDA, 1,024 elsewhere)")
    parser.add_argument("--train-pipelines", action=argparse.BooleanOptionalAction, default=None,
                        help="also time training with each pipeline (default: on CUDA only)")
    parser.add_argument("--paths", action=argparse.BooleanOptionalAction, default=None,
                        help="the old and new training path of every notebook model (default: on a CPU only)")
    parser.add_argument("--path-models", nargs="+", default=[p.model for p in MODEL_PATHS],
                        choices=[p.model for p in MODEL_PATHS], help="models of the training-path table")
    parser.add_argument("--path-steps", type=int, default=2, help="training steps per timed chunk there")
    parser.add_argument("--eval-images", type=int, default=500, help="images per timed evaluation chunk")
    parser.add_argument("--eval-batches", type=int, nargs="+", default=list(EVAL_BATCHES),
                        help="evaluation batch sizes of the new path")
    parser.add_argument("--airbench-seeds", type=int, nargs="+", default=[0, 1], help="one airbench94 run each")
    parser.add_argument("--no-airbench", action="store_true", help="skip airbench94")
    parser.add_argument("--data-root", default=None, help="CIFAR-10 root (default: $CIFAR10_ROOT or data/)")
    parser.add_argument("--out", default=None, help="markdown file (default: results/bench_<device type>.md)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> str:
    """Run the benchmark, print the report and write it as markdown; returns the report."""
    args = parse_args(argv)
    device = select_device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    data = load_cifar10(args.data_root, download=False, synthetic_if_missing=True)
    n_images = args.images or (len(data.train_labels) if cuda else 2048)
    data = data.subset(n_images, None)
    batch_size = args.batch_size or (512 if cuda else 64)
    steps = args.steps or (len(data.train_labels) // batch_size if cuda else 4)
    data_steps = args.data_steps or max(20, steps)
    warmup = args.warmup if args.warmup is not None else (20 if cuda else 1)
    if args.compile_models:
        return write_report(compile_models_report(data, device, args, steps, warmup), args.out, device)
    loaders = build_loaders(data.train_images, data.train_labels, batch_size, device, args.workers)

    path_rows = []
    if args.paths if args.paths is not None else device.type == "cpu":
        for path in (p for p in MODEL_PATHS if p.model in args.path_models):
            row = measure_paths(path, data.train_images, data.train_labels, device, args.path_steps, args.repeats,
                                args.eval_images, args.eval_batches)
            path_rows.append(row)
            print(f"{path.model}: training {row.old_train:,.0f} -> {row.new_train:,.0f} images/s, evaluation "
                  f"{row.old_eval:,.0f} -> {row.new_eval:,.0f}", flush=True)
    paths_section = [] if not path_rows else [
        "## Training paths: old (fp32, NCHW, albumentations DataLoader) and new (fit's)", "",
        f"- each model at its notebook's batch size, synthetic steps on {len(data.train_labels):,} images with crop "
        f"and flip; training: median of {args.repeats} chunks of {args.path_steps} steps after 1 warm-up step; "
        f"evaluation: median of {args.repeats} chunks of {args.eval_images} images, batches of "
        f"{paths_eval_batch(device)} (`CPU_EVAL_BATCH` on a CPU)",
        f"- new path: {describe_precision(device)}, TensorLoader, channels-last except where "
        "`channels_last_default` says NCHW (a dilated depthwise convolution in bf16 on a CPU)", "",
        paths_table(path_rows), "",
        "The new path's evaluation images/s by batch size (the fastest in bold):", "",
        eval_batches_table(path_rows), ""]

    rows = []
    for path, loader in loaders.items():
        data_rate = data_throughput(loader, batch_size, device, data_steps, args.repeats, warmup)
        train_rate = None if args.data_only else train_throughput(
            models.FACTORIES[args.model], loader, batch_size, device, steps, args.repeats, warmup, args.compile)
        rows.append(Measurement(path, data_rate, train_rate))
        print(f"{path}: data {data_rate:,.0f} images/s" + ("" if train_rate is None else
                                                            f", training {train_rate:,.0f} images/s"), flush=True)

    pipeline_data = data.subset(min(args.pipeline_images or (10_000 if cuda else 1024), n_images), None)
    train_pipelines = (cuda if args.train_pipelines is None else args.train_pipelines) and not args.data_only
    pipeline_rows = []
    for pipeline in PIPELINES:
        row = measure_pipeline(pipeline, pipeline_data.train_images, pipeline_data.train_labels, device,
                               args.repeats, args.workers, train_pipelines, args.compile)
        pipeline_rows.append(row)
        print(f"{pipeline.name}: DataLoader path {row.dataloader_images_per_s:,.0f} images/s, tensor path "
              f"{row.tensor_images_per_s:,.0f} images/s", flush=True)

    report = "\n".join([
        f"# Training and input-pipeline benchmark on {device_name(device)}", "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}; torch {torch.__version__}; device {device}"
        + (f"; CPU flags: {cpu_flags()}" if device.type == "cpu" else ""),
        f"- data: {data.source} ({len(data.train_labels):,} training images)", "",
        *paths_section,
        "## Input pipelines", "",
        f"- model: {args.model}{' (torch.compile)' if args.compile else ''}; batch {batch_size}; "
        f"precision {describe_precision(device)}; channels_last {channels_last_default(device)}",
        f"- timing: median of {args.repeats} chunks of {steps} training / {data_steps} data-only steps after "
        f"{warmup} warm-up steps ({'CUDA events' if cuda else 'time.perf_counter'}); DataLoader workers "
        f"{default_num_workers(device) if args.workers is None else args.workers}",
        "- augmentation on every path: random crop (4 px zero padding), horizontal flip, normalization", "",
        markdown_table(rows), "",
        "## The notebooks' stronger augmentations", "",
        f"- data-only: whole epochs of {len(pipeline_data.train_labels):,} images, median of {args.repeats} after one "
        f"warm-up epoch; DataLoader path: "
        f"{default_num_workers(device) if args.workers is None else args.workers} workers (albumentations; "
        "torchvision v2 for RandAugment), tensor path: TensorLoader on this device",
        "- training: " + ("each notebook's model and batch size on the tensor path, one epoch per timed chunk; the "
                          "last column is the epoch time with the notebook's augmentation over that with crop and flip "
                          "only" if train_pipelines else "not measured here (on CUDA by default; --train-pipelines)"),
        "", pipelines_table(pipeline_rows), "",
        airbench_section(load_cifar10(args.data_root, download=False, synthetic_if_missing=True), device,
                         args.airbench_seeds) if not args.no_airbench else "airbench94: skipped (--no-airbench).",
        ""])
    return write_report(report, args.out, device)


def compile_models_report(data: Cifar10, device: torch.device, args: argparse.Namespace, steps: int,
                          warmup: int) -> str:
    """`--compile-models`: the eager-against-compiled table alone, as a report."""
    rows = []
    for path in (p for p in MODEL_PATHS if p.model in args.path_models):
        rows.append(measure_compile(path, data.train_images, data.train_labels, device, steps, args.repeats, warmup))
        print(f"{path.model}: training {rows[-1].eager:,.0f} images/s eager, {rows[-1].compiled:,.0f} compiled "
              f"({rows[-1].compiled_seconds:.0f} s with compilation)", flush=True)
    return "\n".join([
        f"# torch.compile against eager training on {device_name(device)}", "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}; torch {torch.__version__}; device {device}",
        f"- data: {data.source} ({len(data.train_labels):,} training images)",
        f"- each notebook's model at its batch size, the tensor path with crop and flip, precision "
        f"{describe_precision(device)}; median of {args.repeats} chunks of {steps} steps after {warmup} warm-up "
        "steps (compilation happens in the compiled run's warm-up)", "",
        compile_table(rows), ""])


def write_report(report: str, out: str | os.PathLike | None, device: torch.device) -> str:
    """Print the report and write it as markdown (default: results/bench_<device type>.md); returns it."""
    print("\n" + report)
    path = Path(out or PROJECT_ROOT / "results" / f"bench_{device.type}.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report)
    print(f"Written to {path}")
    return report


if __name__ == "__main__":
    main()
