"""A free-energy difference with the diagnostics that say whether it can be trusted.

Every result carries the estimate reported (MBAR for λ windows, Crooks/BAR for switching in both
directions, Jarzynski for one direction), the other estimators as cross-checks, and a list of
:class:`Check` s. A failed critical check (neighbour overlap, effective sample size, forward/backward
time convergence, work-distribution overlap) makes the result untrusted and names the number that
failed; it is never a bare number.

Thresholds (:class:`Thresholds`): neighbour overlap ≥ 0.03 (Klimovich, Shirts & Mobley, J. Comput.
Aided Mol. Des. 29, 397 (2015)); Kish effective sample size of exponential averages ≥ 10 (the
estimate rests on fewer samples than that otherwise); the estimates from the first and second halves
of the data within 3 combined standard errors (a drift beyond the statistical noise means the samples
are not equilibrated or the estimate is biased; Yang, Bitetti-Putzer & Karplus, J. Chem. Phys. 120,
9450 (2004) for the forward/backward practice).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bioqmmm.errors import CalculationError
from bioqmmm.fep import estimators
from bioqmmm.fep.estimators import Estimate
from bioqmmm.sampling.reweighting import quiet_pymbar

#: Fractions of the data at which the time-convergence series is evaluated.
CONVERGENCE_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class Thresholds:
    """What a trusted estimate needs (defaults in the module docstring)."""

    min_overlap: float = 0.03
    min_ess: float = 10.0
    max_sigmas: float = 3.0


@dataclass(frozen=True)
class Check:
    """One diagnostic: its ``value`` against ``threshold``; ``critical`` checks decide trust."""

    name: str
    value: float
    threshold: float
    passed: bool
    message: str
    critical: bool = True

    def record(self) -> dict:
        return {"name": self.name, "value": self.value, "threshold": self.threshold, "passed": self.passed,
                "critical": self.critical, "message": self.message}


@dataclass
class FreeEnergyResult:
    """ΔA = A_b − A_a (kJ/mol) of the reported estimator, the others, and the diagnostics."""

    estimate: Estimate
    estimates: dict[str, Estimate]
    checks: list[Check]
    convergence: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)  # (fraction, ΔA, σ)
    convergence_method: str = ""  # the estimator of the convergence series
    windows: estimators.WindowAnalysis | None = None
    lambdas: np.ndarray | None = None
    ess: dict[str, float] = field(default_factory=dict)
    uncorrelated: list[int] = field(default_factory=list)  # samples per window
    works: dict[str, np.ndarray | None] = field(default_factory=dict)  # switching: forward, reverse

    @property
    def trusted(self) -> bool:
        return all(check.passed for check in self.checks if check.critical)

    @property
    def problems(self) -> list[str]:
        """Messages of the failed critical checks."""
        return [check.message for check in self.checks if check.critical and not check.passed]

    def record(self) -> dict:
        """The ``result.json`` view: ΔA with σ, trust, every estimate and check."""
        record = {
            "free_energy": {**self.estimate.record(), "estimator": self.estimate.method, "trusted": self.trusted},
            "trusted": self.trusted,
            "problems": self.problems,
            "estimates": {name: e.record() for name, e in self.estimates.items()},
            "diagnostics": [check.record() for check in self.checks],
            "effective_sample_sizes": self.ess,
        }
        if self.windows is not None:
            record["lambdas"] = [float(x) for x in self.lambdas]
            record["window_free_energies"] = {"value": self.windows.state_free_energies.tolist(),
                                              "uncertainty": self.windows.state_uncertainties.tolist(),
                                              "unit": "kJ/mol"}
            record["neighbour_overlap"] = self.windows.neighbour_overlap.tolist()
        return record


def uncorrelated(delta_u: np.ndarray) -> np.ndarray:
    """A window's ΔU samples (kJ/mol) after its equilibration transient, every g-th: pymbar's
    ``detect_equilibration`` picks the start t₀ that maximises the effective number of samples and g, the
    statistical inefficiency of ΔU from t₀ on, the only quantity the estimators use (Chodera, J. Chem.
    Theory Comput. 12, 1799 (2016))."""
    delta_u = np.asarray(delta_u, dtype=float)
    if len(delta_u) < 3 or np.ptp(delta_u) == 0:
        return delta_u
    start, g, _ = quiet_pymbar().timeseries.detect_equilibration(delta_u)
    kept = delta_u[int(start):]
    return kept[np.asarray(quiet_pymbar().timeseries.subsample_correlated_data(kept, g=g), dtype=int)]


def _convergence(statistic: Callable[[list[np.ndarray]], tuple[float, float]], groups: Sequence[np.ndarray],
                 thresholds: Thresholds) -> tuple[dict, Check]:
    """Forward (first fraction of every group) and backward (last fraction) series, and the check that
    the first and second halves agree within ``max_sigmas`` combined standard errors."""
    series = {"forward": [], "backward": []}
    for fraction in CONVERGENCE_FRACTIONS:
        first = [g[: max(2, int(round(fraction * len(g))))] for g in groups]
        last = [g[len(g) - max(2, int(round(fraction * len(g)))):] for g in groups]
        series["forward"].append((fraction, *statistic(first)))
        series["backward"].append((fraction, *statistic(last)))
    (a, da), (b, db) = (statistic([g[: len(g) // 2] for g in groups]),
                        statistic([g[len(g) // 2:] for g in groups]))
    sigmas = abs(a - b) / max(np.hypot(da, db), 1e-12)
    passed = bool(sigmas <= thresholds.max_sigmas)
    message = (f"first and second halves of the data give {a:.3f} ± {da:.3f} and {b:.3f} ± {db:.3f} kJ/mol: "
               f"{sigmas:.1f} combined standard errors apart (limit {thresholds.max_sigmas:g})"
               + ("" if passed else "; the samples drift: equilibrate or sample longer"))
    return series, Check("time_convergence", float(sigmas), thresholds.max_sigmas, passed, message)


def _halves_usable(groups: Sequence[np.ndarray]) -> bool:
    return all(len(g) >= 8 for g in groups)


def _exponential_check(name: str, ess: float, thresholds: Thresholds, critical: bool, what: str) -> Check:
    passed = bool(ess >= thresholds.min_ess)
    message = (f"{what}: Kish effective sample size {ess:.1f} (limit {thresholds.min_ess:g})"
               + ("" if passed else "; the average rests on a handful of samples: use more λ windows or "
                  "slower switching"))
    return Check(name, float(ess), thresholds.min_ess, passed, message, critical)


def analyse_windows(lambdas: Sequence[float], delta_u: Sequence[np.ndarray], kt: float, *,
                    thresholds: Thresholds = Thresholds(), bootstraps: int = 0, seed: int = 0) -> FreeEnergyResult:
    """ΔA from λ windows: MBAR (reported), BAR and Zwanzig from λ = 0, with the overlap of every neighbour
    pair, Zwanzig's effective sample size (a cross-check, not critical) and the time convergence (of BAR,
    which equals MBAR's value between neighbours to within its error and needs no global solver).
    ``delta_u``: ΔU = U_b − U_a (kJ/mol) of each window's uncorrelated samples in the order sampled."""
    lambdas = np.asarray(lambdas, dtype=float)
    groups = [np.asarray(x, dtype=float) for x in delta_u]
    analysis = estimators.windows(lambdas, groups, kt, bootstraps=bootstraps, seed=seed)
    zwanzig, ess = estimators.exponential(groups[0], kt, bootstraps=bootstraps, seed=seed + 2)
    checks = []
    for k, value in enumerate(analysis.neighbour_overlap):
        passed = bool(value >= thresholds.min_overlap)
        pair = f"λ {lambdas[k]:.4g} and {lambdas[k + 1]:.4g}"
        checks.append(Check("neighbour_overlap", float(value), thresholds.min_overlap, passed,
                            f"windows {pair} overlap {value:.3g} (limit {thresholds.min_overlap:g})"
                            + ("" if passed else ": add a window between them")))
    checks.append(_exponential_check("zwanzig_ess", ess, thresholds, False,
                                     "one-sided reweighting from λ = 0 (Zwanzig, a cross-check)"))
    result = FreeEnergyResult(analysis.mbar, {"MBAR": analysis.mbar, "BAR": analysis.bar, "Zwanzig": zwanzig},
                              checks, windows=analysis, lambdas=lambdas, ess={"zwanzig": ess},
                              uncorrelated=[len(g) for g in groups])
    if _halves_usable(groups):
        def statistic(parts):  # BAR between neighbours: MBAR's value without its solver on tiny subsets
            pairs = np.array([estimators.bar_pair(lambdas[k + 1] - lambdas[k], parts[k], parts[k + 1], kt)
                              for k in range(len(lambdas) - 1)])
            return float(pairs[:, 0].sum()), float(np.sqrt((pairs[:, 1] ** 2).sum()))

        result.convergence, check = _convergence(statistic, groups, thresholds)
        result.convergence_method = "BAR"
        checks.append(check)
    else:
        checks.append(Check("time_convergence", 0.0, 8.0, False,
                            "fewer than 8 uncorrelated samples in some window: no time-convergence check is "
                            "possible; sample longer"))
    return result


def analyse_switching(forward: np.ndarray, reverse: np.ndarray | None, kt: float, *,
                      thresholds: Thresholds = Thresholds(), bootstraps: int = 0, seed: int = 0,
                      end_state_delta_u: np.ndarray | None = None) -> FreeEnergyResult:
    """ΔA from nonequilibrium switching works (kJ/mol; ``forward`` a → b, ``reverse`` b → a, in the
    order run): Crooks/BAR when both directions were run (reported; the work-distribution overlap is
    critical), else Jarzynski (its effective sample size is critical). ``end_state_delta_u`` (ΔU of the
    equilibrium samples at λ = 0) adds Zwanzig as a cross-check."""
    forward = np.asarray(forward, dtype=float)
    if len(forward) < 2:
        raise CalculationError("switching: fewer than two forward trajectories")
    jarzynski, ess = estimators.exponential(forward, kt, bootstraps=bootstraps, seed=seed, method="Jarzynski")
    estimates, checks, ess_record = {"Jarzynski": jarzynski}, [], {"jarzynski_forward": ess}
    if reverse is not None and len(reverse) >= 2:
        reverse = np.asarray(reverse, dtype=float)
        value, sigma = estimators.bar(forward, reverse, kt)
        boot = estimators._bootstrap(lambda g: estimators.bar(g[0], g[1], kt)[0], [forward, reverse],
                                     bootstraps, seed + 1)
        reported = estimates["Crooks"] = Estimate("Crooks", value, sigma, boot)
        back, back_ess = estimators.exponential(reverse, kt, bootstraps=bootstraps, seed=seed + 3, method="Jarzynski")
        estimates["Jarzynski_reverse"] = Estimate("Jarzynski (reverse)", -back.value, back.uncertainty,
                                                  back.bootstrap)
        ess_record["jarzynski_reverse"] = back_ess
        overlap = estimators.work_overlap(forward, reverse, kt)
        passed = bool(overlap >= thresholds.min_overlap)
        checks.append(Check("work_overlap", overlap, thresholds.min_overlap, passed,
                            f"forward and reverse work distributions overlap {overlap:.3g} (limit "
                            f"{thresholds.min_overlap:g})" + ("" if passed else ": switch more slowly")))
        checks.append(_exponential_check("jarzynski_ess", ess, thresholds, False, "forward Jarzynski average"))
        groups = [forward, reverse]

        def statistic(parts):
            return estimators.bar(parts[0], parts[1], kt)
    else:
        reported = jarzynski
        checks.append(_exponential_check("jarzynski_ess", ess, thresholds, True, "forward Jarzynski average"))
        groups = [forward]

        def statistic(parts):
            estimate, _ = estimators.exponential(parts[0], kt, method="Jarzynski")
            return estimate.value, estimate.uncertainty
    dissipated = float(np.mean(forward) - reported.value)
    checks.append(Check("dissipated_work", dissipated, kt, dissipated <= kt,
                        f"mean forward work exceeds ΔA by {dissipated:.2f} kJ/mol ({dissipated / kt:.2f} k_BT); "
                        "above 1 k_BT the exponential averages converge slowly", critical=False))
    if end_state_delta_u is not None and len(end_state_delta_u) >= 2:
        estimates["Zwanzig"], ess_record["zwanzig"] = estimators.exponential(end_state_delta_u, kt,
                                                                            bootstraps=bootstraps, seed=seed + 2)
        checks.append(_exponential_check("zwanzig_ess", ess_record["zwanzig"], thresholds, False,
                                         "one-sided reweighting from λ = 0 (Zwanzig, a cross-check)"))
    result = FreeEnergyResult(reported, estimates, checks, ess=ess_record,
                              works={"forward": forward, "reverse": reverse})
    if _halves_usable(groups):
        result.convergence, check = _convergence(statistic, groups, thresholds)
        result.convergence_method = reported.method
        checks.append(check)
    else:
        checks.append(Check("time_convergence", 0.0, 8.0, False,
                            "fewer than 8 trajectories in a direction: no convergence check is possible; run more"))
    return result
