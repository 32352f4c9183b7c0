"""Matplotlib plots for the notebooks; each returns its figure (and shows nothing by itself)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
import torch

from .engine import History
from .transforms import denormalize


def as_display_images(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 HWC arrays for imshow: uint8 HWC passes through, normalized CHW tensors are de-normalized."""
    if isinstance(images, torch.Tensor):
        return denormalize(images)
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"expected uint8 HWC images or normalized tensors, got {images.dtype} arrays")
    return images


def _grid(n: int, cols: int, cell: float = 1.6):
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell, rows * (cell + 0.25)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes.flat


def plot_samples(images: np.ndarray | torch.Tensor, labels: Sequence[int], classes: Sequence[str],
                 n: int = 25, cols: int = 5, title: str | None = None) -> plt.Figure:
    """A grid of the first `n` images titled with their class names."""
    images = as_display_images(images[:n])
    fig, axes = _grid(len(images), cols)
    for ax, img, label in zip(axes, images, labels):
        ax.imshow(img)
        ax.set_title(classes[int(label)], fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_history(history: History, title: str | None = None) -> plt.Figure:
    """Loss and accuracy per epoch for train / validation / test (and the EMA weights, where measured), and the
    learning rate."""
    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(12, 3.6))  # 1,200 px: legible in a GitHub column
    epochs = history["epoch"]
    curves = (("train", "", "-"), ("val", "", "--"), ("test", "", ":"), ("val", "_ema", "--"), ("test", "_ema", ":"))
    for split, suffix, style in curves:
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
            values = history[f"{split}_{metric}{suffix}"]
            if any(v is not None for v in values):
                scale = 100 if metric == "acc" else 1
                ax.plot(epochs, [np.nan if v is None else v * scale for v in values], style,
                        marker="x" if suffix else ".", label=split + (" EMA" if suffix else ""))
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    best = history.best("test_acc")
    if best is not None:
        ax_acc.axhline(best * 100, color="grey", lw=0.8)
        ax_acc.annotate(f"best test {best:.2%}", (epochs[0], best * 100), va="bottom", fontsize=8)
    ax_lr.plot(epochs, history["lr"], marker=".")
    ax_lr.set(xlabel="epoch", ylabel="learning rate (epoch start)", title="Learning rate")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
        ax.grid(alpha=0.3)
    ax_loss.legend()
    ax_acc.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class]."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def plot_confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str],
                          normalize: bool = True) -> plt.Figure:
    """Confusion matrix (rows: true class; normalized per row by default) with the values written in."""
    matrix = confusion_matrix(y_true, y_pred, len(classes))
    shown = matrix / np.maximum(matrix.sum(1, keepdims=True), 1) if normalize else matrix
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(shown, cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true",
           title="Confusion matrix" + (" (fraction of each true class)" if normalize else ""))
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    threshold = shown.max() / 2
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{shown[i, j]:.2f}" if normalize else str(shown[i, j]), ha="center", va="center",
                    fontsize=7, color="white" if shown[i, j] > threshold else "black")
    fig.tight_layout()
    return fig


def per_class_accuracy(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Accuracy of each true class (NaN for a class with no examples)."""
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    totals = matrix.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / totals, np.nan)


def plot_per_class_accuracy(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> plt.Figure:
    """Horizontal bars of each class's accuracy, with the overall accuracy as a line."""
    acc = per_class_accuracy(y_true, y_pred, len(classes)) * 100
    overall = 100 * np.mean(np.asarray(y_true) == np.asarray(y_pred))
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.barh(classes, acc, color="tab:blue")
    ax.axvline(overall, color="tab:red", ls="--", label=f"overall {overall:.2f}%")
    ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
    ax.set(xlim=(0, 105), xlabel="accuracy (%)", title="Per-class test accuracy")
    ax.invert_yaxis()
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


def misclassified_indices(y_true: Sequence[int], y_pred: Sequence[int], n: int | None = None,
                          probs: np.ndarray | None = None) -> np.ndarray:
    """Indices of wrong predictions, most confident mistakes first when `probs` is given."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    wrong = np.flatnonzero(y_true != y_pred)
    if probs is not None:
        wrong = wrong[np.argsort(-probs[wrong, y_pred[wrong]], kind="stable")]
    return wrong[:n]


def plot_misclassified(images: np.ndarray | torch.Tensor, y_true: Sequence[int], y_pred: Sequence[int],
                       classes: Sequence[str], n: int = 25, cols: int = 5,
                       probs: np.ndarray | None = None) -> plt.Figure:
    """Gallery of misclassified images (de-normalized if given as tensors), titled 'true → predicted'."""
    chosen = misclassified_indices(y_true, y_pred, n, probs)
    shown = as_display_images(images[torch.as_tensor(chosen)] if isinstance(images, torch.Tensor)
                              else images[chosen])
    fig, axes = _grid(max(len(chosen), 1), cols)
    for ax, img, i in zip(axes, shown, chosen):
        ax.imshow(img)
        ax.set_title(f"{classes[y_true[i]]} → {classes[y_pred[i]]}", fontsize=8, color="tab:red")
    fig.suptitle(f"{len(chosen)} misclassified test images (true → predicted)")
    fig.tight_layout()
    return fig
