"""Released weights: every full run publishes its final model, and anyone can load and verify it.

A full run (never a smoke or quick one) ends with `release_model`, which writes the model the goal was judged on
to `weights/<notebook>.safetensors`: half precision, loadable without unpickling any code, with the factory that
builds the architecture and the run's commit, data, device and test accuracies as metadata. It measures the
released (half-precision) weights itself, in fp32 on the run's device, on the whole test set (raw and flip TTA)
and on its first `SUBSET_IMAGES` images; those figures and the file's sha256 go into the run record, and a file
is replaced only by a run whose raw model beats it.

    model = h.load_pretrained("04_resnet9_onecycle", device)   # eval mode; sha256 checked against the record

`load_pretrained` stops with one line (`ReleaseError`) for a missing, truncated or altered file, or one that holds
another architecture. `python -m helpers.verify` re-measures every released model (`helpers.verify`).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from . import models
from .context import storage_dir
from .data import CIFAR10_CLASSES, FULL_TEST, FULL_TRAIN, PROJECT_ROOT, Cifar10
from .devices import device_name, select_device
from .engine import History, softmax_views
from .goals import ASSIGNMENTS
from .loaders import make_eval_loader
from .records import git_commit, sha256_of

FORMAT = "cifar10-notebooks/released-model/1"
SUFFIX = ".safetensors"
SUBSET_IMAGES = 1000  # the fixed subset (the test set's first images) CI re-measures on a CPU in seconds
TOLERANCE = 0.002  # 0.2 percentage points: another device's fp32 arithmetic on the same half-precision weights


class ReleaseError(RuntimeError):
    """A released model cannot be used or written; the message (one line) names the file, the fault and the fix."""

    def _render_traceback_(self) -> list[str]:  # Jupyter shows this one line instead of a traceback
        return [f"{type(self).__name__}: {self}"]


class NoRelease(ReleaseError):
    """The notebook has no released model yet: neither its file nor a record that released one."""


def weights_dir() -> Path:
    """Where released weights live: $WEIGHTS_DIR when set, else the project's `weights/`."""
    variable = os.environ.get("WEIGHTS_DIR")
    return Path(variable).expanduser().resolve() if variable else PROJECT_ROOT / "weights"


def release_path(name: str, folder: str | os.PathLike | None = None) -> Path:
    """The released file of notebook `name`: `<folder>/<name>.safetensors` (folder: `weights_dir()`)."""
    return Path(folder if folder is not None else weights_dir()) / f"{name}{SUFFIX}"


def _display(path: Path) -> str:
    """`path` relative to the project when it is inside it (how the README and records name files)."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def test_set_fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """A short sha256 of the test images and labels: tells the original CIFAR-10 from a re-encoded copy."""
    digest = hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(np.asarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


# --- the file: safetensors with metadata -------------------------------------------------------------------------

def save_weights(path: str | os.PathLike, model: nn.Module, model_name: str, metadata: dict | None = None,
                 half: bool = True, model_kwargs: dict | None = None) -> Path:
    """Write `model`'s state_dict as safetensors (floating tensors in fp16 when `half`), atomically.

    The metadata says which factory of `helpers.models` builds the architecture (`model_name`, called with
    `model_kwargs`) and holds `metadata` (JSON-encoded values).
    """
    from safetensors.torch import save_file

    if model_name not in models.FACTORIES:
        raise ReleaseError(f"unknown model '{model_name}'; known: {', '.join(sorted(models.FACTORIES))}")
    dtype = torch.float16 if half else None
    state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else None).contiguous()
             for k, v in model.state_dict().items()}
    header = {"format": FORMAT, "model": model_name, "model_kwargs": json.dumps(model_kwargs or {}),
              "num_classes": str(len(CIFAR10_CLASSES)), "dtype": "float16" if half else "float32",
              **{k: json.dumps(v) for k, v in (metadata or {}).items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=header)
    os.replace(tmp, path)
    return path


def is_safetensors(path: str | os.PathLike) -> bool:
    """True when the file starts like a safetensors file (an 8-byte header length, then a JSON object)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a weights file written by `save_weights` (JSON values decoded); `ReleaseError` when the file
    is missing, unreadable or not such a file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ReleaseError(f"{_display(path)} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as err:  # safetensors raises its own SafetensorError, and OSError
        raise ReleaseError(f"{_display(path)} is not a readable safetensors file (truncated or damaged: "
                           f"{str(err).splitlines()[0]}): restore it or write it again") from None
    if raw.get("format") != FORMAT:
        raise ReleaseError(f"{_display(path)} was not written by helpers.release (format "
                           f"{raw.get('format')!r}, expected {FORMAT!r})")
    decoded = {}
    for key, value in raw.items():
        try:
            decoded[key] = json.loads(value)
        except json.JSONDecodeError:
            decoded[key] = value  # the plain strings: format, model, dtype
    return decoded


def load_weights(path: str | os.PathLike, expected_model: str | None = None,
                 device: torch.device | str | None = None) -> tuple[nn.Module, dict]:
    """The model in a file written by `save_weights`, in fp32 and eval mode on `device`, and the file's metadata.

    `expected_model`: the factory name the caller needs; a file holding another architecture stops with one line
    naming both.
    """
    from safetensors.torch import load_file

    path = Path(path)
    metadata = read_metadata(path)
    if expected_model is not None and metadata["model"] != expected_model:
        raise ReleaseError(f"{_display(path)} holds {metadata['model']} weights, not {expected_model}: use the file "
                           f"made for {expected_model}, or load this one as a {metadata['model']}")
    factory = models.FACTORIES.get(metadata["model"])
    if factory is None:
        raise ReleaseError(f"{_display(path)} holds a '{metadata['model']}', which helpers.models does not build "
                           f"(known: {', '.join(sorted(models.FACTORIES))})")
    try:
        state = load_file(str(path))
    except Exception as err:
        raise ReleaseError(f"{_display(path)} is truncated or damaged ({str(err).splitlines()[0]}): restore it "
                           "(git checkout -- weights/) or export it again") from None
    model = factory(num_classes=int(metadata.get("num_classes", 10)), **metadata.get("model_kwargs", {}))
    fp32 = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(fp32)
    except RuntimeError as err:
        raise ReleaseError(f"{_display(path)}: its tensors do not fit {metadata['model']} "
                           f"({str(err).splitlines()[0]})") from None
    return model.to(select_device(device)).eval(), metadata


# --- measuring: fp32, TF32 off, raw and flip TTA -------------------------------------------------------------------

@contextmanager
def exact_fp32() -> Iterator[None]:
    """fp32 arithmetic without TF32 on CUDA (cuDNN allows TF32 convolutions by default), so that a GPU's
    measurement of a released model and a CPU's differ only in summation order."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def measure(model: nn.Module, images: np.ndarray, labels: np.ndarray, device: torch.device | str | None = None,
            batch_size: int = 500, subset: int = SUBSET_IMAGES) -> dict:
    """Test accuracy of `model` in fp32 (raw and flip TTA) on `images`, and raw on the first `subset` of them.

    On a CPU `make_eval_loader` caps the batches at its `CPU_EVAL_BATCH` images (several times faster there).

    Returns `test_acc`, `test_acc_tta`, `test_images`, `subset_images`, `subset_correct`, and the fingerprints of
    the images measured (`test_set`) and of the subset (`subset_set`).
    """
    device = select_device(device)
    loader = make_eval_loader(images, labels, batch_size, device=device, backend="dataloader")
    model = model.to(device).eval()
    with exact_fp32():
        y_true, plain, mirror = softmax_views(model, loader, device, mirrored=True)
    raw, tta = plain.argmax(1), ((plain + mirror) / 2).argmax(1)
    n = min(subset, len(y_true))
    return {"test_acc": float((raw == y_true).mean()), "test_acc_tta": float((tta == y_true).mean()),
            "test_images": int(len(y_true)), "subset_images": int(n),
            "subset_correct": int((raw[:n] == y_true[:n]).sum()), "test_set": test_set_fingerprint(images, labels),
            "subset_set": test_set_fingerprint(images[:n], labels[:n])}


# --- releasing a full run ------------------------------------------------------------------------------------------

def release_model(name: str, model: nn.Module, data: Cifar10, device: torch.device | str, history: History, *,
                  record: str | os.PathLike, smoke: bool = False, folder: str | os.PathLike | None = None,
                  model_kwargs: dict | None = None) -> dict:
    """Release the final model of a full run of notebook `name` (see the module docstring) and add the entry to
    its run record `record` (`save_run_record`'s path) as "release": the file, its sha256 and size, and what the
    released weights measured, or why nothing was written. Prints one line either way; returns the entry.
    """
    record = Path(record)
    entry = _release(name, model, data, device, history, smoke, folder, model_kwargs, record.parent)
    content = json.loads(record.read_text())
    content["release"] = entry
    record.write_text(json.dumps(content, indent=1))
    return entry


def _release(name: str, model: nn.Module, data: Cifar10, device: torch.device | str, history: History,
             smoke: bool, folder: str | os.PathLike | None, model_kwargs: dict | None, records: Path) -> dict:
    assignment = ASSIGNMENTS[name]
    path = release_path(name, folder)
    why_not = _not_a_full_run(data, smoke)
    if not why_not and importlib.util.find_spec("safetensors") is None:  # the GPU machine's bundle may lack it
        why_not = "the safetensors package is missing (pip install safetensors)"
    if why_not:
        print(f"Weights not released: {why_not} (only a full run writes {_display(path)}).")
        return {"released": False, "why": why_not}
    device = select_device(device)
    twin = models.FACTORIES[assignment.model](**(model_kwargs or {}))
    twin.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                          for k, v in model.state_dict().items()})  # exactly what the fp16 file will hold
    measured = measure(twin, data.test_images, data.test_labels, device)
    raw = history.final_model.get("test_acc", history.final("test_acc"))
    try:
        held = read_metadata(path) if path.exists() else {}
    except ReleaseError:
        held = {}  # a damaged file is replaced
    if held.get("run_test_acc", -1.0) >= raw:
        why = (f"{_display(path)} (run of {held.get('finished', '?')[:10]}, {held['run_test_acc']:.2%}) is not "
               f"beaten by this run's {raw:.2%}: kept")
        print(f"Weights not released: {why}.")
        return {"released": False, "why": why, **measured}
    metadata = {"notebook": name, "run_test_acc": raw, "run_test_acc_tta": history.final_model.get("test_acc_tta"),
                "run_test_acc_ema": history.final_model.get("test_acc_ema"), "epochs": len(history),
                "data": data.source, "device": device_name(device), "torch": torch.__version__,
                "git_commit": git_commit(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "released_test_acc": measured}
    save_weights(path, twin, assignment.model, metadata, model_kwargs=model_kwargs)
    entry = {"released": True, "file": _display(path), "sha256": sha256_of(path), "bytes": path.stat().st_size,
             "model": assignment.model, "dtype": "float16", **measured}
    _drop_superseded_releases(name, records, entry["sha256"])
    print(f"Released {entry['file']} ({entry['bytes'] / 1e6:.1f} MB, fp16, sha256 {entry['sha256'][:12]}…): "
          f"{measured['test_acc']:.2%} raw, {measured['test_acc_tta']:.2%} flip TTA on "
          f"{measured['test_images']:,} test images in fp32.")
    return entry


def _drop_superseded_releases(name: str, records: Path, digest: str) -> None:
    """Delete the records in `records` that an earlier run of `name` left only to vouch for weights it released
    (`records.keep_released_record`) once a new file (sha256 `digest`) has replaced those weights."""
    for path in records.glob(f"{name}_*.json"):
        kept = json.loads(path.read_text())
        if kept.get("name") == name and kept.get("superseded_by") and kept["release"]["sha256"] != digest:
            path.unlink()


def _not_a_full_run(data: Cifar10, smoke: bool) -> str:
    """Why a run on `data` is no full run ('' when it is one)."""
    if smoke:
        return "a smoke run"
    seen = len(data.train_labels), len(data.test_labels)
    if seen != (FULL_TRAIN, FULL_TEST):
        return f"{seen[0]:,} training / {seen[1]:,} test images, not all of CIFAR-10"
    return ""


# --- loading a release -----------------------------------------------------------------------------------------------

def _record_folders(results: str | os.PathLike | None) -> list[Path]:
    """Where run records may be: `results` when given, else the notebooks' results folder (`storage_dir`: $RESULTS_DIR
    or Google Drive when mounted) and the project's `results/`."""
    if results is not None:
        return [Path(results)]
    return list(dict.fromkeys([storage_dir("results"), PROJECT_ROOT / "results"]))


def release_records(name: str, results: str | os.PathLike | None = None) -> list[dict]:
    """The run records of notebook `name` that released a file (see `_record_folders`), newest first."""
    found = []
    for path in sorted(p for folder in _record_folders(results) for p in folder.glob(f"{name}*.json")):
        record = json.loads(path.read_text())
        if record.get("name") == name and (record.get("release") or {}).get("released"):
            found.append({**record, "record_path": _display(path)})
    return sorted(found, key=lambda r: r.get("finished", ""), reverse=True)


def check_release(name: str, folder: str | os.PathLike | None = None,
                  results: str | os.PathLike | None = None) -> tuple[Path, dict]:
    """The released file of notebook `name` and the run record that released it, after checking the file's
    architecture, size and sha256 against the records; `ReleaseError` (one line: which file, what is wrong, what
    to do) otherwise, `NoRelease` when the notebook has none yet."""
    if name not in ASSIGNMENTS:
        raise ReleaseError(f"no notebook named '{name}'; known: {', '.join(ASSIGNMENTS)}")
    path = release_path(name, folder)
    records = release_records(name, results)
    restore = f"restore it (git checkout -- {_display(path)})"
    if not path.is_file():
        if not records:
            raise NoRelease(f"{_display(path)} does not exist: notebook {name} has no released model yet (a full "
                            "run on a GPU writes it)")
        raise ReleaseError(f"{_display(path)} is missing, though {records[0]['record_path']} released it: {restore}")
    expected = ASSIGNMENTS[name].model
    try:
        held = read_metadata(path).get("model")
    except ReleaseError:
        held = expected  # unreadable: the size and sha256 checks below say how
    if held != expected:
        raise ReleaseError(f"{_display(path)} holds {held} weights, not {expected} (notebook {name}'s model): "
                           f"restore the file made for {name} (git checkout -- {_display(path)})")
    if not records:
        raise ReleaseError(f"{_display(path)} has no run record (no results/{name}*.json released it), so its "
                           "sha256 cannot be checked: restore results/ (git checkout -- results/)")
    digest = sha256_of(path)
    vouching = [r for r in records if r["release"]["sha256"] == digest]
    if vouching:
        return path, vouching[0]
    newest, size = records[0], path.stat().st_size
    recorded = newest["release"]
    if size != recorded["bytes"]:
        fault = "truncated" if size < recorded["bytes"] else "altered"
        raise ReleaseError(f"{_display(path)} is {fault}: {size:,} bytes where {newest['record_path']} recorded "
                           f"{recorded['bytes']:,}; {restore}")
    raise ReleaseError(f"{_display(path)} is altered: sha256 {digest[:12]}…, {newest['record_path']} recorded "
                       f"{recorded['sha256'][:12]}…; {restore}")


def load_pretrained(name: str, device: torch.device | str | None = None, *, folder: str | os.PathLike | None = None,
                    results: str | os.PathLike | None = None) -> nn.Module:
    """The released model of notebook `name` (e.g. "04_resnet9_onecycle") in fp32 and eval mode on `device`,
    after `check_release`."""
    path, _ = check_release(name, folder, results)
    return load_weights(path, ASSIGNMENTS[name].model, device)[0]


@dataclass(frozen=True)
class Pretrained:
    """A released model as a notebook shows it: the model, the history of the run that made it, and its record."""

    model: nn.Module
    history: History
    record: dict
    path: Path

    @property
    def trained_on(self) -> str:
        """The device the released model was trained on."""
        return self.record["device"]

    def describe(self) -> str:
        """One line for the top of a notebook: these are released weights, not a new run."""
        r = self.record
        return (f"PRETRAINED: released weights {_display(self.path)} (run of {r['finished'][:10]} on {r['device']}, "
                f"commit {str(r.get('git_commit'))[:7]}); this notebook shows them and trains nothing.")


def pretrained_run(name: str, device: torch.device | str | None = None, *, folder: str | os.PathLike | None = None,
                   results: str | os.PathLike | None = None) -> Pretrained | None:
    """The released model of notebook `name` with its run's history, or None (saying so in one line) when the
    notebook has no released model yet. A file that fails its checks stops with `ReleaseError`."""
    try:
        path, record = check_release(name, folder, results)
    except NoRelease:
        print(f"PRETRAINED: no released model for {name} yet ({_display(release_path(name, folder))}); training "
              "as usual.")
        return None
    model = load_weights(path, ASSIGNMENTS[name].model, device)[0]
    history = History(records=record.get("history", []), final_model=record.get("final_model", {}),
                      sittings=record.get("sittings", []))
    pretrained = Pretrained(model, history, record, path)
    print(pretrained.describe())
    return pretrained
