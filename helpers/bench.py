"""Side-by-side throughput of three CIFAR-10 input pipelines feeding the same model: `python -m helpers.bench`.

Paths, all with the same augmentation (random crop with 4 pixels of zero padding, horizontal flip, normalization):
  (a) torchvision: a DataLoader over the uint8 arrays with RandomCrop, RandomHorizontalFlip, ToTensor, Normalize;
  (b) albumentations: `helpers.loaders.make_loader` with `helpers.transforms` (the notebooks' CPU path);
  (c) gpu: `helpers.gpu_loader.GpuLoader` (uint8 dataset on the device, batched tensor augmentation).
For each: training images/s (forward + backward + SGD step, the engine's mixed precision and channels_last) and
data-only images/s (the loader alone, batches moved to the device), each the median of `--repeats` timed chunks
of `--steps` steps after warm-up (CUDA events on a GPU, time.perf_counter elsewhere). Ratios are to path (a).

Then the notebooks' stronger augmentations (02: crop, flip, scale/rotate, cutout; 03: crop, flip, quarter turns,
rotation, cutout; 05: crop, flip, RandAugment, cutout), each on its CPU path (DataLoader, albumentations or
torchvision v2) and its GPU path (`GpuLoader`): data-only images/s over whole epochs of `--pipeline-images`
images. On CUDA also the training images/s of the notebook's model and batch size with the GPU path, against the
same with crop and flip only: the epoch-time cost of the augmentation.

On CUDA it also trains airbench94 (Keller Jordan's 94 % CIFAR-10 speedrun) on the same local data and prints
its time and accuracy next to notebook 04's 24-epoch result (results/04_*.json). airbench is not a dependency
of this project; on a GPU machine:

    pip install airbench==0.1.8      # offline: pip download --no-deps airbench==0.1.8 elsewhere, carry the
                                     # airbench-0.1.8.tar.gz and pip install --no-deps --no-build-isolation it
    python -m helpers.bench --out results/bench_cuda.md            # add --compile to compile the model

airbench reads `cifar10/train.pt` and `cifar10/test.pt` relative to the working directory (dicts of uint8 HWC
images, int64 labels, class names, as torch.save'd by its CifarLoader); `write_airbench_data` writes them from
`load_cifar10()` under data/airbench/, so nothing is downloaded.

On a CPU keep the sizes small, e.g. `python -m helpers.bench --images 2048 --out results/bench_cpu.md`.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torchvision.transforms as TV
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import models
from .data import CIFAR10_MEAN, CIFAR10_STD, PROJECT_ROOT, Cifar10, load_cifar10
from .devices import (autocast, autocast_dtype, describe_precision, device_name, select_device, synchronize,
                      to_device)
from .engine import describe_final_model
from .augmentation import Augmentation
from .gpu_loader import GpuLoader
from .loaders import default_num_workers, make_loader

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
    NotebookPipeline("05 crop, flip, RandAugment, cutout",
                     Augmentation(crop_padding=4, flip=True, randaugment_ops=3, randaugment_magnitude=12,
                                  cutout_size=16, cutout_p=1.0), "resnet_kaggle", 128),
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
                  num_workers: int | None = None) -> dict[str, DataLoader | GpuLoader]:
    """The three training loaders, keyed by the name printed in the table."""
    return {
        "(a) torchvision DataLoader": torchvision_loader(images, labels, batch_size, device, num_workers),
        "(b) albumentations DataLoader": make_loader(images, labels, AUGMENT.cpu_transform(), batch_size,
                                                     train=True, device=device, num_workers=num_workers),
        "(c) GpuLoader": GpuLoader(images, labels, batch_size, train=True, device=device, augment=AUGMENT),
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
        to_device(*next(batches), device, channels_last=device.type == "cuda")

    return steps * batch_size / median_seconds(step, steps, repeats, warmup, device)


def train_throughput(make_model: Callable[[], nn.Module], loader, batch_size: int, device: torch.device,
                     steps: int, repeats: int, warmup: int, compile: bool = False) -> float:
    """Images/s of SGD training steps fed by `loader`, with the engine's mixed precision and memory format."""
    channels_last = device.type == "cuda"
    torch.manual_seed(0)
    model = make_model().to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    forward = torch.compile(model) if compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    amp_dtype = autocast_dtype(device)
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


def epoch_throughput(loader, device: torch.device, repeats: int) -> float:
    """Images/s of whole epochs of `loader` (batches moved to the device), the median of `repeats` after one."""
    images = len(loader) * loader.batch_size

    def epoch() -> None:
        for batch in loader:
            to_device(*batch, device, channels_last=device.type == "cuda")

    return images / median_seconds(epoch, 1, repeats, 1, device)


@dataclass
class PipelineMeasurement:
    pipeline: NotebookPipeline
    cpu_images_per_s: float
    gpu_images_per_s: float
    train_images_per_s: float | None = None            # GPU path, the notebook's augmentation ...
    crop_flip_train_images_per_s: float | None = None  # ... and crop + flip only


def measure_pipeline(pipeline: NotebookPipeline, images: np.ndarray, labels: np.ndarray, device: torch.device,
                     repeats: int, num_workers: int | None, train: bool, compile: bool) -> PipelineMeasurement:
    """One notebook's augmentation: data-only images/s on both paths; with `train`, the training images/s of its
    model on the GPU path with it and with crop + flip only (one epoch of `images` per timed chunk)."""
    batch = pipeline.batch_size
    cpu = make_loader(images, labels, pipeline.augment.cpu_transform(), batch, train=True, device=device,
                      num_workers=num_workers)
    gpu = GpuLoader(images, labels, batch, train=True, device=device, augment=pipeline.augment)
    result = PipelineMeasurement(pipeline, epoch_throughput(cpu, device, repeats),
                                 epoch_throughput(gpu, device, repeats))
    if train:
        crop_flip = GpuLoader(images, labels, batch, train=True, device=device,
                              augment=Augmentation(crop_padding=pipeline.augment.crop_padding, flip=True))
        result.train_images_per_s, result.crop_flip_train_images_per_s = (
            train_throughput(models.FACTORIES[pipeline.model], loader, batch, device, len(loader), repeats,
                             len(loader), compile) for loader in (gpu, crop_flip))
    return result


def pipelines_table(rows: Sequence[PipelineMeasurement]) -> str:
    """Per notebook: data-only images/s of both paths and their ratio; training images/s where measured."""
    lines = ["| notebook augmentation | CPU path images/s | GPU path images/s | GPU / CPU | model, batch | "
             "training images/s (GPU path) | same, crop + flip only | epoch time × crop + flip |",
             "|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        trained = r.train_images_per_s is not None
        lines.append(
            f"| {r.pipeline.name} | {r.cpu_images_per_s:,.0f} | {r.gpu_images_per_s:,.0f} | "
            f"{r.gpu_images_per_s / r.cpu_images_per_s:.1f} | {r.pipeline.model}, {r.pipeline.batch_size} | "
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


def run_airbench94(data: Cifar10, workdir: str | os.PathLike) -> dict:
    """Warm up, then train airbench94 once on `data` (written under `workdir/cifar10`): seconds and TTA accuracy."""
    import airbench  # only on a GPU machine; see the module docstring
    from airbench.lib_airbench94 import hyp

    workdir = Path(workdir)
    write_airbench_data(data, workdir / "cifar10")
    previous = os.getcwd()
    os.chdir(workdir)  # airbench opens 'cifar10/train.pt' and 'cifar10/test.pt' relative to the working directory
    try:
        airbench.warmup94()
        train_loader = airbench.CifarLoader("cifar10", train=True, batch_size=hyp["opt"]["batch_size"],
                                            aug=hyp["aug"], altflip=True)
        test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
        torch.cuda.synchronize()
        began = time.perf_counter()
        model = airbench.train94(train_loader, verbose=False)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - began
        accuracy = airbench.evaluate(model, test_loader, tta_level=hyp["net"]["tta_level"])
    finally:
        os.chdir(previous)
    return {"seconds": seconds, "test_acc": accuracy, "epochs": hyp["opt"]["train_epochs"]}


def notebook04_result(results_dir: Path = PROJECT_ROOT / "results") -> str:
    """Notebook 04's recorded run (results/04_*.json), as one line."""
    paths = sorted(glob.glob(str(results_dir / "04_*.json")))
    if not paths:
        return "notebook 04: no results/04_*.json yet (run notebook 04 on this GPU to fill this in)"
    record = json.loads(Path(paths[0]).read_text())
    return (f"notebook 04 ({Path(paths[0]).name}): {record.get('epochs')} epochs, "
            f"{describe_final_model(record['final_model'])}; {record.get('wall_seconds')} s of training on "
            f"{record.get('device')}")


def airbench_section(data: Cifar10, device: torch.device) -> str:
    """airbench94's time and accuracy next to notebook 04's, or why it was skipped."""
    if device.type != "cuda":
        return f"airbench94: skipped (it needs a CUDA GPU; this run is on {device_name(device)})."
    try:
        result = run_airbench94(data, PROJECT_ROOT / "data" / "airbench")
    except ImportError:
        return "airbench94: skipped (package not installed: pip install airbench==0.1.8, see helpers/bench.py)."
    return (f"airbench94: {result['epochs']} epochs in {result['seconds']:.1f} s (train94 call incl. its setup), "
            f"test accuracy {result['test_acc']:.2%} (with its TTA)\n\n{notebook04_result()}")


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
    parser.add_argument("--pipeline-images", type=int, default=None,
                        help="images per epoch of the notebook pipelines (default: 10,000 on CUDA, 1,024 elsewhere)")
    parser.add_argument("--train-pipelines", action=argparse.BooleanOptionalAction, default=None,
                        help="also time training with each pipeline (default: on CUDA only)")
    parser.add_argument("--no-airbench", action="store_true", help="skip airbench94 on CUDA")
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
    loaders = build_loaders(data.train_images, data.train_labels, batch_size, device, args.workers)

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
        print(f"{pipeline.name}: CPU path {row.cpu_images_per_s:,.0f} images/s, GPU path "
              f"{row.gpu_images_per_s:,.0f} images/s", flush=True)

    report = "\n".join([
        f"# Input-pipeline benchmark on {device_name(device)}", "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}; torch {torch.__version__}; device {device}",
        f"- data: {data.source} ({len(data.train_labels):,} training images)",
        f"- model: {args.model}{' (torch.compile)' if args.compile else ''}; batch {batch_size}; "
        f"precision {describe_precision(device)}; channels_last {cuda}",
        f"- timing: median of {args.repeats} chunks of {steps} training / {data_steps} data-only steps after "
        f"{warmup} warm-up steps ({'CUDA events' if cuda else 'time.perf_counter'}); DataLoader workers "
        f"{default_num_workers(device) if args.workers is None else args.workers}",
        "- augmentation on every path: random crop (4 px zero padding), horizontal flip, normalization", "",
        markdown_table(rows), "",
        "## The notebooks' stronger augmentations", "",
        f"- data-only: whole epochs of {len(pipeline_data.train_labels):,} images, median of {args.repeats} after one "
        f"warm-up epoch; CPU path: DataLoader with "
        f"{default_num_workers(device) if args.workers is None else args.workers} workers (albumentations; "
        "torchvision v2 for RandAugment), GPU path: GpuLoader on this device",
        "- training: " + ("each notebook's model and batch size on the GPU path, one epoch per timed chunk; the last "
                          "column is the epoch time with the notebook's augmentation over that with crop and flip "
                          "only" if train_pipelines else "not measured here (on CUDA by default; --train-pipelines)"),
        "", pipelines_table(pipeline_rows), "",
        airbench_section(data, device) if not args.no_airbench else "airbench94: skipped (--no-airbench).", ""])
    print("\n" + report)
    out = Path(args.out or PROJECT_ROOT / "results" / f"bench_{device.type}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"Written to {out}")
    return report


if __name__ == "__main__":
    main()
