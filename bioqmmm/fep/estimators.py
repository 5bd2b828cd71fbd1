"""Free-energy estimators between the end states of a λ-mixed Hamiltonian, each with an analytic and a
bootstrap uncertainty (kJ/mol throughout; ``kt`` = k_BT in kJ/mol).

With U(λ) = U_a + λ ΔU, ΔU = U_b − U_a, every estimator needs only ΔU of each sample:

* MBAR over λ windows (Shirts & Chodera, J. Chem. Phys. 129, 124105 (2008)), u_k(x_n) = β λ_k ΔU(x_n)
  up to a term common to all states, with its overlap matrix (Klimovich, Shirts & Mobley, J. Comput.
  Aided Mol. Des. 29, 397 (2015));
* BAR between neighbouring windows, summed (Bennett, J. Comput. Phys. 22, 245 (1976));
* one-sided exponential averaging from the low end (Zwanzig, J. Chem. Phys. 22, 1420 (1954)),
  ΔA = −k_BT ln ⟨exp(−βΔU)⟩_a, with the Kish effective sample size of its weights;
* nonequilibrium switching: Jarzynski, ΔA = −k_BT ln ⟨exp(−βW)⟩_F (Phys. Rev. Lett. 78, 2690 (1997)),
  and Crooks/BAR from forward and reverse work (Crooks, Phys. Rev. E 61, 2361 (2000); Shirts et al.,
  Phys. Rev. Lett. 91, 140601 (2003)).

Bootstrap uncertainties resample every state's samples (every direction's works) with replacement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bioqmmm.errors import CalculationError
from bioqmmm.sampling.reweighting import kish_ess, quiet_pymbar, solve_mbar


@dataclass(frozen=True)
class Estimate:
    """ΔA (kJ/mol) of one estimator with its analytic and bootstrap (None: not run) standard errors."""

    method: str
    value: float
    uncertainty: float
    bootstrap: float | None = None

    def record(self) -> dict:
        return {"value": self.value, "uncertainty": self.uncertainty, "bootstrap_uncertainty": self.bootstrap,
                "unit": "kJ/mol"}


@dataclass(frozen=True)
class WindowAnalysis:
    """MBAR and BAR over λ windows: ΔA, the free energy of every window relative to λ = 0 with its
    uncertainty, the overlap matrix, and per neighbour pair the BAR ΔA and overlap."""

    mbar: Estimate
    bar: Estimate
    state_free_energies: np.ndarray
    state_uncertainties: np.ndarray
    overlap: np.ndarray
    neighbour_overlap: np.ndarray
    neighbour_bar: np.ndarray  # (K − 1, 2): ΔA and σ of each neighbour pair


def _bootstrap(statistic: Callable[[Sequence[np.ndarray]], float], groups: Sequence[np.ndarray], count: int,
               seed: int) -> float | None:
    """Standard deviation of ``statistic`` over ``count`` resamplings of every group with replacement."""
    if count < 2:
        return None
    rng = np.random.default_rng(seed)
    values = [statistic([g[rng.integers(0, len(g), len(g))] for g in groups]) for _ in range(count)]
    return float(np.std(values, ddof=1))


def _mbar_inputs(lambdas: np.ndarray, delta_u: Sequence[np.ndarray], kt: float) -> tuple[np.ndarray, np.ndarray, float]:
    """u_kn = β λ_k (ΔU_n − shift), N_k and the shift (kJ/mol): the shift keeps exponents small; ΔA gains it back."""
    du = np.concatenate(delta_u)
    shift = float(np.mean(du))
    return np.outer(lambdas, (du - shift) / kt), np.array([len(x) for x in delta_u]), shift


def _check_windows(lambdas: np.ndarray, delta_u: Sequence[np.ndarray]) -> None:
    if len(lambdas) != len(delta_u) or len(lambdas) < 2:
        raise ValueError("give ΔU samples of at least two λ states, one array per state")
    if not (lambdas[0] == 0.0 and lambdas[-1] == 1.0 and np.all(np.diff(lambdas) > 0)):
        raise ValueError(f"λ states must rise from 0 to 1, not {list(lambdas)}")
    empty = [f"{lam:g}" for lam, x in zip(lambdas, delta_u, strict=True) if len(x) < 2]
    if empty:
        raise CalculationError(f"λ windows {', '.join(empty)} have fewer than two samples")


def windows(lambdas: Sequence[float], delta_u: Sequence[np.ndarray], kt: float, *, bootstraps: int = 0,
            seed: int = 0) -> WindowAnalysis:
    """MBAR and neighbour BAR from the ΔU samples (kJ/mol) of each λ window (λ rising from 0 to 1)."""
    lambdas = np.asarray(lambdas, dtype=float)
    delta_u = [np.asarray(x, dtype=float) for x in delta_u]
    _check_windows(lambdas, delta_u)
    u_kn, n_k, shift = _mbar_inputs(lambdas, delta_u, kt)
    mbar = solve_mbar(u_kn, n_k)
    differences = mbar.compute_free_energy_differences()
    f = kt * np.asarray(differences["Delta_f"])[0] + lambdas * shift
    df = kt * np.asarray(differences["dDelta_f"])[0]
    overlap = np.asarray(mbar.compute_overlap()["matrix"])

    def mbar_statistic(groups):
        u, n, s = _mbar_inputs(lambdas, groups, kt)
        return kt * float(solve_mbar(u, n).compute_free_energy_differences()["Delta_f"][0, -1]) + s

    pairs = np.array([bar_pair(lambdas[k + 1] - lambdas[k], delta_u[k], delta_u[k + 1], kt)
                      for k in range(len(lambdas) - 1)])

    def bar_statistic(groups):
        return sum(bar_pair(lambdas[k + 1] - lambdas[k], groups[k], groups[k + 1], kt)[0]
                   for k in range(len(lambdas) - 1))

    pair_overlap = np.array([overlap[k, k + 1] for k in range(len(lambdas) - 1)])
    return WindowAnalysis(
        mbar=Estimate("MBAR", float(f[-1]), float(df[-1]), _bootstrap(mbar_statistic, delta_u, bootstraps, seed)),
        bar=Estimate("BAR", float(pairs[:, 0].sum()), float(np.sqrt((pairs[:, 1] ** 2).sum())),
                     _bootstrap(bar_statistic, delta_u, bootstraps, seed + 1)),
        state_free_energies=f, state_uncertainties=df, overlap=overlap, neighbour_overlap=pair_overlap,
        neighbour_bar=pairs,
    )


def bar_pair(step: float, du_low: np.ndarray, du_high: np.ndarray, kt: float) -> tuple[float, float]:
    """BAR ΔA and σ (kJ/mol) between λ and λ + ``step`` from ΔU samples of both states."""
    return bar(step * du_low, -step * du_high, kt)


def bar(work_forward: np.ndarray, work_reverse: np.ndarray, kt: float) -> tuple[float, float]:
    """BAR/Crooks ΔA and its analytic σ (kJ/mol) from forward works (a → b) and reverse works (b → a)."""
    shift = float(np.mean(work_forward))
    result = quiet_pymbar().other_estimators.bar((np.asarray(work_forward) - shift) / kt,
                                           (np.asarray(work_reverse) + shift) / kt,
                                           relative_tolerance=1e-12, maximum_iterations=100000)
    return kt * float(result["Delta_f"]) + shift, kt * float(result["dDelta_f"])


def work_overlap(work_forward: np.ndarray, work_reverse: np.ndarray, kt: float) -> float:
    """Overlap of forward and reverse work distributions: the off-diagonal element O_ab of the two-state
    MBAR overlap matrix (the same measure as a pair of λ windows'), MBAR started from the BAR solution.
    pymbar's ``bar_overlap`` is not used: it asserts that MBAR reproduces BAR, which fails exactly when the
    overlap is poor. A solution that cannot be found counts as no overlap."""
    forward = np.asarray(work_forward, dtype=float)
    reverse = np.asarray(work_reverse, dtype=float)
    shift = float(np.mean(forward))
    u_kn = np.zeros((2, len(forward) + len(reverse)))
    u_kn[1, :len(forward)] = (forward - shift) / kt  # forward samples (from a): reduced energy in b relative to a
    u_kn[0, len(forward):] = (reverse + shift) / kt  # reverse samples (from b): reduced energy in a relative to b
    delta, _ = bar(forward, reverse, kt)
    try:
        mbar = solve_mbar(u_kn, np.array([len(forward), len(reverse)]), np.array([0.0, (delta - shift) / kt]))
        overlap = float(np.asarray(mbar.compute_overlap()["matrix"])[0, 1])
    except Exception:  # noqa: BLE001 (pymbar raises assertion, parameter and linear-algebra errors alike)
        return 0.0
    return overlap if np.isfinite(overlap) else 0.0


def exponential(work: np.ndarray, kt: float, *, bootstraps: int = 0, seed: int = 0,
                method: str = "Zwanzig") -> tuple[Estimate, float]:
    """−k_BT ln ⟨exp(−βW)⟩ of ``work`` (ΔU of end-state samples, or switching works, kJ/mol) with its
    analytic σ (the delta method, pymbar's ``exp``) and the Kish effective sample size of its weights."""
    work = np.asarray(work, dtype=float)
    if len(work) < 2:
        raise CalculationError(f"{method}: fewer than two samples")

    def statistic(groups):
        return float(-kt * (np.log(np.mean(np.exp(-(groups[0] - groups[0].min()) / kt)))) + groups[0].min())

    result = quiet_pymbar().other_estimators.exp(work / kt)
    estimate = Estimate(method, kt * float(result["Delta_f"]), kt * float(result["dDelta_f"]),
                        _bootstrap(statistic, [work], bootstraps, seed))
    return estimate, kish_ess(-work / kt)
