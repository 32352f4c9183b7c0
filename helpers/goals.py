"""The five assignments: what the reference project reached, and the goal each of our notebooks must meet.

One source for the notebooks' verdicts (`report_goal`) and the README results table (`python -m helpers.results`).

The goals are stated on the original CIFAR-10. A run on another copy of it (the offline JPEG-75 one, whose
re-encoded pixels cost every recipe accuracy) is judged by one rule (`DataReference`): the goal, less what the copy
costs airbench94, measured on that same copy.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Goal:
    """Test accuracy of the single raw model of one run (not EMA, not TTA), within limits on epochs and size."""

    accuracy: float
    max_epochs: int | None = None
    max_parameters: int | None = None  # strictly fewer parameters than this

    def __str__(self) -> str:
        text = f"≥ {self.accuracy:.1%}".replace("%", " %")
        if self.max_epochs is not None:
            text += f" in ≤ {self.max_epochs} epochs"
        if self.max_parameters is not None:
            text += f" with < {self.max_parameters / 1e6:g}M parameters"
        return text

    def shortfalls(self, accuracy: float, epochs: int, parameters: int | None = None,
                   reference: DataReference | None = None) -> list[str]:
        """What keeps a run at `accuracy` after `epochs` epochs with `parameters` from the goal (empty: met); on a
        copy of CIFAR-10 the accuracy goal is lowered by what the copy costs airbench94 (`reference`)."""
        missed = []
        target = reference.goal_here(self) if reference else self.accuracy
        if accuracy < target:
            missed.append(f"accuracy short by {target - accuracy:.2%}")
        if self.max_epochs is not None and epochs > self.max_epochs:
            missed.append(f"{epochs} epochs > {self.max_epochs}")
        if self.max_parameters is not None and parameters is not None and parameters >= self.max_parameters:
            missed.append(f"{parameters:,} parameters ≥ {self.max_parameters:,}")
        return missed


@dataclass(frozen=True)
class DataReference:
    """airbench94 (Keller Jordan's 94 % speedrun, `pip install airbench`) measured on a copy of CIFAR-10: the same
    recipe on the original and on the copy, so the difference is what the copy's pixels cost.

    The rule: a run on the copy meets an accuracy goal stated on the original when it reaches the goal less
    `offset`. Both of airbench94's figures are with its own flip-and-shift TTA, like for like.
    """

    label: str  # how the results table names the data
    accuracy: float  # airbench94 on this copy (mean over `runs`)
    runs: int
    source: str  # where it was measured
    original: float = 0.9401  # airbench94 on the original CIFAR-10: the mean of its 1,000 published runs

    @property
    def offset(self) -> float:
        """Accuracy points the copy costs: airbench94 on the original less on the copy."""
        return self.original - self.accuracy

    def goal_here(self, goal: Goal) -> float:
        """The accuracy that meets `goal` on this copy: the goal less `offset`."""
        return goal.accuracy - self.offset

    def explain(self, goal: Goal) -> str:
        """One sentence: airbench94 here and on the original, and the accuracy goal it gives on this copy."""
        return (f"On this data ({self.label}) airbench94 reaches {self.accuracy:.2%} (mean of {self.runs} runs, "
                f"{self.source}), {self.offset * 100:.2f} points below its {self.original:.2%} on the original "
                f"CIFAR-10: the goal's {goal.accuracy:.1%} there is {self.goal_here(goal):.2%} here.")


# airbench 0.1.8 on the offline JPEG-75 copy, 2 seeds on a CPU (results/bench_cpu_xeon_avx512bf16.md,
# `python -m helpers.bench` repeats it): 90.60 % and 90.41 % with its TTA. As it ships (fp16) on an NVIDIA H200
# (results/bench_cuda.md): 90.58 % and 90.42 %, a mean of 90.50 %, the same to 0.01 points.
JPEG_COPY = DataReference("re-encoded JPEG copy", accuracy=0.9051, runs=2,
                          source="results/bench_cpu_xeon_avx512bf16.md")


def data_reference(data_source: str) -> DataReference | None:
    """The airbench94 reference for data described by `data_source` (`Cifar10.source`, a run record's "data"):
    the JPEG copy's for images decoded from JPEG files, None (no offset) for the original CIFAR-10."""
    return JPEG_COPY if "JPEG" in data_source else None


@dataclass(frozen=True)
class Assignment:
    """One notebook: its run-record name, title, model (a factory of `helpers.models`), the reference project's
    result and our goal."""

    name: str  # the notebook's file stem and its run record's name
    title: str
    model: str
    reference: str
    goal: Goal
    note: str = ""


ASSIGNMENTS = {a.name: a for a in (
    Assignment("01_resnet18_baseline", "ResNet18 baseline", "resnet18", "87.66 % at 46 epochs",
               Goal(0.95, max_epochs=30)),
    Assignment("02_light_dilated_net", "Light dilated net", "lightnet", "> 80 %",
               Goal(0.93, max_parameters=1_000_000)),
    Assignment("03_resnet18_lrfinder_gradcam", "LR finder + GradCAM", "resnet18", "90.71 % at 49 epochs",
               Goal(0.945, max_epochs=50)),
    Assignment("04_resnet9_onecycle", "ResNet-9 one-cycle", "resnet9", "90 % target", Goal(0.94, max_epochs=24),
               note="the mean over seeds when several are run"),
    Assignment("05_kaggle_resnet", "Kaggle ResNet", "resnet_kaggle", "95.56 % at 60 epochs",
               Goal(0.96, max_parameters=5_000_000)),
)}
GOALS = {name: assignment.goal for name, assignment in ASSIGNMENTS.items()}
