"""A job that learnt nothing is flagged: test accuracy not above always predicting the most frequent class (an
exact one-sided binomial test), or a validation curve that never rose above chance. Checked against a binomial
tail summed by hand, on the issue's own case, and on real jobs through ``run_job``."""

from __future__ import annotations

from fractions import Fraction
from math import comb
from pathlib import Path

import numpy as np
import pytest

from imgbench.engine import evaluate
from imgbench.engine.evaluate import CHANCE_ALPHA, chance_test, classification_metrics, learning_finding
from imgbench.registry import get_registry
from imgbench.runner.grid import GridResult
from imgbench.runner.progress import job_line

TESTKIT = Path(__file__).parent / "fixtures" / "runner_plugins"


def upper_tail(k: int, n: int, p: Fraction) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed exactly in rationals."""
    return float(sum(comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def labels(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


ISSUE_COUNTS = [20, 23, 21, 19, 20, 18, 20, 21, 19, 19]  # 200 MNIST-like test labels; class 1 is the majority


def test_the_issues_case_every_image_one_class_is_flagged():
    y_true = labels(ISSUE_COUNTS)
    found = chance_test(y_true, np.full(len(y_true), 4))  # `[1/1] ok ... accuracy 0.1000`, all class 4
    assert found["chance_accuracy"] == pytest.approx(23 / 200)
    assert found["chance_p_value"] == pytest.approx(upper_tail(20, 200, Fraction(23, 200)), rel=1e-9)
    assert found["chance_p_value"] > 0.5
    assert found["did_not_learn"].startswith("test accuracy 0.1000 is not above chance 0.1150 (always class 1;")
    assert "every test image was predicted as class 4" in found["did_not_learn"]


@pytest.mark.parametrize("correct", [23, 30, 31, 32, 33, 34, 40, 60])
def test_the_p_value_is_the_exact_binomial_tail_and_the_flag_flips_at_alpha(correct):
    y_true = labels(ISSUE_COUNTS)
    y_pred = (y_true + 1) % 10
    y_pred[:correct] = y_true[:correct]
    found = chance_test(y_true, y_pred)
    exact = upper_tail(correct, 200, Fraction(23, 200))
    assert found["chance_p_value"] == pytest.approx(exact, rel=1e-9)
    assert bool(found["did_not_learn"]) == (exact >= CHANCE_ALPHA)
    assert "every test image" not in found["did_not_learn"]


def test_classification_metrics_carry_the_chance_columns():
    y_true = labels([5, 5, 10])
    probs = np.eye(3)[y_true] * 0.7 + 0.1  # a perfect classifier: rows sum to one
    found = classification_metrics(y_true, probs)
    assert found["chance_accuracy"] == 0.5 and found["did_not_learn"] == ""
    assert found["chance_p_value"] == pytest.approx(0.5 ** 20)  # P(20 of 20 at p = 1/2)


def test_a_validation_curve_that_never_rises_above_chance_is_flagged_even_when_the_test_set_passes():
    val_y = labels([30, 30, 40])  # chance 0.40 on 100 images
    flat = [{"val_accuracy": 0.38}, {"val_accuracy": 0.41}, {"val_accuracy": 0.40}]
    finding = learning_finding("", flat, val_y)
    exact = upper_tail(41, 100, Fraction(2, 5))
    assert finding == (f"validation accuracy never rose above chance 0.4000 (best 0.4100 of 3 epochs; "
                       f"binomial p = {exact:.2g})")
    rising = [*flat, {"val_accuracy": 0.60}]  # one epoch clearly above chance is enough
    assert learning_finding("", rising, val_y) == ""
    assert learning_finding("test said so", flat, val_y) == f"test said so; {finding}"


def test_without_a_validation_split_or_epochs_the_test_set_alone_decides():
    assert learning_finding("x", [{"val_accuracy": None}], np.array([], dtype=np.int64)) == "x"
    assert learning_finding("", [], labels([3, 3])) == ""  # epochs=0: no curve to judge


def test_the_cli_line_and_the_summary_show_the_finding():
    row = {"status": "ok", "job_id": "timm-resnet18__mnist__s0__b7fa05b7", "duration_s": 139.0, "accuracy": 0.1,
           "did_not_learn": "test accuracy 0.1000 is not above chance 0.1150", "error": ""}
    line = job_line(row, "[1/1] ")
    assert line.startswith("[1/1] ok") and line.endswith("accuracy 0.1000  did not learn: test accuracy 0.1000 is "
                                                           "not above chance 0.1150")
    result = GridResult(Path("/out"), [row], jobs=[object()])
    summary = result.summary()
    assert summary.startswith("1 job: 1 ok, 1 of them did not learn\n")
    assert f"  {row['job_id']}: test accuracy 0.1000 is not above chance 0.1150" in summary
    assert result.exit_code == 0  # the status stays ok; the flag is the finding


@pytest.mark.slow
def test_real_jobs_one_that_learns_and_one_that_cannot(tmp_path):
    from imgbench.engine import run_job

    registry = get_registry([TESTKIT], ())
    common = dict(registry=registry, progress=False, batch_size=32, bench_seconds=0.05, amp=False)
    learnt = run_job("testkit/linear", "tinygray", epochs=3, lr=3e-3, **common)
    assert learnt.metrics["did_not_learn"] == "" and learnt.metrics["chance_p_value"] < CHANCE_ALPHA
    frozen = run_job("testkit/linear", "tinygray", epochs=2, lr=1e-12, out_dir=tmp_path, **common)
    metrics = frozen.metrics
    assert frozen.status == "ok" and metrics["chance_accuracy"] == pytest.approx(1 / 3)
    assert metrics["did_not_learn"].startswith(f"test accuracy {metrics['accuracy']:.4f} is not above chance")
    assert "validation accuracy never rose above chance" in metrics["did_not_learn"]
    n = metrics["test_samples"]
    correct = round(metrics["accuracy"] * n)
    assert metrics["chance_p_value"] == pytest.approx(upper_tail(correct, n, Fraction(1, 3)), rel=1e-9)
    assert evaluate.CHANCE_ALPHA <= metrics["chance_p_value"]
