"""The scores the pipelines report, in one place: span F1 and entity calibration (NER), ROC AUC
(sentiment), corpus BLEU (translate), and the expected calibration error under them.

Benchmarks and tests import them from here too, so a score means the same everywhere.

Calibration: a model is calibrated when, of the answers it gives with confidence 0.8, 80% are right. The
expected calibration error (Guo et al., 2017) bins the answers by confidence into equal-width
bins and averages ``|accuracy - mean confidence|`` over the bins, weighted by their share of the
answers: 0 is perfect, and it is in the same units as accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: sacrebleu's settings for every BLEU we report: lowercased, 13a tokenisation (recorded in metrics.json).
BLEU_SETTINGS = {"lowercase": True, "tokenize": "13a"}


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


# --- NER: entity spans, span F1 and entity calibration -----------------------------------


def entity_spans(tags) -> list[tuple[str, int, int]]:
    """``(type, start, end)`` token spans (end exclusive) of IOB2 tags, read strictly.

    A span starts at ``B-X`` and continues over ``I-X``; a stray ``I-X`` is not
    an entity in strict IOB2 (as ``seqeval``'s strict mode scores it).
    """
    spans = []
    current = None
    for index, tag in enumerate([*list(tags), "O"]):
        tag = tag.decode() if isinstance(tag, bytes) else str(tag)
        if current is not None and tag != f"I-{current[0]}":
            spans.append((current[0], current[1], index))
            current = None
        if tag.startswith("B-"):
            current = (tag[2:], index)
    return spans


def entity_confidence(span: tuple[str, int, int], confidence) -> float:
    """A span's confidence: the least tag probability among its tokens.

    Every token's tag must be right for the entity to be, so the span can be no surer than its
    weakest token (the weakest marginal bounds the probability of the whole labelling from above).
    """
    _, start, end = span
    return float(np.min(confidence[start:end]))


def span_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Span-level micro precision/recall/F1 and a per-type table (``seqeval`` strict IOB2)."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    common = dict(mode="strict", scheme=IOB2, zero_division=0)
    report = classification_report(gold, predicted, output_dict=True, **common)
    per_type = {
        name: {key: float(values[key]) if key != "support" else int(values[key])
               for key in ("precision", "recall", "f1-score", "support")}
        for name, values in report.items()
        if not name.endswith(" avg")
    }
    for values in per_type.values():
        values["f1"] = values.pop("f1-score")
    return {
        "f1": float(f1_score(gold, predicted, **common)),
        "precision": float(precision_score(gold, predicted, **common)),
        "recall": float(recall_score(gold, predicted, **common)),
        "per_type": per_type,
    }


def entity_calibration(gold, predicted, confidences, bins: int = 10) -> dict:
    """Expected calibration error of the predicted entities' confidences (right = the exact gold span and type)."""
    scores, right = [], []
    for gold_tags, predicted_tags, confidence in zip(gold, predicted, confidences, strict=True):
        gold_spans = set(entity_spans(gold_tags))
        for span in entity_spans(predicted_tags):
            scores.append(entity_confidence(span, confidence))
            right.append(span in gold_spans)
    return expected_calibration_error(scores, right, bins=bins)


# --- sentiment and translate ----------------------------------------------------------


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (Mann–Whitney U with average ranks for ties)."""
    from scipy.stats import rankdata

    labels = np.asarray(labels)
    positives, negatives = int(labels.sum()), int(len(labels) - labels.sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def corpus_bleu(hypotheses, references) -> dict:
    """sacrebleu corpus BLEU (lowercased, 13a) with its signature string."""
    import sacrebleu

    metric = sacrebleu.metrics.BLEU(**BLEU_SETTINGS)
    score = metric.corpus_score(list(hypotheses), [list(references)])
    return {"bleu": round(float(score.score), 2), "signature": str(metric.get_signature())}
