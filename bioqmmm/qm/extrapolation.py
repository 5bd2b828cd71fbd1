"""SCF guesses extrapolated along an MD trajectory: Kolafa's always-stable predictor (ASPC).

Along a trajectory sampled at equal steps the converged density is a smooth function of time,
so a polynomial extrapolation of the last n densities is a much better SCF guess than the last
one alone (J. Kolafa, J. Comput. Chem. 25, 335 (2004), eq. 7):

    D_pred(t + h) = sum_{j=1..n} B_j D(t + h - j h),
    B_j = (-1)^(j+1) j C(2n, n - j) / C(2n - 2, n - 1)

(n = 1: the previous density; n = 2: linear; n = 4: 2.8, -2.8, 1.2, -0.2). Atom-centred basis
functions move with the atoms, so the densities are extrapolated in the Löwdin-orthogonalised
basis, P = S^1/2 D S^1/2, which changes smoothly with the geometry, and mapped back with the
new overlap: D_guess = S^-1/2 P_pred S^-1/2. The guess only starts the SCF, which is then
converged to the engine's tolerance, so the energy and forces do not depend on it beyond that.

Extrapolation is used only when the call continues an equally spaced sequence of OpenMM step
counts (an MD or multiple-time-step run); any other call (an optimiser, a re-evaluation, a new
trajectory) starts from the previous density alone, mapped to the new geometry the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from math import comb

import numpy as np


def aspc_coefficients(n: int) -> np.ndarray:
    """Kolafa's B_1..B_n for n past values, newest first (they sum to 1)."""
    return np.array([(-1) ** (j + 1) * j * comb(2 * n, n - j) / comb(2 * n - 2, n - 1) for j in range(1, n + 1)])


#: Smallest overlap eigenvalue for which S^-1/2 is used (PySCF's linear-dependence threshold).
LINEAR_DEPENDENCE = 1e-8


def _overlap_roots(overlap: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """S^1/2 and S^-1/2 of a symmetric positive-definite overlap (None when nearly singular)."""
    values, vectors = np.linalg.eigh(overlap)
    inverse = (vectors / np.sqrt(values)) @ vectors.T if values.min() > LINEAR_DEPENDENCE else None
    return (vectors * np.sqrt(values)) @ vectors.T, inverse


@dataclass
class _Entry:
    step: int | None
    density: np.ndarray  # Löwdin-orthogonalised, (nao, nao) or (2, nao, nao)


class DensityExtrapolator:
    """The last ``history`` converged densities of one QM region and the guess they predict.

    ``key`` identifies the region (atoms, charge, multiplicity): a new key drops the history.
    """

    def __init__(self, history: int) -> None:
        if history < 1:
            raise ValueError(f"the density history must hold at least one density, got {history}")
        self.history = history
        self._key: tuple | None = None
        self._entries: list[_Entry] = []

    def clear(self) -> None:
        self._key, self._entries = None, []

    def _continues(self, step: int | None) -> int:
        """How many stored densities lie on an equally spaced sequence that ``step`` continues."""
        steps = [e.step for e in self._entries]
        if step is None or not steps or steps[-1] is None or step <= steps[-1]:
            return 0
        spacing = step - steps[-1]
        count = 1
        while count < len(steps) and steps[-count - 1] is not None and steps[-count] - steps[-count - 1] == spacing:
            count += 1
        return count

    def guess(self, key: tuple, overlap: np.ndarray, step: int | None) -> np.ndarray | None:
        """AO density guess at the geometry with this ``overlap``; None without a history (or with a
        nearly linearly dependent basis)."""
        if key != self._key or not self._entries:
            return None
        n = max(self._continues(step), 1)
        coefficients = aspc_coefficients(n)
        predicted = sum(b * e.density for b, e in zip(coefficients, reversed(self._entries[-n:]), strict=True))
        _, inverse_root = _overlap_roots(overlap)
        if inverse_root is None:  # near-linear dependence: S^-1/2 would amplify noise; start cold
            return None
        return inverse_root @ predicted @ inverse_root

    def add(self, key: tuple, overlap: np.ndarray, density: np.ndarray, step: int | None) -> None:
        """Store the converged AO ``density`` of ``step``."""
        root, _ = _overlap_roots(overlap)
        if key == self._key and self._entries and step is not None and step == self._entries[-1].step:
            self._entries[-1] = _Entry(step, root @ density @ root)  # same step again (a barostat trial)
            return
        kept = self._continues(step) if key == self._key else 0
        self._entries = [*self._entries[len(self._entries) - kept :], _Entry(step, root @ density @ root)]
        self._entries = self._entries[-self.history :]
        self._key = key

    def get_state(self) -> dict[str, np.ndarray]:
        """Arrays that restore the history exactly (for checkpoints)."""
        if not self._entries:
            return {}
        steps = [-1 if e.step is None else e.step for e in self._entries]
        return {
            "history_key": np.array(json.dumps(list(self._key))),
            "history_steps": np.array(steps),
            "history_densities": np.stack([e.density for e in self._entries]),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`get_state`."""
        if "history_key" not in state:
            self.clear()
            return
        symbols, charge, multiplicity = json.loads(str(state["history_key"]))
        self._key = (tuple(symbols), charge, multiplicity)
        self._entries = [
            _Entry(None if s < 0 else int(s), np.array(d))
            for s, d in zip(state["history_steps"], state["history_densities"], strict=True)
        ][-self.history :]
