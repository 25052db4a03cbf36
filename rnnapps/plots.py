"""PNG plots written into run directories (matplotlib, headless Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def learning_curves(history: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """One panel per metric, training and validation curves over epochs."""
    metrics = [key for key in history if key not in ("epoch",) and not key.startswith("val_") and key != "learning_rate"]
    if not metrics:
        raise ValueError("history has no metrics to plot")
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.5), squeeze=False)
    for axis, metric in zip(axes[0], metrics, strict=True):
        epochs = np.arange(1, len(history[metric]) + 1)
        axis.plot(epochs, history[metric], marker="o", label="train")
        if f"val_{metric}" in history:
            axis.plot(epochs[: len(history[f"val_{metric}"])], history[f"val_{metric}"], marker="o", label="validation")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def confusion_matrix(matrix, labels: Sequence[str], path: str | Path, title: str = "Confusion matrix") -> Path:
    """A labelled heat map of counts (rows: true label, columns: predicted)."""
    matrix = np.asarray(matrix)
    figure, axis = plt.subplots(figsize=(1.2 * len(labels) + 2.5, 1.2 * len(labels) + 2))
    image = axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels)
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), value in np.ndenumerate(matrix):
        axis.text(column, row, f"{value:,}", ha="center", va="center", color="white" if value > threshold else "black")
    axis.set_title(title)
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def heatmap(values, row_labels: Sequence[str], column_labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """A generic labelled heat map (attention weights, per-class scores)."""
    values = np.asarray(values)
    figure, axis = plt.subplots(figsize=(0.45 * len(column_labels) + 2.5, 0.45 * len(row_labels) + 2))
    image = axis.imshow(values, cmap="viridis", aspect="auto")
    axis.set_xticks(range(len(column_labels)), column_labels, rotation=90)
    axis.set_yticks(range(len(row_labels)), row_labels)
    if title:
        axis.set_title(title)
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def attention_map(outputs: dict, index: int, path: str | Path, title: str = "") -> Path:
    """The heat map (target × source tokens) of sentence ``index`` of a translation's outputs.

    ``outputs`` holds NumPy ``attention``, ``source_tokens`` and ``target_tokens``, as the
    ``translate_with_attention`` signature and ``Translator.translate`` return them.
    """

    def strings(row):
        return [token.decode("utf-8") for token in np.asarray(row) if token]

    source = strings(outputs["source_tokens"][index]) or ["(empty)"]
    target = strings(outputs["target_tokens"][index]) or ["(empty)"]
    weights = np.asarray(outputs["attention"][index])[: len(target), : len(source)]
    return heatmap(weights, target, source, path, title=title)


def reliability_diagram(calibration: dict, path: str | Path, title: str = "Reliability diagram") -> Path:
    """Accuracy against confidence per bin (``rnnapps.metrics.expected_calibration_error``'s table).

    Bars are each bin's accuracy, the diagonal is perfect calibration, and the lower panel shows
    how many answers fall in each bin, since a bin of five says little.
    """
    rows = calibration["bins"]
    lower = np.array([row["lower"] for row in rows])
    width = np.array([row["upper"] - row["lower"] for row in rows])
    accuracy = np.array([row["accuracy"] if row["count"] else 0.0 for row in rows])
    confidence = np.array([row["confidence"] if row["count"] else np.nan for row in rows])
    counts = np.array([row["count"] for row in rows])
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(lower, accuracy, width=width, align="edge", edgecolor="black", color="tab:blue", label="accuracy")
    top.scatter(confidence, accuracy, color="tab:orange", zorder=3, s=15, label="mean confidence")
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfectly calibrated")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.set_title(f"{title}\nECE {calibration['ece']:.4f} over {calibration['count']:,} answers")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.bar(lower, counts, width=width, align="edge", edgecolor="black", color="tab:gray")
    bottom.set_yscale("log" if counts.max(initial=0) > 0 else "linear")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("answers")
    bottom.set_xlim(0, 1)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def principal_components(points: np.ndarray, count: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Projection of ``points`` on their first ``count`` principal axes, and each axis' share of the variance."""
    centered = points - points.mean(axis=0, keepdims=True)
    _, singular, axes = np.linalg.svd(centered, full_matrices=False)
    variance = singular**2
    share = variance[:count] / max(float(variance.sum()), 1e-12)
    return centered @ axes[:count].T, share


def embedding_pca(codes, labels, label_names: Sequence[str], path, title: str = "") -> tuple[Path, list[float]]:
    """Scatter of the codes' 2-D PCA projection, one colour per label; returns the path and variance shares."""
    projected, share = principal_components(np.asarray(codes, "float64"))
    labels = np.asarray(labels)
    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    for value, name, colour in zip((0, 1), label_names, ("tab:red", "tab:blue"), strict=True):
        chosen = labels == value
        axis.scatter(projected[chosen, 0], projected[chosen, 1], s=6, alpha=0.5, color=colour, label=name)
    axis.set_xlabel(f"PC 1 ({share[0]:.0%} of variance)")
    axis.set_ylabel(f"PC 2 ({share[1]:.0%} of variance)" if len(share) > 1 else "PC 2")
    axis.set_title(title or "Review codes, 2-D PCA")
    axis.legend(markerscale=3)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path), [float(value) for value in share]
