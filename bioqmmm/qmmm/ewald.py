"""Cartesian Coulomb interaction tensors, bare and Ewald-screened, up to third order.

For a radial kernel f(r) the derivatives with respect to the field point x (r = |x|) are

    d_a f       = -x_a B1
    d_a d_b f   =  x_a x_b B2 - delta_ab B1
    d_a d_b d_c f = -x_a x_b x_c B3 + (delta_ab x_c + delta_ac x_b + delta_bc x_a) B2

with B0 = f and, for the Ewald real-space kernel erfc(alpha r)/r,
B_n = [(2n - 1) B_{n-1} + (2 alpha^2)^n exp(-alpha^2 r^2) / (alpha sqrt(pi))] / r^2
(W. Smith, CCP5 Newsletter 46, 18 (1998)); for the bare kernel 1/r the exponential term
is absent. The reciprocal-space part of the periodic kernel is handled by
:class:`ReciprocalSum`. Units are whatever the caller uses (here nm and e).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import erfc


def radial_b(r: np.ndarray, alpha: float | None, order: int = 3) -> list[np.ndarray]:
    """B_0..B_order at distances r; alpha=None gives the bare 1/r kernel."""
    inv_r2 = 1.0 / (r * r)
    if alpha is None:
        b = [1.0 / r]
        gauss = None
    else:
        b = [erfc(alpha * r) / r]
        gauss = np.exp(-((alpha * r) ** 2)) / (alpha * math.sqrt(math.pi))
    for n in range(1, order + 1):
        term = (2 * n - 1) * b[-1]
        if gauss is not None:
            term = term + (2 * alpha * alpha) ** n * gauss
        b.append(term * inv_r2)
    return b


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


def point_tensors(x: np.ndarray, q: np.ndarray, alpha: float | None) -> FieldTensors:
    """Potential derivatives at the origin of sources q at -x (x = field point - source)."""
    if len(q) == 0:
        return FieldTensors(0.0, np.zeros(3), np.zeros((3, 3)), np.zeros((3, 3, 3)))
    b0, b1, b2, b3 = radial_b(np.sqrt(np.einsum("ja,ja->j", x, x)), alpha)
    eye = np.eye(3)
    t1 = -((q * b1) @ x)
    qxb2 = (q * b2) @ x
    t2 = x.T @ ((q * b2)[:, None] * x) - eye * np.sum(q * b1)
    xx = (x[:, :, None] * x[:, None, :]).reshape(-1, 9)
    t3 = -(((q * b3)[:, None] * x).T @ xx).reshape(3, 3, 3)
    t3 += np.einsum("ab,c->abc", eye, qxb2) + np.einsum("ac,b->abc", eye, qxb2) + np.einsum("bc,a->abc", eye, qxb2)
    return FieldTensors(float(np.sum(q * b0)), t1, t2, t3)


def multipole_response(x: np.ndarray, m0: float, m1: np.ndarray, m2: np.ndarray, alpha: float | None):
    """Energy per unit source charge and its gradient for sources at -x (field point origin).

    A multipole (m0, m1, m2) at the field point interacts with a unit charge through
    U = m0 f + m1 . grad f + 1/2 m2 : grad grad f (f evaluated at x). Returns U (n,)
    and G = grad_x U (n, 3); the force on the source is +G times its charge.
    """
    b0, b1, b2, b3 = radial_b(np.sqrt(np.einsum("ja,ja->j", x, x)), alpha)
    m1x = x @ m1
    m2x = x @ m2
    xm2x = np.einsum("ja,ja->j", m2x, x)
    tr = np.trace(m2)
    u = m0 * b0 - m1x * b1 + 0.5 * (xm2x * b2 - tr * b1)
    g = -m0 * b1[:, None] * x
    g += (m1x * b2)[:, None] * x - b1[:, None] * m1
    g += 0.5 * ((-xm2x * b3 + tr * b2)[:, None] * x + 2.0 * b2[:, None] * m2x)
    return u, g


class ReciprocalSum:
    """Reciprocal-space part of the Ewald kernel for one periodic box.

    psi_rec(x) = sum_{k != 0} A_k cos(k . x) - pi / (alpha^2 V) with
    A_k = (4 pi / V) exp(-k^2 / (4 alpha^2)) / k^2, summed over a half space (factor 2).
    """

    def __init__(self, box: np.ndarray, alpha: float, tolerance: float) -> None:
        volume = abs(np.linalg.det(box))
        recip = 2.0 * np.pi * np.linalg.inv(box).T  # rows: reciprocal vectors
        k_max = 2.0 * alpha * math.sqrt(-math.log(tolerance))
        n_max = [int(math.ceil(k_max / np.linalg.norm(b))) for b in recip]
        grid = np.array(np.meshgrid(*[np.arange(-n, n + 1) for n in n_max], indexing="ij")).reshape(3, -1).T
        half = (grid[:, 0] > 0) | ((grid[:, 0] == 0) & ((grid[:, 1] > 0) | ((grid[:, 1] == 0) & (grid[:, 2] > 0))))
        k = grid[half] @ recip
        k2 = np.einsum("ka,ka->k", k, k)
        keep = k2 <= k_max * k_max
        self.k = k[keep]
        k2 = k2[keep]
        self.amplitude = 2.0 * (4.0 * np.pi / volume) * np.exp(-k2 / (4.0 * alpha * alpha)) / k2
        self.background = -np.pi / (alpha * alpha * volume)

    def phases(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """cos(k . x) and sin(k . x), (n, K) each, for displacements x = field point - source.

        Computed once per geometry and shared by :meth:`tensors` and :meth:`multipole_gradient`.
        """
        theta = x @ self.k.T
        return np.cos(theta), np.sin(theta)

    def tensors(self, phases: tuple[np.ndarray, np.ndarray], q: np.ndarray) -> FieldTensors:
        """Potential derivatives at the field point of sources q, given their :meth:`phases`."""
        cos, sin = phases
        s_cos = q @ cos
        s_sin = q @ sin
        a, k = self.amplitude, self.k
        t0 = float(a @ s_cos) + self.background * float(np.sum(q))
        t1 = -np.einsum("k,ka->a", a * s_sin, k)
        t2 = -np.einsum("k,ka,kb->ab", a * s_cos, k, k)
        t3 = np.einsum("k,ka,kb,kc->abc", a * s_sin, k, k, k)
        return FieldTensors(t0, t1, t2, t3)

    def multipole_gradient(
        self, phases: tuple[np.ndarray, np.ndarray], m0: float, m1: np.ndarray, m2: np.ndarray
    ) -> np.ndarray:
        """grad_x U for U = m0 psi + m1 . grad psi + 1/2 m2 : grad grad psi (reciprocal part), (n, 3)."""
        cos, sin = phases
        kmk = np.einsum("ka,ab,kb->k", self.k, m2, self.k)
        sin_coef = (self.amplitude * (0.5 * kmk - m0))[:, None] * self.k
        cos_coef = -(self.amplitude * (self.k @ m1))[:, None] * self.k
        return sin @ sin_coef + cos @ cos_coef
