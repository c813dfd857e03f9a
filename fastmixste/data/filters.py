"""The package's one Gaussian low-pass along time, for every caller: motion synthesis (edges held, or periodic
noise), the video path's blend with a detector's 3D (edges held), the root trajectory and the real-data check's
reference (weights renormalised at the ends and around missing frames).

numpy only (scipy is not a dependency); centred, zero-phase, truncated at ``radius`` taps each side.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["EDGES", "gaussian_smooth", "gaussian_weights"]

#: How the window is completed where it runs past the ends (and, for "renormalise", over missing samples).
EDGES = ("hold", "renormalise", "wrap")


def gaussian_weights(sigma: float, radius: int | None = None) -> np.ndarray:
    """(2 radius + 1,) unnormalised Gaussian weights of ``sigma`` samples at offsets -radius..radius (default radius
    ``max(1, ceil(3 sigma))``); ``sigma`` <= 0: the single weight 1."""
    if not sigma > 0:
        return np.ones(1)
    r = max(1, math.ceil(3 * sigma)) if radius is None else int(radius)
    if r < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    return np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)


def gaussian_smooth(
    x: np.ndarray, sigma: float, *, axis: int = 0, edges: str = "hold", radius: int | None = None
) -> np.ndarray:
    """(..., T, ...) -> same shape, float64: a Gaussian low-pass of ``sigma`` samples along ``axis``.

    ``radius`` taps each side (default ``max(1, ceil(3 sigma))``). ``edges``:

    - ``"hold"``: the first and last samples repeated past the ends (a constant stays constant);
    - ``"renormalise"``: each output is the weighted mean of the finite samples within the window, so the weights
      are renormalised at the ends and around NaN/inf samples, which stay NaN and lend no weight;
    - ``"wrap"``: the signal taken as periodic (by FFT).

    ``sigma`` <= 0 or fewer than 2 samples: a copy of ``x``.
    """
    if edges not in EDGES:
        raise ValueError(f"edges must be one of {EDGES}, got {edges!r}")
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    T = x.shape[-1]
    if not sigma > 0 or T < 2:
        return np.moveaxis(x.copy(), -1, axis)
    weights = gaussian_weights(sigma, radius)
    r = len(weights) // 2
    taps = np.arange(-r, r + 1)
    if edges == "wrap":
        weights /= weights.sum()
        kernel = np.zeros(T)
        np.add.at(kernel, taps % T, weights)
        out = np.fft.irfft(np.fft.rfft(x, axis=-1) * np.fft.rfft(kernel), n=T, axis=-1)
    elif edges == "hold":
        weights /= weights.sum()
        padded = np.concatenate([np.repeat(x[..., :1], r, -1), x, np.repeat(x[..., -1:], r, -1)], -1)
        out = np.zeros_like(x)
        for j, w in enumerate(weights):
            out += w * padded[..., j : j + T]
    else:
        known = np.isfinite(x)
        zeros = np.zeros((*x.shape[:-1], r))
        values = np.concatenate([zeros, np.where(known, x, 0.0), zeros], -1)
        present = np.concatenate([zeros, known.astype(np.float64), zeros], -1)
        num, den = np.zeros_like(x), np.zeros_like(x)
        for j, w in enumerate(weights):
            num += w * values[..., j : j + T]
            den += w * present[..., j : j + T]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(known, num / den, np.nan)
    return np.moveaxis(out, -1, axis)
