"""Right on the GPUs users have, checked on the CPU: the precision each GPU gets, resuming a checkpoint in another
precision or on another device, damaged checkpoints, asynchronous copies, and waiting for the device."""
from __future__ import annotations

import pickle
import types

import numpy as np
import pytest
import torch
from torch import nn

import helpers as h
from helpers import devices, engine, kaggle, launch, lr_finder

GPUS = {  # name, compute capability, what it must train in
    "Tesla T4": ((7, 5), torch.float16, "fp16 + GradScaler (Tesla T4, sm_75)"),
    "Tesla V100-SXM2-16GB": ((7, 0), torch.float16, "fp16 + GradScaler (Tesla V100-SXM2-16GB, sm_70)"),
    "NVIDIA A100-SXM4-40GB": ((8, 0), torch.bfloat16, "bf16 (NVIDIA A100-SXM4-40GB, sm_80)"),
    "NVIDIA GeForce RTX 4090": ((8, 9), torch.bfloat16, "bf16 (NVIDIA GeForce RTX 4090, sm_89)"),
    "NVIDIA H100 80GB HBM3": ((9, 0), torch.bfloat16, "bf16 (NVIDIA H100 80GB HBM3, sm_90)"),
    "Tesla P100-PCIE-16GB": ((6, 0), None, "fp32 (Tesla P100-PCIE-16GB, sm_60: no tensor cores)"),
}


def fake_gpu(monkeypatch, name: str) -> None:
    """torch.cuda answers as on a machine with GPU `name`; is_bf16_supported says True, as it does on a T4 since
    torch 2.3 (it counts emulated bf16)."""
    capability = GPUS[name][0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)


@pytest.mark.parametrize("name", GPUS)
def test_precision_follows_the_compute_capability(monkeypatch, name):
    fake_gpu(monkeypatch, name)
    _, dtype, described = GPUS[name]
    cuda = torch.device("cuda")
    assert h.autocast_dtype(cuda) == dtype
    assert h.describe_precision(cuda) == described
    assert h.autocast_dtype(cuda, enabled=False) is None


def test_notebook_header_says_device_and_precision(monkeypatch, capsys):
    fake_gpu(monkeypatch, "Tesla T4")
    data = h.synthetic_cifar10(n_train=20, n_test=10)
    text = h.describe_run(data, "cuda")
    assert "Device: cuda - Tesla T4" in text
    assert "Precision: fp16 + GradScaler (Tesla T4, sm_75)" in text
    assert text in capsys.readouterr().out


# --- Resume across precisions and devices ------------------------------------------------------------------------

class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3, stride=4), nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.head(self.conv(x).relu().flatten(1))


@pytest.fixture(scope="module")
def train_loader():
    data = h.synthetic_cifar10(n_train=64, n_test=10)
    return h.make_loader(data.train_images, data.train_labels, h.transforms.build_transform(), 32, train=True)


def train(loader, epochs, checkpoint, precision: torch.dtype | None, monkeypatch, stop_after=None) -> h.History:
    """`fit` on the CPU as if `autocast_dtype` had chosen `precision` (CPU autocast runs fp16 and bf16 too)."""
    monkeypatch.setattr(engine, "autocast_dtype", lambda device, enabled=True: precision)
    torch.manual_seed(0)
    model = TinyNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def stop(epoch, history):
        if epoch == stop_after:
            raise KeyboardInterrupt

    try:
        return h.fit(model, loader, optimizer, epochs, checkpoint_path=checkpoint, progress=False, device="cpu",
                     on_epoch_end=stop)
    except KeyboardInterrupt:
        return None


@pytest.mark.parametrize("before, after", [(None, torch.float16), (torch.bfloat16, torch.float16),
                                           (torch.float16, None), (torch.float16, torch.bfloat16)],
                         ids=["fp32-to-fp16", "bf16-to-fp16", "fp16-to-fp32", "fp16-to-bf16"])
def test_a_checkpoint_resumes_in_another_precision(train_loader, tmp_path, monkeypatch, capsys, before, after):
    checkpoint = tmp_path / "run.pt"
    train(train_loader, 3, checkpoint, before, monkeypatch, stop_after=1)
    assert h.load_checkpoint(checkpoint)["precision"] == h.devices.precision_name(before)
    history = train(train_loader, 3, checkpoint, after, monkeypatch)
    assert history["epoch"] == [1, 2, 3] and all(r["train_loss"] < 10 for r in history.records)
    lines = [line for line in capsys.readouterr().out.splitlines() if "checkpoint was written in" in line]
    fresh = "; the GradScaler starts from a fresh loss scale" if after == torch.float16 else ""
    assert lines == [f"The checkpoint was written in {h.devices.precision_name(before)} on cpu; training goes on "
                     f"in {h.devices.precision_name(after)} on cpu{fresh}."]
    if after == torch.float16:
        assert h.load_checkpoint(checkpoint)["scaler"]["scale"] > 0


def test_an_fp16_checkpoint_keeps_its_loss_scale_and_says_nothing(train_loader, tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "run.pt"
    train(train_loader, 2, checkpoint, torch.float16, monkeypatch, stop_after=1)
    saved = h.load_checkpoint(checkpoint)["scaler"]
    loaded = {}
    monkeypatch.setattr(torch.amp.GradScaler, "load_state_dict", lambda self, state: loaded.update(state))
    train(train_loader, 2, checkpoint, torch.float16, monkeypatch)
    assert loaded == saved
    assert "checkpoint was written in" not in capsys.readouterr().out


def test_a_checkpoint_from_another_device_says_so(train_loader, tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "run.pt"
    train(train_loader, 2, checkpoint, None, monkeypatch, stop_after=1)
    state = h.load_checkpoint(checkpoint)
    h.save_checkpoint(checkpoint, {**state, "device": "cuda", "precision": "bf16"})
    train(train_loader, 2, checkpoint, None, monkeypatch)
    assert "The checkpoint was written in bf16 on cuda; training goes on in fp32 on cpu." in capsys.readouterr().out


def test_a_checkpoint_of_another_model_is_named(train_loader, tmp_path, monkeypatch):
    checkpoint = tmp_path / "run.pt"
    h.save_checkpoint(checkpoint, {"epoch": 1, "epochs": 2, "model": nn.Linear(2, 2).state_dict()})
    with pytest.raises(h.CheckpointError, match=f"^{checkpoint} holds the weights of another model .*resume=False"):
        train(train_loader, 2, checkpoint, None, monkeypatch)


# --- Damaged checkpoints -----------------------------------------------------------------------------------------

class NotATensor:
    pass


def damaged(tmp_path) -> dict[str, tuple]:
    """Files `fit` may meet where its checkpoint should be, and what the error must say about each."""
    good = tmp_path / "good.pt"
    torch.save({"epoch": 1, "weights": torch.zeros(1000)}, good)
    whole = good.read_bytes()
    files = {"truncated": whole[: len(whole) // 2], "garbage": b"not a checkpoint at all\n" * 20, "empty": b""}
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / f"{name}.pt"
        paths[name].write_bytes(content)
    paths["unsafe"] = tmp_path / "unsafe.pt"
    torch.save({"object": NotATensor()}, paths["unsafe"])
    paths["folder"] = tmp_path / "folder.pt"
    paths["folder"].mkdir()
    return {"truncated": (paths["truncated"], "is truncated or damaged"),
            "garbage": (paths["garbage"], "was not written by torch.save"),
            "empty": (paths["empty"], "is empty"),
            "unsafe": (paths["unsafe"], "holds Python objects other than tensors and plain data"),
            "folder": (paths["folder"], "is a folder")}


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "unsafe", "folder"])
def test_a_damaged_checkpoint_gives_one_line_with_the_way_out(tmp_path, kind):
    path, problem = damaged(tmp_path)[kind]
    with pytest.raises(h.CheckpointError) as raised:
        h.load_checkpoint(path)
    message = str(raised.value)
    assert message.startswith(f"{path} {problem}") and message.endswith(
        ": delete it to start over, or pass resume=False")
    assert "\n" not in message and "weights_only" not in message and "miniz" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_fit_stops_on_a_damaged_checkpoint_with_that_line(train_loader, tmp_path, monkeypatch):
    path, problem = damaged(tmp_path)["truncated"]
    with pytest.raises(h.CheckpointError, match=problem):
        train(train_loader, 2, path, None, monkeypatch)


@pytest.mark.parametrize("kind", ["truncated", "garbage", "unsafe"])
def test_the_kaggle_tool_names_a_damaged_model_file(tmp_path, capsys, kind):
    path, problem = damaged(tmp_path)[kind]
    images = tmp_path / "images.pkl"
    images.write_bytes(pickle.dumps({b"data": np.zeros((2, 32, 32, 3), np.uint8), b"ids": [0, 1]}))
    assert kaggle.main([str(path), str(images), "-o", str(tmp_path / "s.csv")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {path} {problem}") and "export_model" in error
    assert "\n" not in error and "weights_only" not in error


# --- Copies and waiting ------------------------------------------------------------------------------------------

class Batch:
    """Stands for a CPU tensor, pinned or not: records how it was copied."""

    def __init__(self, pinned: bool):
        self.device, self.pinned, self.copies = torch.device("cpu"), pinned, []

    def is_pinned(self) -> bool:
        return self.pinned

    def to(self, device, non_blocking=False):
        self.copies.append((torch.device(device).type, non_blocking))
        return self

    def contiguous(self, memory_format=torch.contiguous_format):
        return self


@pytest.mark.parametrize("device, pinned, asynchronous", [("cuda", True, True), ("cuda", False, False),
                                                          ("mps", True, False), ("mps", False, False),
                                                          ("cpu", False, False)])
def test_copies_are_asynchronous_only_to_cuda_from_pinned_memory(device, pinned, asynchronous):
    x, y = Batch(pinned), Batch(pinned)
    h.devices.to_device(x, y, torch.device(device))
    assert x.copies == y.copies == [(device, asynchronous)]


def test_the_range_test_copies_synchronously_off_cuda(monkeypatch):
    seen = {}

    def range_test(self, train_iter, **kwargs):
        seen.update(kwargs)
        self.history = {"lr": [1e-3, 1e-2], "loss": [2.0, 1.0]}

    monkeypatch.setattr(lr_finder.LRFinder, "range_test", range_test)
    model = nn.Linear(3, 2)
    lr_finder.find_lr(model, torch.optim.SGD(model.parameters(), lr=0.1), [], device="cpu")
    assert seen["non_blocking_transfer"] is False


def test_synchronize_waits_on_every_accelerator(monkeypatch):
    waited = []
    monkeypatch.setattr(torch, "mps", types.SimpleNamespace(synchronize=lambda: waited.append("mps")), raising=False)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append("cuda"))
    for device in ("cpu", "mps", "cuda"):
        devices.synchronize(torch.device(device))
    assert waited == ["mps", "cuda"]


def test_launch_times_steps_in_the_training_precision_and_waits_for_the_device(monkeypatch):
    waited, asked = [], []
    monkeypatch.setattr(launch, "synchronize", lambda device: waited.append(device.type))
    monkeypatch.setattr(launch, "autocast_dtype", lambda device: asked.append(device.type))
    timing = launch.time_model(TinyNet(), torch.device("cpu"), batch_size=4, steps=2)
    assert timing.train > 0 and timing.eval > 0
    assert asked == ["cpu"] and len(waited) >= 3  # before and after the timed training steps, after evaluation
