"""Step generators on flat coordinate vectors: L-BFGS directions (for energy minimisation with a
line search) and FIRE steps (for force fields that are not gradients, such as a nudged band).

The caller caps the step (largest displacement of one atom) and decides when to stop.
"""

from __future__ import annotations

from collections import deque

import numpy as np

#: Initial inverse-Hessian guess of L-BFGS, nm^2 mol/kJ (stiff bonds ~ 1e5 kJ/mol/nm^2).
INITIAL_INVERSE_HESSIAN = 1.0 / 1.0e5
LBFGS_MEMORY = 10


class LBFGS:
    """Two-loop L-BFGS direction on a flat coordinate vector (Nocedal & Wright, Alg. 7.4)."""

    def __init__(self, memory: int = LBFGS_MEMORY) -> None:
        self.pairs: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=memory)

    def update(self, s: np.ndarray, y: np.ndarray) -> None:
        if s @ y > 1e-12:  # keep the inverse Hessian positive definite
            self.pairs.append((s, y))

    def direction(self, gradient: np.ndarray) -> np.ndarray:
        q = gradient.copy()
        alphas = []
        for s, y in reversed(self.pairs):
            alpha = (s @ q) / (y @ s)
            alphas.append(alpha)
            q -= alpha * y
        gamma = (self.pairs[-1][0] @ self.pairs[-1][1]) / (self.pairs[-1][1] @ self.pairs[-1][1]) if self.pairs \
            else INITIAL_INVERSE_HESSIAN
        r = gamma * q
        for (s, y), alpha in zip(self.pairs, reversed(alphas), strict=True):
            beta = (y @ r) / (y @ s)
            r += s * (alpha - beta)
        return -r


class FIRE:
    """Fast inertial relaxation engine (Bitzek et al., Phys. Rev. Lett. 97, 170201 (2006)), unit mass.

    Each call of :meth:`step` takes the forces at the current point and returns the displacement:
    if the power P = F·v is positive, v ← (1 − α) v + α |v| F̂ and, after ``n_min`` such steps, the
    time step grows (×``f_inc`` up to ``dt_max``) and α shrinks (×``f_alpha``); if P ≤ 0 the
    velocity is zeroed, dt ×``f_dec`` and α reset. Then v ← v + dt F and Δx = dt v.
    ``dt`` is set from the first forces so that the first step moves the atom under the largest
    force by ``first_step`` (the coordinates' length unit), which makes the method unit-free.
    """

    def __init__(self, first_step: float, dt_max_factor: float = 10.0, n_min: int = 5, f_inc: float = 1.1,
                 f_dec: float = 0.5, alpha_start: float = 0.1, f_alpha: float = 0.99) -> None:
        self.first_step = first_step
        self.dt_max_factor = dt_max_factor
        self.n_min, self.f_inc, self.f_dec = n_min, f_inc, f_dec
        self.alpha_start, self.f_alpha = alpha_start, f_alpha
        self.v: np.ndarray | None = None
        self.dt = self.dt_max = 0.0
        self.alpha = alpha_start
        self.n_positive = 0

    def step(self, forces: np.ndarray, largest_force: float) -> np.ndarray:
        if self.v is None:
            self.v = np.zeros_like(forces)
            self.dt = np.sqrt(self.first_step / max(largest_force, 1e-300))
            self.dt_max = self.dt_max_factor * self.dt
        power = forces @ self.v
        if power > 0:
            norm_f = np.linalg.norm(forces)
            self.v = (1 - self.alpha) * self.v + self.alpha * np.linalg.norm(self.v) * forces / max(norm_f, 1e-300)
            if self.n_positive > self.n_min:
                self.dt = min(self.dt * self.f_inc, self.dt_max)
                self.alpha *= self.f_alpha
            self.n_positive += 1
        else:
            self.v = np.zeros_like(forces)
            self.dt *= self.f_dec
            self.alpha = self.alpha_start
            self.n_positive = 0
        self.v = self.v + self.dt * forces
        return self.dt * self.v

    def reset_velocity(self) -> None:
        """Forget the momentum (after the landscape changed under the coordinates)."""
        if self.v is not None:
            self.v = np.zeros_like(self.v)
            self.alpha = self.alpha_start
            self.n_positive = 0

    def get_state(self) -> dict[str, np.ndarray]:
        if self.v is None:
            return {}
        return {"v": self.v, "scalars": np.array([self.dt, self.dt_max, self.alpha, self.n_positive])}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        if "v" not in state:
            return
        self.v = np.array(state["v"])
        self.dt, self.dt_max, self.alpha, n_positive = (float(v) for v in state["scalars"])
        self.n_positive = int(n_positive)
