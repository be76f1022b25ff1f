"""Metrics against answers worked out by hand."""

import math

import pytest
import torch

from imgcls.metrics import (
    classification_report,
    expected_calibration_error,
    fit_temperature,
    most_confused,
    negative_log_likelihood,
    rejection_report,
    reliability_bins,
    unknown_scores,
)


def logits_for(pred, n_cls=3, margin=5.0):
    z = torch.zeros(len(pred), n_cls)
    z[torch.arange(len(pred)), torch.tensor(pred)] = margin
    return z


def test_known_confusion_and_f1():
    # true:  0 0 0 0 1 1 1 2 2 2
    # pred:  0 0 0 1 1 1 0 2 2 1
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    pred = [0, 0, 0, 1, 1, 1, 0, 2, 2, 1]
    r = classification_report(logits_for(pred), labels, ["a", "b", "c"])
    assert r["confusion"] == [[3, 1, 0], [1, 2, 0], [0, 1, 2]]
    assert r["top1"] == pytest.approx(0.7)
    a, b, c = r["per_class"]
    assert (a["precision"], a["recall"]) == (pytest.approx(3 / 4), pytest.approx(3 / 4))
    assert (b["precision"], b["recall"]) == (pytest.approx(2 / 4), pytest.approx(2 / 3))
    assert (c["precision"], c["recall"]) == (pytest.approx(1.0), pytest.approx(2 / 3))
    assert b["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert [a["support"], b["support"], c["support"]] == [4, 3, 3]
    f1s = [a["f1"], b["f1"], c["f1"]]
    assert r["macro"]["f1"] == pytest.approx(sum(f1s) / 3)
    assert r["weighted"]["f1"] == pytest.approx((4 * f1s[0] + 3 * f1s[1] + 3 * f1s[2]) / 10)
    top = most_confused(r["confusion"], ["a", "b", "c"])
    assert {(m["true"], m["predicted"]) for m in top} == {("a", "b"), ("b", "a"), ("c", "b")}
    assert top[0]["count"] == 1


def test_class_never_predicted_has_zero_precision():
    r = classification_report(logits_for([0, 0]), torch.tensor([0, 1]), ["a", "b", "c"])
    assert r["per_class"][1]["precision"] == 0.0 and r["per_class"][2]["f1"] == 0.0


def test_ece_known_value():
    # 4 images at confidence 0.9, 3 right; 4 at 0.6, 2 right -> ECE = .5*.15 + .5*.1 = 0.125
    p_hi = torch.tensor([[0.9, 0.1]] * 4, dtype=torch.float64)  # float32(0.9) is below 0.9
    p_lo = torch.tensor([[0.6, 0.4]] * 4, dtype=torch.float64)
    probs = torch.cat([p_hi, p_lo])
    labels = torch.tensor([0, 0, 0, 1, 0, 0, 1, 1])
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.125)
    b = reliability_bins(probs, labels, n_bins=10)
    assert b["count"][9] == 4 and b["count"][6] == 4
    assert b["accuracy"][9] == pytest.approx(0.75)


def test_temperature_scaling_fixes_an_overconfident_model():
    g = torch.Generator().manual_seed(0)
    n, k = 4000, 5
    true_logits = 2 * torch.randn(n, k, generator=g)
    # labels drawn from softmax(true_logits): those logits are calibrated by construction
    labels = torch.multinomial(true_logits.softmax(1), 1, generator=g).flatten()
    logits = 4.0 * true_logits  # deliberately over-confident by a factor of 4
    t = fit_temperature(logits, labels)
    assert 3.0 < t < 5.0
    nll_before = negative_log_likelihood(logits, labels)
    assert negative_log_likelihood(logits, labels, t) < nll_before - 0.3
    before = expected_calibration_error(logits.softmax(1), labels)
    after = expected_calibration_error((logits / t).softmax(1), labels)
    assert after < before / 3


def test_open_set_scores():
    logits = torch.tensor([[5.0, 0.0], [0.1, 0.0], [0.0, 6.0]])
    labels = torch.tensor([0, 1, 1])
    r = rejection_report(logits, labels, threshold=0.9)
    assert r["coverage"] == pytest.approx(2 / 3) and r["accuracy_answered"] == 1.0
    assert r["rejected_were_wrong"] == 1.0
    e = unknown_scores(logits, "energy")
    assert e[1] < e[0] and e[0] == pytest.approx(math.log(math.exp(5) + 1))
