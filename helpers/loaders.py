"""Dataset and DataLoader factory for uint8 image arrays, and the switch between the two input pipelines.

- "tensor": `TensorLoader`, the uint8 dataset held as one tensor on the training device and augmented in whole
  batches, every random choice of an epoch drawn up front (airbench's way). `"auto"` picks it on every device:
  on CUDA it keeps the GPU busy, and on a CPU it delivers about 10x the images/s of a DataLoader without
  taking cores from training (results/bench_cpu.md).
- "dataloader": a DataLoader applying albumentations per image (torchvision v2 for RandAugment), the pipeline
  the notebooks show and test the tensor one against.
"""
from __future__ import annotations

import os
from typing import Callable, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from .augmentation import NO_AUGMENTATION, Augmentation
from .tensor_loader import TensorLoader

Backend = Literal["auto", "tensor", "dataloader"]
BACKENDS = ("tensor", "dataloader")


class ArrayDataset(Dataset):
    """Images uint8 [N, 32, 32, 3] and labels [N]; `transform` (albumentations) maps an image to a tensor.

    `set_seed(seed)` reseeds the augmentation, here and in DataLoader worker processes, persistent ones too: the
    seed sits in shared memory, and each worker, on its first image after a change, reseeds its own streams
    (albumentations' generator and torch's, which torchvision's transforms draw from) from (seed, worker id).
    A DataLoader with the same sampler order and the same number of workers then draws the same augmentations.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, np.asarray(labels, dtype=np.int64), transform
        self._seed = torch.zeros((), dtype=torch.int64).share_memory_()  # set in this process, read by workers
        self._worker_seed: tuple[int, int] | None = None  # (seed, worker id) a worker last reseeded from

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        worker = torch.utils.data.get_worker_info()
        if worker is not None and self._worker_seed != (seed := int(self._seed), worker.id):
            self._seed_worker(seed, worker.id)
        image = self.images[index]
        if self.transform is None:
            return torch.from_numpy(image).permute(2, 0, 1).float().div(255), int(self.labels[index])
        return self.transform(image=image)["image"], int(self.labels[index])

    def set_seed(self, seed: int) -> None:
        """Seed the augmentation: the transform's generator here (albumentations keeps its own, not numpy's
        global one) and, from their next image on, every worker's streams."""
        self._seed.fill_(seed)
        self._reseed_transform(seed)

    def _seed_worker(self, seed: int, worker_id: int) -> None:
        worker_seed = (seed * 1_000_003 + worker_id + 1) % 2**63
        self._reseed_transform(worker_seed)
        torch.manual_seed(worker_seed)  # torchvision v2 transforms draw from torch's generator
        self._worker_seed = (seed, worker_id)

    def _reseed_transform(self, seed: int) -> None:
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed % 2**32)


def default_num_workers(device: torch.device | str) -> int:
    """Workers for a CPU-side pipeline: several on a GPU machine, none on a CPU-only run (it shares the cores)."""
    if torch.device(device).type != "cuda":
        return 0
    return min(8, os.cpu_count() or 1)


def make_loader(images: np.ndarray, labels: np.ndarray, transform: Callable | None, batch_size: int,
                train: bool, device: torch.device | str = "cpu", num_workers: int | None = None,
                seed: int = 0) -> DataLoader:
    """A DataLoader over the arrays: shuffled and dropping the last partial batch when `train`.

    Workers and pin_memory follow the device (CUDA: worker processes and pinned memory; CPU: in-process).
    Every random stream starts from `seed`: the shuffling and the augmentation (albumentations keeps a generator
    of its own, which nothing else seeds), so the batches drawn before `fit` (an augmentation preview, an LR range
    test) are the same in every run with the same seed.
    """
    device = torch.device(device)
    workers = default_num_workers(device) if num_workers is None else num_workers
    dataset = ArrayDataset(images, labels, transform)
    dataset.set_seed(seed)
    # The sampler has a generator of its own: it draws once per epoch, whereas the DataLoader's draws a worker
    # base seed only when its workers start, so sharing one would shift a resumed epoch's order.
    sampler = (RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)) if train
               else SequentialSampler(dataset))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                      drop_last=train and len(dataset) > batch_size, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(seed))


def resolve_backend(backend: Backend, device: torch.device | str = "cpu") -> Literal["tensor", "dataloader"]:
    """'auto' means the tensor pipeline, on every device; 'tensor' and 'dataloader' are kept as asked."""
    if backend == "auto":
        return "tensor"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto', 'tensor' or 'dataloader', not {backend!r}")
    return backend


def make_train_loader(images: np.ndarray, labels: np.ndarray, augment: Augmentation, batch_size: int,
                      device: torch.device | str = "cpu", backend: Backend = "auto", seed: int = 0,
                      num_workers: int | None = None) -> DataLoader | TensorLoader:
    """The one switch between pipelines: training batches with augmentation `augment` on either backend.

    backend "tensor" (and "auto"): `TensorLoader` (whole uint8 dataset on `device`, batched tensor augmentation);
    "dataloader": `make_loader` with `augment.cpu_transform()` (albumentations, or torchvision v2 for
    RandAugment), `num_workers` worker processes. Both yield normalized float batches [B, 3, 32, 32] and int64
    labels, reshuffled every epoch, the last partial batch dropped.
    """
    if resolve_backend(backend, device) == "tensor":
        return TensorLoader(images, labels, batch_size, train=True, device=device, augment=augment, seed=seed)
    return make_loader(images, labels, augment.cpu_transform(), batch_size, train=True, device=device,
                       num_workers=num_workers, seed=seed)


# Evaluation batch on a CPU, measured in fit's precision and format on 2 cores (results/bench_cpu*.md, by batch
# size): 100 is the fastest or within 8 % of it for every model on an AVX512-BF16 EPYC and Xeon, both in bf16, and
# 500 is up to 3.8x slower (LightNet on the EPYC).
CPU_EVAL_BATCH = 100


def make_eval_loader(images: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device | str = "cpu",
                     backend: Backend = "auto") -> DataLoader | TensorLoader:
    """Validation/test batches in dataset order, normalized, no augmentation, on the chosen backend.

    On a CPU the batches hold at most `CPU_EVAL_BATCH` images, whatever `batch_size` says: large batches run
    several times slower there, and in evaluation mode a batch's size changes no prediction.
    """
    if torch.device(device).type == "cpu":
        batch_size = min(batch_size, CPU_EVAL_BATCH)
    if resolve_backend(backend, device) == "tensor":
        return TensorLoader(images, labels, batch_size, train=False, device=device)
    return make_loader(images, labels, NO_AUGMENTATION.cpu_transform(), batch_size, train=False, device=device)
