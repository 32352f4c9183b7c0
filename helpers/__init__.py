"""Helpers for the CIFAR-10 notebooks: data, transforms, models, training engine, plots, run records.

Notebooks import this package once (`import helpers as h`) and keep their cells to the story.
"""
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # before anything imports albumentations

from . import devices, models, transforms  # noqa: E402
from .augmentation import Augmentation  # noqa: E402
from .data import (CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, PROJECT_ROOT, Cifar10, DataError,  # noqa: E402
                   Split, load_cifar10, read_batch, shown_path, synthetic_cifar10, train_val_split,
                   write_synthetic_cifar10)
from .devices import autocast_dtype, describe_precision, device_name, select_device  # noqa: E402
from .ema import ModelEMA  # noqa: E402
from .engine import (BudgetReached, CheckpointError, EarlyStopping, History, TrainingDiverged,  # noqa: E402
                     describe_training, evaluate, fit, load_checkpoint, predict, save_checkpoint, seed_everything)
from .goals import ASSIGNMENTS, GOALS, Goal  # noqa: E402
from .tensor_loader import TensorLoader  # noqa: E402
from .loaders import ArrayDataset, make_eval_loader, make_loader, make_train_loader  # noqa: E402
from .models import count_parameters  # noqa: E402
from .context import describe_run, load_data, report_goal, smoke_mode, storage_dir  # noqa: E402
from .optim import describe_groups, weight_decay_groups  # noqa: E402
from .plots import (plot_confusion_matrix, plot_history, plot_misclassified, plot_per_class_accuracy,  # noqa: E402
                    plot_samples)
from .records import save_run_record  # noqa: E402
from .release import ReleaseError, load_pretrained, pretrained_run, release_model  # noqa: E402
from .schedules import linear_one_cycle, plot_lr_schedule, warmup_cosine  # noqa: E402
from .summary import model_summary  # noqa: E402
from .training_run import TrainingRun  # noqa: E402

__all__ = [
    "CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "PROJECT_ROOT", "Cifar10", "DataError", "Split",
    "load_cifar10", "read_batch", "shown_path", "synthetic_cifar10", "train_val_split", "write_synthetic_cifar10",
    "BudgetReached", "CheckpointError", "EarlyStopping", "History", "TrainingDiverged", "TrainingRun",
    "autocast_dtype", "describe_precision", "describe_training", "device_name", "evaluate", "fit",
    "load_checkpoint", "predict", "save_checkpoint", "seed_everything", "select_device", "ModelEMA",
    "ASSIGNMENTS", "GOALS", "Goal",
    "ArrayDataset", "make_loader", "count_parameters", "describe_run", "load_data", "report_goal", "smoke_mode",
    "storage_dir",
    "Augmentation", "TensorLoader", "make_train_loader", "make_eval_loader",
    "plot_confusion_matrix", "plot_history", "plot_misclassified", "plot_per_class_accuracy", "plot_samples",
    "save_run_record", "ReleaseError", "load_pretrained", "pretrained_run", "release_model", "model_summary",
    "devices", "models", "transforms", "linear_one_cycle", "plot_lr_schedule",
    "warmup_cosine", "describe_groups", "weight_decay_groups",
]
