"""The five assignments: what the reference project reached, and the goal each of our notebooks must meet.

One source for the notebooks' verdicts (`report_goal`) and the README results table (`python -m helpers.results`).
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

    def shortfalls(self, accuracy: float, epochs: int, parameters: int | None = None) -> list[str]:
        """What keeps a run at `accuracy` after `epochs` epochs with `parameters` from the goal (empty: met)."""
        missed = []
        if accuracy < self.accuracy:
            missed.append(f"accuracy short by {self.accuracy - accuracy:.2%}")
        if self.max_epochs is not None and epochs > self.max_epochs:
            missed.append(f"{epochs} epochs > {self.max_epochs}")
        if self.max_parameters is not None and parameters is not None and parameters >= self.max_parameters:
            missed.append(f"{parameters:,} parameters ≥ {self.max_parameters:,}")
        return missed


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
    Assignment("05_kaggle_resnet", "Kaggle ResNet", "resnet_kaggle", "95.5 %",
               Goal(0.96, max_parameters=5_000_000)),
)}
GOALS = {name: assignment.goal for name, assignment in ASSIGNMENTS.items()}
