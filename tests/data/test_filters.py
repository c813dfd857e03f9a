"""The one Gaussian low-pass (fastmixste.data.filters) against sums worked by hand, in each edge mode."""

from __future__ import annotations

import numpy as np
import pytest

from fastmixste.data.filters import EDGES, gaussian_smooth


def _kernel(sigma: float, radius: int) -> np.ndarray:
    taps = np.arange(-radius, radius + 1)
    return np.exp(-0.5 * (taps / sigma) ** 2)


@pytest.mark.parametrize("edges", EDGES)
def test_constants_stay_constant_along_any_axis(edges: str) -> None:
    const = np.full((2, 40, 3), 1.5)
    np.testing.assert_allclose(gaussian_smooth(const, 2.0, axis=1, edges=edges), const, atol=1e-12)
    np.testing.assert_array_equal(gaussian_smooth(const, 0.0, axis=1, edges=edges), const)


def test_wrap_spreads_an_impulse_by_the_kernel_around_the_ends() -> None:
    impulse = np.zeros(50)
    impulse[0] = 1.0
    out = gaussian_smooth(impulse, 2.0, edges="wrap", radius=8)
    k = _kernel(2.0, 8)
    np.testing.assert_allclose(out[np.arange(-8, 9) % 50], k / k.sum(), atol=1e-12)
    assert out.sum() == pytest.approx(1.0)


def test_hold_repeats_the_end_samples() -> None:
    x = np.array([3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    out = gaussian_smooth(x, 1.0, radius=2)  # hold is the default
    k = _kernel(1.0, 2) / _kernel(1.0, 2).sum()
    # frame 0's window is (3, 3, 3, 0, 0): the first sample repeated twice past the start
    assert out[0] == pytest.approx(3.0 * k[:3].sum())
    assert out[1] == pytest.approx(3.0 * (k[0] + k[1]))  # window (3, 3, 0, 0, 0)
    assert out[6] == 0.0


def test_renormalise_takes_the_mean_of_the_known_samples_in_the_window() -> None:
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    out = gaussian_smooth(x, 1.0, edges="renormalise", radius=1)
    k = _kernel(1.0, 1)  # (e^-0.5, 1, e^-0.5)
    assert out[0] == pytest.approx((k[1] * 1 + k[2] * 2) / (k[1] + k[2]))  # no sample before the start
    assert out[1] == pytest.approx((k[0] * 1 + k[1] * 2) / (k[0] + k[1]))  # the NaN lends no weight
    assert np.isnan(out[2])  # and stays NaN
    assert out[3] == pytest.approx((k[1] * 4 + k[2] * 5) / (k[1] + k[2]))
    assert out[4] == pytest.approx(5.0)  # symmetric neighbours of a linear ramp
    # the same along another axis, each column on its own
    cols = np.stack([x, 2 * x], axis=1)
    np.testing.assert_allclose(gaussian_smooth(cols, 1.0, edges="renormalise", radius=1)[:, 1], 2 * out)


def test_default_radius_is_three_sigma_and_bad_arguments_are_refused() -> None:
    impulse = np.zeros(31)
    impulse[15] = 1.0
    out = gaussian_smooth(impulse, 2.0)
    assert np.count_nonzero(out) == 13  # ceil(3 * 2) = 6 taps each side
    with pytest.raises(ValueError, match="edges must be one of"):
        gaussian_smooth(impulse, 2.0, edges="reflect")
    with pytest.raises(ValueError, match="radius must be >= 0"):
        gaussian_smooth(impulse, 2.0, radius=-1)
