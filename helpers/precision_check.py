"""Does a lower training precision change what the recipe learns? Notebook 04's recipe, short, in fp32 and in the
device's mixed precision, side by side with a change of seed: `python -m helpers.precision_check`.

    python -m helpers.precision_check --images 10000 --epochs 3 --runs fp32:0 auto:0 auto:1 \
        --out results/precision_cpu.md

Each run trains notebook 04's ResNet-9 the notebook's way (crop with reflection, flip, Cutout 8, batch 512, Nesterov
SGD with weight decay 5e-4, label smoothing 0.2, the linear one-cycle with the cycle bounds recorded by its range
tests, `results/lr_range_tests/04_resnet9_onecycle.json`) on a class-balanced subset of the real training set, and
measures the whole test set after every epoch. A run is `PRECISION:SEED`: "fp32", or "auto" for what
`autocast_dtype` picks on the device (bf16 on a CPU where `cpu_bf16_choice` says so). Two runs that differ only in
precision should differ by no more than two that differ only in seed; a larger gap is a defect to look for.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from . import models
from .augmentation import Augmentation
from .data import PROJECT_ROOT, load_cifar10
from .devices import autocast_dtype, describe_precision, device_name, precision_name, select_device
from .engine import fit
from .loaders import make_eval_loader, make_train_loader
from .schedules import linear_one_cycle

AUGMENT = Augmentation(crop_padding=4, reflect=True, flip=True, cutout_size=8, cutout_p=1.0)  # notebook 04's
RANGE_TESTS = PROJECT_ROOT / "results" / "lr_range_tests" / "04_resnet9_onecycle.json"
BATCH_SIZE, WEIGHT_DECAY, LABEL_SMOOTHING = 512, 5e-4, 0.2


def recorded_cycle(path: Path = RANGE_TESTS) -> tuple[float, float]:
    """The median over seeds of notebook 04's recorded cycle bounds (lr_min, lr_max)."""
    runs = json.loads(path.read_text())["runs"]
    return (statistics.median(run["cycle_lr_min"] for run in runs),
            statistics.median(run["cycle_lr_max"] for run in runs))


def train_run(data, device: torch.device, epochs: int, seed: int, amp: bool, cycle: tuple[float, float]) -> dict:
    """One short run of notebook 04's recipe; the test accuracy of every epoch and the wall time."""
    torch.manual_seed(seed)
    model = models.resnet9()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=WEIGHT_DECAY)
    train_loader = make_train_loader(data.train_images, data.train_labels, AUGMENT, BATCH_SIZE, device=device,
                                     seed=seed)
    test_loader = make_eval_loader(data.test_images, data.test_labels, 1024, device=device)
    lr_min, lr_max = cycle
    scheduler = linear_one_cycle(optimizer, lr_max, epochs, len(train_loader), peak_epoch=max(epochs * 5 / 24, 0.5),
                                 div_factor=lr_max / lr_min)
    began = time.perf_counter()
    history = fit(model, train_loader, optimizer, epochs, test_loader=test_loader, scheduler=scheduler,
                  loss_fn=nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING), device=device, amp=amp,
                  flip_tta=False, seed=seed, progress=False)
    return {"precision": precision_name(autocast_dtype(device, amp)), "seed": seed,
            "test_acc": history["test_acc"], "seconds": time.perf_counter() - began}


def parse_run(text: str) -> tuple[bool, int]:
    """'fp32:0' -> (amp off, seed 0); 'auto:1' -> (amp on, seed 1)."""
    precision, _, seed = text.partition(":")
    if precision not in ("fp32", "auto") or not seed.isdigit():
        raise argparse.ArgumentTypeError(f"expected fp32:SEED or auto:SEED, got {text!r}")
    return precision == "auto", int(seed)


def report(runs: Sequence[dict], header: Sequence[str]) -> str:
    """Markdown: the header lines, then test accuracy per epoch (rows) and run (columns), and the gaps that matter:
    precision (same seed) against seed (same precision) at the last epoch."""
    names = [f"{run['precision']}, seed {run['seed']}" for run in runs]
    lines = [*header, "", "| epoch | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(runs)]
    for epoch in range(len(runs[0]["test_acc"])):
        lines.append(f"| {epoch + 1} | " + " | ".join(f"{run['test_acc'][epoch]:.2%}" for run in runs) + " |")
    lines.append("| wall time | " + " | ".join(f"{run['seconds'] / 60:.1f} min" for run in runs) + " |")
    last = {(run["precision"], run["seed"]): run["test_acc"][-1] for run in runs}
    gaps = []
    for (precision, seed), acc in last.items():
        for (other_precision, other_seed), other in last.items():
            one_changed = (precision == other_precision) != (seed == other_seed)
            if (precision, seed) < (other_precision, other_seed) and one_changed:
                what = "precision" if seed == other_seed else "seed"
                gaps.append(f"- last epoch, {what} changed ({precision} seed {seed} vs {other_precision} seed "
                            f"{other_seed}): {abs(acc - other) * 100:.2f} points")
    return "\n".join([*lines, "", *gaps, ""])


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m helpers.precision_check", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000, help="training images (class-balanced subset)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--runs", type=parse_run, nargs="+", default=[(False, 0), (True, 0), (True, 1)],
                        metavar="PRECISION:SEED", help="fp32:SEED or auto:SEED (default: fp32:0 auto:0 auto:1)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=None, help="markdown file (default: print only)")
    args = parser.parse_args(argv)
    device = select_device(args.device)
    data = load_cifar10(args.data_root, download=False).subset(args.images, None)
    cycle = recorded_cycle()
    runs = []
    for amp, seed in args.runs:
        runs.append(train_run(data, device, args.epochs, seed, amp, cycle))
        print(f"{runs[-1]['precision']}, seed {seed}: " + ", ".join(f"{a:.2%}" for a in runs[-1]["test_acc"])
              + f" ({runs[-1]['seconds'] / 60:.1f} min)", flush=True)
    header = [f"# fp32 against {describe_precision(device)} on {device_name(device)}", "",
              f"- {time.strftime('%Y-%m-%d')}; torch {torch.__version__}; `python -m helpers.precision_check "
              f"--images {args.images} --epochs {args.epochs}`",
              f"- notebook 04's recipe for {args.epochs} epochs on {len(data.train_labels):,} training images "
              f"({data.source}), test accuracy on all {len(data.test_labels):,} test images after every epoch",
              f"- cycle {cycle[0]:.3g} → {cycle[1]:.3g} (the recorded range tests' medians), peak at epoch "
              f"{max(args.epochs * 5 / 24, 0.5):g}, no EMA"]
    text = report(runs, header)
    print("\n" + text)
    if args.out:
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
