"""Cartesian Coulomb interaction tensors, bare and Ewald-screened, up to third order.

For a radial kernel f(r) the derivatives with respect to the field point x (r = |x|) are

    d_a f       = -x_a B1
    d_a d_b f   =  x_a x_b B2 - delta_ab B1
    d_a d_b d_c f = -x_a x_b x_c B3 + (delta_ab x_c + delta_ac x_b + delta_bc x_a) B2

with B0 = f and, for the Ewald real-space kernel erfc(alpha r)/r,
B_n = [(2n - 1) B_{n-1} + (2 alpha^2)^n exp(-alpha^2 r^2) / (alpha sqrt(pi))] / r^2
(W. Smith, CCP5 Newsletter 46, 18 (1998)); for the bare kernel 1/r the exponential term
is absent. The sums over sources are compiled loops (numba). The reciprocal-space part of the
periodic kernel is handled by :class:`bioqmmm.qmmm.far_field.EwaldFarField`. Units are whatever the
caller uses (here nm and e).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np


@dataclass(frozen=True)
class FieldTensors:
    """phi, grad phi, grad grad phi, grad^3 phi at one point (sum over sources)."""

    t0: float
    t1: np.ndarray
    t2: np.ndarray
    t3: np.ndarray

    def __add__(self, other: FieldTensors) -> FieldTensors:
        return FieldTensors(self.t0 + other.t0, self.t1 + other.t1, self.t2 + other.t2, self.t3 + other.t3)

    def scaled(self, factor: float) -> FieldTensors:
        return FieldTensors(self.t0 * factor, self.t1 * factor, self.t2 * factor, self.t3 * factor)


@numba.njit(cache=True, inline="always")
def _radial(r2: float, alpha: float) -> tuple[float, float, float, float]:
    """B_0..B_3 at squared distance r2; alpha = 0 gives the bare 1/r kernel."""
    r = math.sqrt(r2)
    inv_r2 = 1.0 / r2
    if alpha > 0.0:
        gauss = math.exp(-alpha * alpha * r2) / (alpha * math.sqrt(math.pi))
        a2 = 2.0 * alpha * alpha
        b0 = math.erfc(alpha * r) / r
        b1 = (b0 + a2 * gauss) * inv_r2
        b2 = (3.0 * b1 + a2 * a2 * gauss) * inv_r2
        b3 = (5.0 * b2 + a2 * a2 * a2 * gauss) * inv_r2
    else:
        b0 = 1.0 / r
        b1 = b0 * inv_r2
        b2 = 3.0 * b1 * inv_r2
        b3 = 5.0 * b2 * inv_r2
    return b0, b1, b2, b3


@numba.njit(cache=True)
def _point_tensors(shift: np.ndarray, x: np.ndarray, q: np.ndarray, alpha: float, r_max2: float):
    """t0..t3 at field offsets shift + x_j from the sources (see :func:`point_tensors_at`), one centre."""
    # moments of the sources: sum q B_n x^k, symmetric parts only (10 of the 27 third-order terms)
    s0 = s1b = 0.0
    s1 = np.zeros(3)
    v2 = np.zeros(3)  # sum q B2 x
    s2 = np.zeros((3, 3))
    s3 = np.zeros((3, 3, 3))
    for j in range(len(q)):
        x0, x1, x2 = x[j, 0] + shift[0], x[j, 1] + shift[1], x[j, 2] + shift[2]
        r2 = x0 * x0 + x1 * x1 + x2 * x2
        if r2 >= r_max2:
            continue
        b0, b1, b2, b3 = _radial(r2, alpha)
        qj = q[j]
        s0 += qj * b0
        s1b += qj * b1
        c1, c2, c3 = qj * b1, qj * b2, qj * b3
        s1[0] += c1 * x0
        s1[1] += c1 * x1
        s1[2] += c1 * x2
        v2[0] += c2 * x0
        v2[1] += c2 * x1
        v2[2] += c2 * x2
        s2[0, 0] += c2 * x0 * x0
        s2[0, 1] += c2 * x0 * x1
        s2[0, 2] += c2 * x0 * x2
        s2[1, 1] += c2 * x1 * x1
        s2[1, 2] += c2 * x1 * x2
        s2[2, 2] += c2 * x2 * x2
        s3[0, 0, 0] += c3 * x0 * x0 * x0
        s3[0, 0, 1] += c3 * x0 * x0 * x1
        s3[0, 0, 2] += c3 * x0 * x0 * x2
        s3[0, 1, 1] += c3 * x0 * x1 * x1
        s3[0, 1, 2] += c3 * x0 * x1 * x2
        s3[0, 2, 2] += c3 * x0 * x2 * x2
        s3[1, 1, 1] += c3 * x1 * x1 * x1
        s3[1, 1, 2] += c3 * x1 * x1 * x2
        s3[1, 2, 2] += c3 * x1 * x2 * x2
        s3[2, 2, 2] += c3 * x2 * x2 * x2
    t2 = np.zeros((3, 3))
    t3 = np.zeros((3, 3, 3))
    for a in range(3):
        for b in range(3):
            t2[a, b] = s2[min(a, b), max(a, b)] - (s1b if a == b else 0.0)
            for c in range(3):
                i, j, k = sorted((a, b, c))
                t3[a, b, c] = -s3[i, j, k]
                # (delta_ab x_c + delta_ac x_b + delta_bc x_a) B2
                t3[a, b, c] += (v2[c] if a == b else 0.0) + (v2[b] if a == c else 0.0) + (v2[a] if b == c else 0.0)
    return s0, -s1, t2, t3


@numba.njit(cache=True, parallel=True)
def _point_tensors_at(shifts: np.ndarray, x: np.ndarray, q: np.ndarray, alpha: float, r_max2: float):
    k = len(shifts)
    t0, t1, t2, t3 = np.empty(k), np.empty((k, 3)), np.empty((k, 3, 3)), np.empty((k, 3, 3, 3))
    for c in numba.prange(k):
        t0[c], t1[c], t2[c], t3[c] = _point_tensors(shifts[c], x, q, alpha, r_max2)
    return t0, t1, t2, t3


def point_tensors_at(shifts: np.ndarray, x: np.ndarray, q: np.ndarray, alpha: float | None,
                     r_max: float = math.inf) -> FieldTensors:
    """Potential derivatives at k field points of sources q, the field point c minus source j being
    shifts[c] + x[j]; tensors with a leading axis k (t0 (k,), t1 (k, 3), ...). alpha: Ewald real-space
    kernel erfc(alpha r)/r, None for the bare 1/r; pairs at r_max or farther are left out (the screened
    kernel's cutoff)."""
    return FieldTensors(*_point_tensors_at(np.ascontiguousarray(shifts, dtype=float).reshape(-1, 3),
                                           np.ascontiguousarray(x, dtype=float).reshape(-1, 3),
                                           np.ascontiguousarray(q, dtype=float), alpha or 0.0, r_max * r_max))


def point_tensors(x: np.ndarray, q: np.ndarray, alpha: float | None) -> FieldTensors:
    """Potential derivatives at the origin of sources q at -x (x = field point - source);
    alpha: Ewald real-space kernel erfc(alpha r)/r, None for the bare 1/r."""
    t = point_tensors_at(np.zeros((1, 3)), x, q, alpha)
    return FieldTensors(float(t.t0[0]), t.t1[0], t.t2[0], t.t3[0])


@numba.njit(cache=True, inline="always")
def _response(x0: float, x1: float, x2: float, m0: float, m1: np.ndarray, m2: np.ndarray, alpha: float):
    """U and grad_x U of the multipole for one unit source at -x (see :func:`multipole_response`)."""
    b0, b1, b2, b3 = _radial(x0 * x0 + x1 * x1 + x2 * x2, alpha)
    tr = m2[0, 0] + m2[1, 1] + m2[2, 2]
    m1x = x0 * m1[0] + x1 * m1[1] + x2 * m1[2]
    m2x0 = x0 * m2[0, 0] + x1 * m2[1, 0] + x2 * m2[2, 0]
    m2x1 = x0 * m2[0, 1] + x1 * m2[1, 1] + x2 * m2[2, 1]
    m2x2 = x0 * m2[0, 2] + x1 * m2[1, 2] + x2 * m2[2, 2]
    xm2x = x0 * m2x0 + x1 * m2x1 + x2 * m2x2
    u = m0 * b0 - m1x * b1 + 0.5 * (xm2x * b2 - tr * b1)
    radial = -m0 * b1 + m1x * b2 + 0.5 * (tr * b2 - xm2x * b3)
    return (u, radial * x0 - b1 * m1[0] + b2 * m2x0, radial * x1 - b1 * m1[1] + b2 * m2x1,
            radial * x2 - b1 * m1[2] + b2 * m2x2)


@numba.njit(cache=True, parallel=True)
def _multipole_response(shifts, x, m0, m1, m2, alpha, r_max2):
    n = len(x)
    u = np.zeros(n)
    g = np.zeros((n, 3))
    for j in numba.prange(n):
        for c in range(len(shifts)):
            x0, x1, x2 = x[j, 0] + shifts[c, 0], x[j, 1] + shifts[c, 1], x[j, 2] + shifts[c, 2]
            if x0 * x0 + x1 * x1 + x2 * x2 >= r_max2:
                continue
            uj, g0, g1, g2 = _response(x0, x1, x2, m0[c], m1[c], m2[c], alpha)
            u[j] += uj
            g[j, 0] += g0
            g[j, 1] += g1
            g[j, 2] += g2
    return u, g


def multipole_response_sum(
    shifts: np.ndarray, x: np.ndarray, m0: np.ndarray, m1: np.ndarray, m2: np.ndarray, alpha: float | None,
    r_max: float = math.inf,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`multipole_response` of k multipoles (m0 (k,), m1 (k, 3), m2 (k, 3, 3)) summed, multipole c
    seeing source j at field offset shifts[c] + x[j]; pairs at r_max or farther are left out."""
    return _multipole_response(np.ascontiguousarray(shifts, dtype=float).reshape(-1, 3),
                               np.ascontiguousarray(x, dtype=float).reshape(-1, 3),
                               np.ascontiguousarray(m0, dtype=float).reshape(-1),
                               np.ascontiguousarray(m1, dtype=float).reshape(-1, 3),
                               np.ascontiguousarray(m2, dtype=float).reshape(-1, 3, 3), alpha or 0.0, r_max * r_max)


def multipole_response(
    x: np.ndarray, m0: float, m1: np.ndarray, m2: np.ndarray, alpha: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Energy per unit source charge and its gradient for sources at -x (field point origin).

    A multipole (m0, m1, m2) at the field point interacts with a unit charge through
    U = m0 f + m1 . grad f + 1/2 m2 : grad grad f (f evaluated at x). Returns U (n,)
    and G = grad_x U (n, 3); the force on the source is +G times its charge.
    """
    return multipole_response_sum(np.zeros((1, 3)), x, m0, m1, m2, alpha)
