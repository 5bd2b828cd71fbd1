"""Analytic model surfaces for checking path and saddle-point methods."""

from __future__ import annotations

import numpy as np

# Müller & Brown, Theor. Chim. Acta 53, 75 (1979), eq. 1 and Table 1.
_A = np.array([-200.0, -100.0, -170.0, 15.0])
_a = np.array([-1.0, -1.0, -6.5, 0.7])
_b = np.array([0.0, 0.0, 11.0, 0.6])
_c = np.array([-10.0, -10.0, -6.5, 0.7])
_x0 = np.array([1.0, 0.0, -0.5, -1.0])
_y0 = np.array([0.0, 0.5, 1.5, 1.0])


def muller_brown(positions: np.ndarray) -> tuple[float, np.ndarray]:
    """Müller–Brown potential of one particle, V(x, y) = Σ_k A_k exp(a_k Δx² + b_k Δx Δy + c_k Δy²).

    ``positions`` is (1, 3) (z is ignored and feels no force); returns V and the (1, 3) force −∇V.
    """
    x, y = positions[0, 0], positions[0, 1]
    dx, dy = x - _x0, y - _y0
    terms = _A * np.exp(_a * dx**2 + _b * dx * dy + _c * dy**2)
    gx = np.sum(terms * (2 * _a * dx + _b * dy))
    gy = np.sum(terms * (_b * dx + 2 * _c * dy))
    return float(terms.sum()), np.array([[-gx, -gy, 0.0]])
