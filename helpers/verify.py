"""Verify the released models: re-measure each on the CIFAR-10 test set and compare with what its run recorded.

    python -m helpers.verify [NAME ...] [--quick] [--device cpu] [--data-root DIR]     (or: make verify)

For every released model (`weights/<notebook>.safetensors`; default: all five notebooks) it checks the file against
its run record (sha256, architecture: `helpers.release.check_release`), evaluates it in fp32 on the test set, raw
and with flip TTA, and prints measured against recorded accuracy. The recorded figures are those the run measured
on the same half-precision weights, in fp32, on its own device; a difference above `TOLERANCE` (0.2 percentage
points) fails. `--quick` measures the first 1,000 test images only, against the raw figure the run recorded on
them. Data other than the run's (the original CIFAR-10 for a run on the JPEG copy, say) is measured but not
compared. Exit status: 0 when every released model agrees, 1 when one differs or fails its checks, 2 without data.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import numpy as np
import torch

from .data import DataError, load_cifar10
from .devices import device_name, select_device
from .goals import ASSIGNMENTS
from .release import SUBSET_IMAGES, TOLERANCE, NoRelease, ReleaseError, check_release, load_weights, measure
from .results import percent

COLUMNS = ("notebook", "model", "file", "recorded raw / TTA", "measured raw / TTA", "difference", "verdict", "time")


def verify_one(name: str, images: np.ndarray, labels: np.ndarray, device: torch.device, quick: bool = False,
               tolerance: float = TOLERANCE) -> tuple[list[str], bool]:
    """The table row of notebook `name`'s released model, and whether it passed (no release yet passes)."""
    row = [name, ASSIGNMENTS[name].model]
    began = time.perf_counter()
    try:
        path, record = check_release(name)
        model, _ = load_weights(path, ASSIGNMENTS[name].model, device)
    except NoRelease:
        return row + ["—", "—", "—", "—", "no released model yet", "—"], True
    except ReleaseError as err:
        return row + ["—", "—", "—", "—", f"FAILED: {err}", "—"], False
    release = record["release"]
    size = f"{path.name} ({release['bytes'] / 1e6:.1f} MB)"
    if quick:
        n = release["subset_images"]
        measured = measure(model, images[:n], labels[:n], device, subset=n)
        recorded = [release["subset_correct"] / n, None]
        same_data = measured["test_set"] == release["subset_set"]
        found = [measured["test_acc"], None]
    else:
        measured = measure(model, images, labels, device)
        recorded = [release["test_acc"], release["test_acc_tta"]]
        same_data = measured["test_set"] == release["test_set"]
        found = [measured["test_acc"], measured["test_acc_tta"]]
    seconds = f"{time.perf_counter() - began:.0f} s"
    shown = [f"{percent(recorded[0])} / {percent(recorded[1])}", f"{percent(found[0])} / {percent(found[1])}"]
    if not same_data:
        return row + [size, *shown, "—", f"not compared: recorded on other data ({record['data']})", seconds], True
    gaps = [abs(f - r) for f, r in zip(found, recorded) if r is not None]
    worst = max(gaps)
    passed = worst <= tolerance
    verdict = "ok" if passed else f"DIFFERS by more than {percent(tolerance, 1)}"
    return row + [size, *shown, f"{worst * 100:.2f} pp", verdict, seconds], passed


def table_line(cells: Sequence[str]) -> str:
    """One line of the markdown table (readable as plain text too)."""
    return "| " + " | ".join(cells) + " |"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"notebooks (default: all): {', '.join(ASSIGNMENTS)}")
    parser.add_argument("--quick", action="store_true",
                        help=f"only the first {SUBSET_IMAGES:,} test images, raw (seconds per model on a CPU)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--data-root", default=None, help="folder holding cifar-10-batches-py (default: "
                                                          "$CIFAR10_ROOT, else data/)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest accepted difference in "
                                                                            "accuracy (default: %(default)s)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in ASSIGNMENTS]
    if unknown:
        parser.error(f"unknown notebook {', '.join(unknown)}; known: {', '.join(ASSIGNMENTS)}")
    try:
        data = load_cifar10(args.data_root, download=False)
    except DataError:
        print("error: no CIFAR-10 test set found: `make data` puts it in data/cifar-10-batches-py (or pass "
              "--data-root DIR / set CIFAR10_ROOT to the folder that holds cifar-10-batches-py)", file=sys.stderr)
        return 2
    device = select_device(args.device)
    print(f"Verifying released weights on {device} ({device_name(device)}), {data.source}: "
          f"{'the first ' + format(SUBSET_IMAGES, ',') if args.quick else 'all ' + format(len(data.test_labels), ',')}"
          f" test images, fp32, tolerance {percent(args.tolerance, 1)}", flush=True)
    print(table_line(COLUMNS) + "\n" + "|" + "---|" * len(COLUMNS), flush=True)
    began, passed = time.perf_counter(), True
    for name in args.names or list(ASSIGNMENTS):  # a row as soon as it is measured: a model takes up to 2 min
        row, ok = verify_one(name, data.test_images, data.test_labels, device, args.quick, args.tolerance)
        print(table_line(row), flush=True)
        passed &= ok
    print(f"{'All released models agree with their records' if passed else 'MISMATCH: see the verdicts above'} "
          f"({time.perf_counter() - began:.0f} s)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
