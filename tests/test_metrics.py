"""Expected calibration error (rnnapps.metrics) by hand, and the reliability diagram."""

import numpy as np
import pytest

from rnnapps.metrics import expected_calibration_error
from rnnapps.plots import reliability_diagram


def test_ece_matches_a_hand_count():
    # Bin [0.8, 1.0): two answers at 0.9, one right -> |0.5 - 0.9| = 0.4, weight 1/2.
    # Bin [0.6, 0.8): two at 0.65, both right -> |1.0 - 0.65| = 0.35, weight 1/2.
    result = expected_calibration_error([0.9, 0.9, 0.65, 0.65], [True, False, True, True], bins=5)
    assert result["ece"] == pytest.approx(0.375)
    assert [row["count"] for row in result["bins"]] == [0, 0, 0, 2, 2]
    assert result["bins"][4]["accuracy"] == 0.5 and result["bins"][3]["confidence"] == pytest.approx(0.65)


def test_a_calibrated_model_scores_near_zero_and_an_overconfident_one_does_not():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0, 1, 200_000)
    calibrated = rng.uniform(0, 1, confidence.size) < confidence
    assert expected_calibration_error(confidence, calibrated)["ece"] < 0.01
    overconfident = rng.uniform(0, 1, confidence.size) < confidence * 0.7
    assert expected_calibration_error(confidence, overconfident)["ece"] == pytest.approx(0.15, abs=0.01)


def test_edges_and_bad_input():
    result = expected_calibration_error([0.0, 1.0], [False, True], bins=10)
    assert result["bins"][0]["count"] == 1 and result["bins"][-1]["count"] == 1 and result["ece"] == 0.0
    assert expected_calibration_error([], [])["ece"] == 0.0
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        expected_calibration_error([1.5], [True])
    with pytest.raises(ValueError, match="one correctness flag per confidence"):
        expected_calibration_error([0.5, 0.5], [True])
    with pytest.raises(ValueError, match="bins >= 1"):
        expected_calibration_error([0.5], [True], bins=0)


def test_reliability_diagram_writes_a_png(tmp_path):
    result = expected_calibration_error([0.95, 0.9, 0.7, 0.3], [True, True, False, False])
    path = reliability_diagram(result, tmp_path / "reliability.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
