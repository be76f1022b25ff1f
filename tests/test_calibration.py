"""The calibration temperature: fitted within bounds (equal to a reference optimiser), and left
at 1 with a reason when the validation split is too small or too easy to fit it."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from imgcls.metrics.calibration import (
    MIN_VAL_ERRORS,
    MIN_VAL_IMAGES,
    TEMPERATURE_BOUNDS,
    calibration_temperature,
    fit_temperature,
)


def nll(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    return float(-log_softmax(logits / t, axis=1)[np.arange(len(labels)), labels].mean())


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 300), k=st.integers(2, 12), scale=st.floats(0.01, 30),
       seed=st.integers(0, 2**31 - 1))
def test_fit_equals_a_reference_optimiser(n, k, scale, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * scale
    labels = rng.integers(0, k, n)
    t = fit_temperature(torch.from_numpy(logits), torch.from_numpy(labels))
    lo, hi = TEMPERATURE_BOUNDS
    assert lo <= t <= hi
    ref = minimize_scalar(lambda x: nll(logits, labels, x), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-10})
    assert nll(logits, labels, t) <= ref.fun + 1e-9


def test_a_perfect_validation_split_keeps_t_1():
    """All val images right: the NLL falls towards T = 0, where every probability is 0 or 1."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 4
    logits = torch.randn(400, 4, generator=g)
    logits[torch.arange(400), labels] += 6  # every one right
    assert fit_temperature(logits, labels) == pytest.approx(TEMPERATURE_BOUNDS[0], rel=1e-3)
    t, why = calibration_temperature(logits, labels)
    assert t == 1.0
    assert why == ("temperature left at 1: the model gets 400 of 400 val images right, too few "
                   f"mistakes to fit it (at least {MIN_VAL_ERRORS})")


def test_a_small_validation_split_keeps_t_1():
    logits = torch.randn(36, 2)
    t, why = calibration_temperature(logits, logits.argmin(1))  # all wrong, but only 36
    assert t == 1.0 and "36 val images are too few" in why and str(MIN_VAL_IMAGES) in why


def test_an_overconfident_model_is_fitted_and_says_so():
    g = torch.Generator().manual_seed(0)
    true_logits = 2 * torch.randn(2000, 5, generator=g)
    labels = torch.multinomial(true_logits.softmax(1), 1, generator=g).flatten()
    t, why = calibration_temperature(4 * true_logits, labels)
    assert 3 < t < 5 and why == f"temperature {t:.3f} fitted on 2000 val images"


def test_an_unbounded_fit_stops_at_the_bound_and_says_so():
    labels = torch.arange(200) % 2
    logits = torch.zeros(200, 2)
    logits[torch.arange(200), labels] = 0.01  # right, barely: the NLL wants T -> 0
    logits[:20] = logits[:20].flip(1) * 0.01  # 20 wrong by a hair
    t, why = calibration_temperature(logits, labels)
    assert t == pytest.approx(TEMPERATURE_BOUNDS[0], rel=1e-3) and "(at its bound)" in why
