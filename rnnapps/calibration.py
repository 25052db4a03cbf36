"""How well a model's confidence matches how often it is right: expected calibration error.

A model is calibrated when, of the answers it gives with confidence 0.8, 80% are right. The
expected calibration error (Guo et al., 2017) bins the answers by confidence into equal-width
bins and averages ``|accuracy - mean confidence|`` over the bins, weighted by their share of the
answers: 0 is perfect, and it is in the same units as accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> dict:
    """``{"ece", "count", "bins": [{"lower", "upper", "count", "confidence", "accuracy"}]}`` over ``bins`` equal bins.

    Args:
        confidence: one probability in ``[0, 1]`` per answer.
        correct: whether each answer was right.
        bins: equal-width confidence bins over ``[0, 1]``; a confidence of exactly 1 falls in the last.

    Example:

    >>> expected_calibration_error([0.9, 0.9, 0.65, 0.65], [True, False, True, True], bins=5)["ece"]
    0.375
    """
    confidence = np.asarray(confidence, dtype=np.float64).reshape(-1)
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    if confidence.shape != correct.shape:
        raise ValueError(f"Expected one correctness flag per confidence. Received: {confidence.shape} and {correct.shape}")
    if bins < 1:
        raise ValueError(f"Expected bins >= 1. Received: bins={bins}")
    if confidence.size and (np.nanmin(confidence) < 0 or np.nanmax(confidence) > 1 or np.isnan(confidence).any()):
        raise ValueError(
            f"Expected confidences in [0, 1]. Received: min {np.nanmin(confidence)!r}, max {np.nanmax(confidence)!r}, "
            f"{int(np.isnan(confidence).sum())} NaN"
        )
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    table, error = [], 0.0
    for index in range(bins):
        inside = which == index
        count = int(inside.sum())
        row = {"lower": float(edges[index]), "upper": float(edges[index + 1]), "count": count,
               "confidence": None, "accuracy": None}
        if count:
            row["confidence"] = float(confidence[inside].mean())
            row["accuracy"] = float(correct[inside].mean())
            error += count / confidence.size * abs(row["accuracy"] - row["confidence"])
        table.append(row)
    return {"ece": round(float(error), 6), "count": int(confidence.size), "bins": table}
