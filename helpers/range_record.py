"""Record a notebook's own LR range test for several seeds, without training: the evidence behind a default LR.

    python -m helpers.range_record notebooks/04_resnet9_onecycle.ipynb --seeds 0 1 2 \
        --out results/lr_range_tests/04_resnet9_onecycle.json

The notebook's code cells run in order, in one namespace, with its parameters overridden as papermill would (`SEED`
and any `--set NAME=VALUE`), up to and including the cell that calls `find_lr`; nothing is trained and no
checkpoint or run record is written. The record keeps, per seed, the learning rates and smoothed losses, the
steepest-descent suggestion and the cycle bounds (`cycle_bounds`), plus the device, data and software; a figure of
all the curves goes beside it (`.png`). On a CPU such a record is evidence about learning rates, never an accuracy.
"""
from __future__ import annotations

import argparse
import ast
import json
import platform
import time
from pathlib import Path

import matplotlib
import nbformat
import numpy as np

RANGE_TEST_CALL = "find_lr("


def notebook_cells(path: Path) -> list[str]:
    """The code cells of a notebook up to and including the one that runs the range test; the parameters cell is
    marked by a leading `# parameters` line so that overrides can be placed after it."""
    cells = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        tagged = "parameters" in cell.metadata.get("tags", [])
        cells.append(("# parameters\n" if tagged else "") + cell.source)
        if RANGE_TEST_CALL in cell.source and not cell.source.lstrip().startswith(("import", "from")):
            return cells
    raise ValueError(f"{path} has no cell that calls {RANGE_TEST_CALL[:-1]}")


def run_range_test(path: Path, overrides: dict[str, object]):
    """Run the notebook's cells up to its range test with `overrides` set after its parameters cell; returns the
    notebook's namespace (its `lr_test`, `device`, `data`, ...)."""
    namespace: dict[str, object] = {"__name__": "__main__"}
    assignments = "\n".join(f"{name} = {value!r}" for name, value in overrides.items())
    for source in notebook_cells(path):
        exec(compile(source, f"{path.name}", "exec"), namespace)  # noqa: S102 - the project's own notebook
        if source.startswith("# parameters\n"):
            exec(assignments, namespace)  # noqa: S102
    return namespace


def record_seeds(path: Path, seeds: list[int], overrides: dict[str, object], out: Path) -> dict:
    """The range test of `path` once per seed, as a JSON-ready record; written to `out` after every seed."""
    import matplotlib.pyplot as plt
    import torch

    from .devices import describe_precision
    from .loaders import resolve_backend

    record = {"notebook": path.name, "overrides": overrides, "python": platform.python_version(),
              "torch": torch.__version__, "note": "LR range tests only: nothing was trained, no accuracy is claimed",
              "runs": []}
    for seed in seeds:
        started = time.perf_counter()
        # no checkpoint: a resumed run's stored range test (TrainingRun.range_test) is not a new measurement
        namespace = run_range_test(path, {**overrides, "SEED": seed, "CHECKPOINT": None})
        test = namespace["lr_test"]
        record.update(data=namespace["data"].source, device=str(namespace["device"]),
                      precision=describe_precision(namespace["device"]),
                      pipeline=resolve_backend(namespace["LOADER"]) if "LOADER" in namespace else None)
        record["runs"].append({"seed": seed, "seconds": round(time.perf_counter() - started, 1),
                               "steepest_descent_lr": test.suggested_lr, "lrs": test.lrs, "losses": test.losses})
        plt.close("all")
        out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"seed {seed}: steepest descent {test.suggested_lr:.3g} "
              f"({record['runs'][-1]['seconds'] / 60:.1f} min)", flush=True)
    return record


def summarize(record: dict) -> dict:
    """Add each run's cycle bounds (`cycle_bounds`) and lowest-loss LR, and the spread of the bounds over seeds."""
    from .lr_finder import cycle_bounds

    for run in record["runs"]:
        bounds = cycle_bounds(run["lrs"], run["losses"])
        run.update(cycle_lr_min=bounds.lr_min, cycle_lr_max=bounds.lr_max,
                   lr_at_min_loss=float(run["lrs"][int(np.nanargmin(run["losses"]))]))
    for key in ("cycle_lr_min", "cycle_lr_max", "steepest_descent_lr"):
        values = [run[key] for run in record["runs"]]
        record[f"{key}_range"] = [min(values), max(values)]
    return record


def plot_record(record: dict):
    """All seeds' smoothed loss curves, with each seed's cycle bounds marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for i, run in enumerate(record["runs"]):
        color = f"C{i}"
        ax.plot(run["lrs"], run["losses"], color=color, label=f"seed {run['seed']}")
        ax.axvline(run["cycle_lr_max"], color=color, linestyle="--", linewidth=1)
        ax.axvline(run["cycle_lr_min"], color=color, linestyle=":", linewidth=1)
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss")
    ax.set_title(f"{record['notebook']}: LR range tests on {record['device']}\n"
                 "dashed: cycle peak (lr_max), dotted: cycle start (lr_min)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def parse_override(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    if not name.isidentifier() or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, ast.literal_eval(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", type=parse_override, action="append", default=[], metavar="NAME=VALUE",
                        help="override a parameter of the notebook (a Python literal)")
    parser.add_argument("--out", type=Path, required=True, help="the record (.json); the figure goes beside it")
    parser.add_argument("--summarize-only", action="store_true",
                        help="recompute the bounds and the figure of an existing record, running nothing")
    args = parser.parse_args(argv)
    matplotlib.use("Agg")
    if args.summarize_only:
        record = json.loads(args.out.read_text())
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = record_seeds(args.notebook.resolve(), args.seeds, dict(args.set), args.out)
    record = summarize(record)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    for run in record["runs"]:
        print(f"seed {run['seed']}: steepest descent {run['steepest_descent_lr']:.3g}, cycle bounds "
              f"{run['cycle_lr_min']:.3g} - {run['cycle_lr_max']:.3g}")
    plot_record(record).savefig(args.out.with_suffix(".png"), dpi=120)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
