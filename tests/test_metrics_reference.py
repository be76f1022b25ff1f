"""Metrics against reference implementations: scikit-learn for the classification figures,
plain loops for calibration, numpy / scipy for the open-set scores.

The property tests draw labels and logits with the awkward cases made common: classes absent
from the labels, classes never predicted (their logits held below the row's minimum), tied
logits (small integers), float32 and float64 inputs, confidences on and next to bin edges. All
comparisons are to 1e-9.
"""

import math
import warnings

import numpy as np
import pytest
import scipy.special
import sklearn.metrics as skm
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from imgcls.metrics import (
    classification_report,
    confusion_matrix,
    expected_calibration_error,
    negative_log_likelihood,
    rejection_report,
    reliability_bins,
    top_k_accuracy,
    unknown_scores,
)

TOL = 1e-9
# each property test checks its metrics on this many random cases
EXAMPLES = 1000
PROPERTY = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

pytestmark = pytest.mark.usefixtures("one_thread")


def close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=TOL, abs_tol=TOL)


@st.composite
def labelled_logits(draw, min_classes: int = 2, max_classes: int = 8):
    """(logits as float32 or float64 numpy array, labels, number of classes).

    Hypothesis draws the shape of the case (classes, images, which classes occur in the
    labels, which are never predicted, ties or not, dtype); the values come from a numpy
    generator seeded by it, several times faster to draw than element by element."""
    n_cls = draw(st.integers(min_classes, max_classes))
    n = draw(st.integers(1, 40))
    present = draw(st.lists(st.integers(0, n_cls - 1), min_size=1, max_size=n_cls, unique=True))
    dead = draw(st.lists(st.integers(0, n_cls - 1), max_size=n_cls - 1, unique=True))
    ties = draw(st.booleans())
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    labels = rng.choice(present, n)
    if ties:  # small integers: many tied logits
        logits = rng.integers(-2, 3, (n, n_cls)).astype(np.float64)
    else:
        logits = rng.uniform(-10, 10, (n, n_cls))
    if dead:  # never predicted: below everything else in the row (softmax stays > 1e-10)
        logits[:, dead] = logits.min(1, keepdims=True) - 1
    return logits.astype(dtype), labels, n_cls


def report_of(logits: np.ndarray, labels: np.ndarray, n_cls: int) -> dict:
    return classification_report(torch.from_numpy(logits), torch.from_numpy(labels),
                                 [f"c{i}" for i in range(n_cls)])


@PROPERTY
@given(labelled_logits())
def test_per_class_averages_and_confusion_match_sklearn(case):
    logits, labels, n_cls = case
    r = report_of(logits, labels, n_cls)
    pred = logits.argmax(1)  # numpy's argmax, like torch's, takes the first of tied maxima
    labs = list(range(n_cls))
    p, rc, f, s = skm.precision_recall_fscore_support(labels, pred, labels=labs,
                                                      zero_division=0)
    for i, c in enumerate(r["per_class"]):
        assert close(c["precision"], p[i]) and close(c["recall"], rc[i])
        assert close(c["f1"], f[i]) and c["support"] == s[i]
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = skm.precision_recall_fscore_support(labels, pred, labels=labs,
                                                            average=avg, zero_division=0)
        assert close(r[avg]["precision"], ap) and close(r[avg]["recall"], ar)
        assert close(r[avg]["f1"], af)
    # over the classes present (data holding some of the model's classes): labels= those
    present = sorted(set(labels.tolist()))
    rp = classification_report(torch.from_numpy(logits), torch.from_numpy(labels),
                               [f"c{i}" for i in range(n_cls)], macro_over="present")
    ap, ar, af, _ = skm.precision_recall_fscore_support(labels, pred, labels=present,
                                                        average="macro", zero_division=0)
    assert close(rp["macro"]["precision"], ap) and close(rp["macro"]["recall"], ar)
    assert close(rp["macro"]["f1"], af)
    assert rp["absent_classes"] == [f"c{i}" for i in range(n_cls) if i not in present]
    assert r["confusion"] == skm.confusion_matrix(labels, pred, labels=labs).tolist()
    assert confusion_matrix(torch.from_numpy(pred), torch.from_numpy(labels),
                            n_cls).tolist() == r["confusion"]
    assert close(r["top1"], skm.accuracy_score(labels, pred)) and r["n"] == len(labels)


def sk_top_k(logits: np.ndarray, labels: np.ndarray, n_cls: int, k: int) -> float:
    """sklearn's top-k accuracy with ties going to the lower class index, as in imgcls."""
    scores = logits.astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # k >= classes: "meaningless" perfect score
        if n_cls == 2:
            # binary: sklearn takes one score and calls class 1 where it is > 0 (a tie -> 0);
            # rescaled so that its 0.5 threshold for scores inside [0, 1] never applies
            d = scores[:, 1] - scores[:, 0]
            d = d * (2 / np.abs(d).max()) if np.abs(d).max() > 0 else d
            return skm.top_k_accuracy_score(labels, d, k=k, labels=[0, 1])
        # sklearn puts the higher index first among ties: reversing the classes turns that
        # into the lower original index first
        return skm.top_k_accuracy_score(n_cls - 1 - labels, scores[:, ::-1], k=k,
                                        labels=list(range(n_cls)))


@PROPERTY
@given(labelled_logits(), st.integers(1, 9))
def test_top_k_matches_sklearn(case, k):
    logits, labels, n_cls = case
    got = top_k_accuracy(torch.from_numpy(logits), torch.from_numpy(labels), k)
    assert close(got, sk_top_k(logits, labels, n_cls, k))
    if k == 5:
        assert close(report_of(logits, labels, n_cls)["top5"], got)


@PROPERTY
@given(labelled_logits())
def test_log_loss_matches_sklearn(case):
    logits, labels, n_cls = case
    probs = scipy.special.softmax(logits.astype(np.float64), axis=1)
    want = skm.log_loss(labels, probs, labels=list(range(n_cls)))
    assert close(report_of(logits, labels, n_cls)["loss"], want)
    assert close(negative_log_likelihood(torch.from_numpy(logits), torch.from_numpy(labels)),
                 want)


def reference_bins(probs: list[list[float]], labels: list[int], n_bins: int) -> dict:
    """Equal-width bins, bin i = [i/n, (i+1)/n), the last one closed; top-1 = first maximum."""
    count, conf_sum, acc_sum = [0] * n_bins, [0.0] * n_bins, [0.0] * n_bins
    for row, y in zip(probs, labels):
        conf = max(row)
        pred = row.index(conf)
        b = None
        for i in range(n_bins):
            if i / n_bins <= conf < (i + 1) / n_bins or (i == n_bins - 1 and conf >= 1.0):
                b = i
        count[b] += 1
        conf_sum[b] += conf
        acc_sum[b] += pred == y
    conf_mean = [s / c if c else 0.0 for s, c in zip(conf_sum, count)]
    acc_mean = [s / c if c else 0.0 for s, c in zip(acc_sum, count)]
    ece = sum(c / len(labels) * abs(a - f) for c, a, f in zip(count, acc_mean, conf_mean))
    return {"count": count, "confidence": conf_mean, "accuracy": acc_mean, "ece": ece}


@st.composite
def calibration_case(draw):
    """(probabilities as a float32 or float64 tensor, labels, bins); confidences often on a bin
    edge, one or two ulps either side of it, or 1.0, and often tied top probabilities."""
    n_bins = draw(st.integers(1, 20))
    n_cls = draw(st.integers(1, 6))
    n = draw(st.integers(1, 30))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    on_edge, tied = draw(st.floats(0, 1)), draw(st.floats(0, 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows = []
    for _ in range(n):
        if rng.random() < on_edge:
            conf = dtype(rng.integers(0, n_bins + 1) / n_bins)
            step = rng.integers(-2, 3)  # ulps: toward 0 when negative, toward 2 when positive
            for _ in range(abs(step)):
                conf = np.nextafter(conf, dtype(2 if step > 0 else 0))
            conf = min(conf, dtype(1))
        else:
            conf = dtype(rng.random())
        row = rng.random(n_cls).astype(dtype) * conf
        row[rng.integers(n_cls)] = conf
        if rng.random() < tied:
            row[rng.integers(n_cls)] = conf
        rows.append(row)
    probs = torch.from_numpy(np.array(rows, dtype=dtype))
    labels = torch.from_numpy(rng.integers(0, n_cls, n))
    return probs, labels, n_bins


@PROPERTY
@given(calibration_case())
def test_ece_and_reliability_bins_match_loop_reference(case):
    probs, labels, n_bins = case
    want = reference_bins(probs.tolist(), labels.tolist(), n_bins)
    got = reliability_bins(probs, labels, n_bins)
    assert got["edges"] == [i / n_bins for i in range(n_bins + 1)]
    assert got["count"] == want["count"]
    assert all(close(a, b) for a, b in zip(got["confidence"], want["confidence"]))
    assert all(close(a, b) for a, b in zip(got["accuracy"], want["accuracy"]))
    assert close(expected_calibration_error(probs, labels, n_bins), want["ece"])


@PROPERTY
@given(labelled_logits(min_classes=1, max_classes=8), st.floats(0.05, 20), st.data())
def test_open_set_matches_scipy(case, temperature, data):
    logits, labels, _ = case
    z = logits.astype(np.float64) / temperature
    t_logits = torch.from_numpy(logits)
    correct = logits.argmax(1) == labels  # the first of tied maxima, as torch's argmax
    nan = float("nan")
    for score in ("maxprob", "energy"):
        if score == "maxprob":
            want = scipy.special.softmax(z, axis=1).max(1)
        else:
            want = temperature * scipy.special.logsumexp(z, axis=1)
        got = unknown_scores(t_logits, score, temperature)
        assert got.dtype == torch.float64
        assert all(close(a, b) for a, b in zip(got.tolist(), want.tolist()))

        # a threshold between two scores (or beyond them all), clear of rounding
        cuts = np.unique(want)
        cuts = np.concatenate([[cuts[0] - 1], (cuts[1:] + cuts[:-1]) / 2, [cuts[-1] + 1]])
        threshold = float(data.draw(st.sampled_from(cuts.tolist())))
        assume(np.abs(want - threshold).min() > TOL * max(1.0, abs(threshold)))
        keep = want >= threshold
        r = rejection_report(t_logits, torch.from_numpy(labels), threshold, score, temperature)
        assert r["rejected"] == int((~keep).sum())
        assert close(r["coverage"], keep.mean())
        assert close(r["accuracy_answered"], correct[keep].mean() if keep.any() else nan)
        assert close(r["rejected_were_wrong"],
                     (~correct[~keep]).mean() if (~keep).any() else nan)


# ---- hand-checked cases -------------------------------------------------------------------


def onehot_logits(pred: list[int], n_cls: int) -> torch.Tensor:
    z = torch.zeros(len(pred), n_cls, dtype=torch.float64)
    z[torch.arange(len(pred)), torch.tensor(pred)] = 5.0
    return z


def test_f1_when_precision_plus_recall_is_below_one():
    # class a: 7 images, 3 found; 9 predicted a, 3 right -> P = 1/3, R = 3/7,
    # F1 = 2PR / (P + R) = 0.375 (dividing by max(P + R, 1) gave 2PR = 0.286)
    labels = torch.tensor([0] * 7 + [1] * 6)
    pred = [0, 0, 0, 1, 1, 1, 1] + [0] * 6
    r = classification_report(onehot_logits(pred, 2), labels, ["a", "b"])
    a, b = r["per_class"]
    assert a["precision"] == pytest.approx(1 / 3) and a["recall"] == pytest.approx(3 / 7)
    assert a["f1"] == pytest.approx(0.375)
    assert b["f1"] == 0.0  # b: 4 predicted, none right
    assert r["macro"]["f1"] == pytest.approx(0.375 / 2)
    assert r["weighted"]["f1"] == pytest.approx(0.375 * 7 / 13)


def test_top_k_with_fewer_classes_than_k_and_ties():
    labels = torch.tensor([0, 1, 2])
    r = classification_report(torch.zeros(3, 3), labels, ["a", "b", "c"])
    assert r["top5"] == 1.0
    # all tied: argmax says class 0, and so does top-1; top-2 takes classes 0 and 1
    assert r["top1"] == pytest.approx(1 / 3)
    assert top_k_accuracy(torch.zeros(3, 3), labels, 2) == pytest.approx(2 / 3)
    one = classification_report(torch.randn(4, 1), torch.zeros(4, dtype=torch.long), ["a"])
    assert (one["top1"], one["top5"], one["macro"]["f1"], one["loss"]) == (1.0, 1.0, 1.0, 0.0)


def test_top_k_over_many_blocks_matches_sklearn():
    # more images than one block of top_k_accuracy, small integer logits: ties everywhere
    rng = np.random.default_rng(0)
    logits = rng.integers(-3, 4, (20_000, 6)).astype(np.float32)
    labels = rng.integers(0, 6, 20_000)
    for k in range(1, 7):
        got = top_k_accuracy(torch.from_numpy(logits), torch.from_numpy(labels), k)
        assert close(got, sk_top_k(logits, labels, 6, k))


def test_reliability_bin_edges_float32_and_confidence_one():
    # float32(0.7) is 0.69999998..., under the edge 0.7: bin 6 of 10 (float32 0.7 * 10 rounds
    # to 7.0); exactly 0.5 opens bin 5; 1.0 closes the last bin
    probs = torch.tensor([[0.7, 0.3], [0.5, 0.5], [1.0, 0.0]], dtype=torch.float32)
    b = reliability_bins(probs, torch.tensor([0, 1, 0]), n_bins=10)
    assert [i for i, c in enumerate(b["count"]) if c] == [5, 6, 9]
    assert b["accuracy"][5] == 0.0  # the tie goes to class 0, as argmax
    assert b["edges"][7] == 0.7


def test_empty_input_gives_nan_not_zero():
    e = torch.zeros(0, dtype=torch.long)
    r = classification_report(torch.zeros(0, 3), e, ["a", "b", "c"])
    assert r["n"] == 0 and r["confusion"] == [[0] * 3] * 3
    assert all(math.isnan(x) for x in (r["loss"], r["top1"], r["top5"], r["macro"]["f1"],
                                       r["weighted"]["f1"]))
    assert math.isnan(expected_calibration_error(torch.zeros(0, 3), e))
    assert math.isnan(rejection_report(torch.zeros(0, 3), e, 0.5)["coverage"])


def test_out_of_range_classes_are_refused():
    with pytest.raises(ValueError, match="labels"):
        classification_report(torch.zeros(2, 3), torch.tensor([0, 3]), ["a", "b", "c"])
    with pytest.raises(ValueError, match="shape"):
        classification_report(torch.zeros(2, 4), torch.tensor([0, 1]), ["a", "b", "c"])


def test_rejection_threshold_is_inclusive():
    # maxprob of [0, 0] is exactly 0.5: answered at threshold 0.5
    r = rejection_report(torch.tensor([[0.0, 0.0], [3.0, 0.0]]), torch.tensor([1, 0]), 0.5)
    assert r["coverage"] == 1.0 and r["accuracy_answered"] == 0.5
