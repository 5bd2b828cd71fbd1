"""MBAR reweighting of biased windows, each sampled at one of several named levels of theory (a cheap
level, the target level, intermediate λ states …), to the target's free-energy profile along the
reaction coordinate.

State k is a named level L_k plus its bias w_k; every retained sample n carries the energies of every
level, so u_k(x_n) = β [U_{L_k}(x_n) + w_k(s_n)] is known for all k and n
(Shirts & Chodera, J. Chem. Phys. 129, 124105 (2008)). The profile is the target's unbiased free
energy per bin of s, F_b = −k_BT ln ∫_b p_target(s) ds, from MBAR's perturbed free energies of
states confined to each bin; its analytical uncertainty is MBAR's asymptotic covariance, its
bootstrap uncertainty the spread over resamplings of every window (with replacement).

Diagnostics returned with every profile: the Kish effective sample size of each cheap window
reweighted to the target, ESS = (Σ w)² / Σ w² with w = exp[−β(U_target − U_sampled)] (Kish, Survey
Sampling (1965); Kong, Liu & Wong (1994)), the MBAR overlap matrix (Klimovich, Shirts & Mobley,
J. Comput. Aided Mol. Des. 29, 397 (2015): neighbours below 0.03 are unreliable), and the share of
each bin's target weight that came from target-level samples.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from bioqmmm.errors import CalculationError
from bioqmmm.sampling.coordinates import Bias
from bioqmmm.units import kt_kjmol

log = logging.getLogger(__name__)

#: Neighbour overlap below which a warning names the windows (Klimovich et al. 2015).
MIN_OVERLAP = 0.03
#: Overlap below which two windows count as not connected at all.
NO_OVERLAP = 1e-6
#: MBAR self-consistency tolerance (relative), tight enough for 1e-8 k_BT agreement with BAR.
MBAR_TOLERANCE = 1e-12
#: Iteration cap of the adaptive MBAR solver. Newton steps converge connected states in tens of
#: iterations; states without overlap never meet pymbar's SC/Newton agreement test, and the cap stops
#: the search there (pymbar then returns its smallest-gradient solution, which the overlap checks flag).
MBAR_MAX_ITERATIONS = 1000


@dataclass(frozen=True)
class Window:
    """A window's retained samples: coordinate ``s``, the energy of every named level on each (kJ/mol),
    the level it was sampled at, and how it was sampled."""

    name: str
    level: str
    bias: Bias
    s: np.ndarray
    energies: Mapping[str, np.ndarray]
    frames: int = 0
    statistical_inefficiency: float = 1.0
    retained: np.ndarray | None = None  # indices of the kept samples among all recorded

    def __post_init__(self) -> None:
        if self.level not in self.energies:
            raise ValueError(f"window {self.name}: sampled level {self.level!r} is not among its energies "
                             f"{sorted(self.energies)}")
        if not len(self.s) > 0 or any(len(e) != len(self.s) for e in self.energies.values()):
            raise ValueError(f"window {self.name}: s and every level's energies need one value per sample (and "
                             "samples)")


@dataclass
class Profile:
    """The target's free-energy profile and its diagnostics (energies in kJ/mol, s in its own unit)."""

    centers: np.ndarray
    free_energy: np.ndarray
    uncertainty: np.ndarray
    bootstrap_uncertainty: np.ndarray | None
    counts: np.ndarray
    target_share: np.ndarray
    reference: float
    windows: list[str]
    overlap: np.ndarray
    neighbour_overlap: dict[tuple[str, str], float]
    ess: dict[str, float]
    state_free_energies: np.ndarray  # of each window's state relative to the first window's, kJ/mol
    state_uncertainties: np.ndarray
    warnings: list[str] = field(default_factory=list)
    barrier: tuple[float, float] | None = None
    reaction_free_energy: tuple[float, float] | None = None
    ts_position: float | None = None


def quiet_pymbar():
    """pymbar, imported without its import-time log noise (a missing-JAX banner, a generic timeseries
    caveat); its warnings during estimation still show."""
    logger = logging.getLogger("pymbar")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import pymbar
        import pymbar.timeseries  # noqa: F401 (logs at import)
    finally:
        logger.setLevel(level)
    return pymbar


def decorrelate(s: np.ndarray, energy: np.ndarray, bias: Bias, temperature: float) -> tuple[np.ndarray, float]:
    """Indices of effectively uncorrelated samples and the statistical inefficiency g used.

    g is the largest of the inefficiencies of s (as its displacement from an umbrella's centre, or as
    sin s and cos s under a bias over a whole turn, so that a periodic coordinate does not jump) and
    of the sampled reduced potential β(U + w); pymbar's
    ``subsample_correlated_data`` keeps every g-th sample (Chodera, J. Chem. Theory Comput. 12, 1799 (2016)).
    """
    timeseries = quiet_pymbar().timeseries
    s = np.asarray(s, dtype=float)
    if bias.center is not None:
        series = [bias.displacement(s)]
    elif bias.period is not None:  # a bias over the whole circle: s itself would jump at ±π
        series = [np.sin(s), np.cos(s)]
    else:
        series = [s]
    series.append((np.asarray(energy) + bias.energy(s)) / kt_kjmol(temperature))
    g = max(inefficiency(x) for x in series)
    return np.asarray(timeseries.subsample_correlated_data(series[0], g=g), dtype=int), g


def inefficiency(series: np.ndarray) -> float:
    """Statistical inefficiency g of a time series (pymbar; 1 for a constant or very short series)."""
    timeseries = quiet_pymbar().timeseries
    if len(series) < 3 or np.ptp(series) == 0:
        return 1.0
    return float(timeseries.statistical_inefficiency(series))


def kish_ess(log_weights: np.ndarray) -> float:
    """(Σ w)² / Σ w² from log-weights (numerically safe)."""
    return float(np.exp(2 * logsumexp(log_weights) - logsumexp(2 * log_weights)))


def reweight(
    windows: Sequence[Window],
    temperature: float,
    bin_edges: np.ndarray,
    *,
    target: str = "target",
    bootstraps: int = 0,
    seed: int = 0,
    reactant: tuple[float, float] | None = None,
    product: tuple[float, float] | None = None,
    min_ess_fraction: float = 0.1,
) -> Profile:
    """The free-energy profile of level ``target`` over ``bin_edges`` from all ``windows`` in one MBAR.

    F is relative to the reactant minimum when ``reactant`` (a range of s) is given, else to the
    lowest bin. With ``product`` as well, the barrier (highest bin between the two minima) and the
    reaction free energy are returned with their analytical uncertainties. Raises
    :class:`~bioqmmm.errors.CalculationError` naming the windows when some do not overlap at all.
    """
    kt = kt_kjmol(temperature)
    names = [w.name for w in windows]
    levels = _common_levels(windows, target)
    s = np.concatenate([w.s for w in windows])
    energies = {level: np.concatenate([w.energies[level] for w in windows]) for level in levels}
    shift = {level: energies[level].mean() for level in levels}  # constants: MBAR is blind to them
    reduced = {level: (energies[level] - shift[level]) / kt for level in levels}
    u_kn = np.array([reduced[w.level] + w.bias.energy(s) / kt for w in windows])
    n_k = np.array([len(w.s) for w in windows])
    bins = np.digitize(s, bin_edges) - 1
    occupied = np.array(sorted(set(bins[(bins >= 0) & (bins < len(bin_edges) - 1)].tolist())))
    centers = 0.5 * (bin_edges[occupied] + bin_edges[occupied + 1])

    mbar = solve_mbar(u_kn, n_k)
    overlap = np.asarray(mbar.compute_overlap()["matrix"]) if len(windows) > 1 else np.ones((1, 1))
    neighbours = {(windows[a].name, windows[b].name): float(overlap[a, b]) for a, b in neighbour_pairs(windows)}
    warnings = _overlap_warnings(windows, overlap, neighbours)
    ess, ess_warnings = _ess(windows, kt, target, min_ess_fraction)
    warnings += ess_warnings
    differences = mbar.compute_free_energy_differences()
    level_shift = np.array([shift[w.level] - shift[windows[0].level] for w in windows])  # undo the shifts

    in_bin = bins[None, :] == occupied[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        u_ln = np.where(in_bin, reduced[target][None, :], np.inf)
        bin_states = mbar.compute_perturbed_free_energies(u_ln)
    f_bins = np.asarray(bin_states["Delta_f"])[0]
    ref = _reference_bin(centers, f_bins, reactant)
    free_energy = kt * (np.asarray(bin_states["Delta_f"])[ref])
    uncertainty = kt * np.asarray(bin_states["dDelta_f"])[ref]
    boot = None
    if bootstraps:
        boot = kt * _bootstrap(u_kn, n_k, in_bin, reduced[target], ref, bootstraps, seed)

    log_w = _target_log_weights(mbar, u_kn, n_k, reduced[target])
    from_target = np.concatenate([np.full(len(w.s), w.level == target) for w in windows])
    share = np.array([np.exp(logsumexp(log_w[row & from_target]) - logsumexp(log_w[row]))
                      if (row & from_target).any() else 0.0 for row in in_bin])

    profile = Profile(
        centers=centers, free_energy=free_energy, uncertainty=uncertainty, bootstrap_uncertainty=boot,
        counts=in_bin.sum(axis=1), target_share=share, reference=float(centers[ref]), windows=names,
        overlap=overlap, neighbour_overlap=neighbours, ess=ess,
        state_free_energies=kt * np.asarray(differences["Delta_f"])[0] + level_shift,
        state_uncertainties=kt * np.asarray(differences["dDelta_f"])[0], warnings=warnings,
    )
    if reactant is not None and product is not None:
        _barrier(profile, product, bin_edges, windows[0].bias.period)
    for message in warnings:
        log.warning(message)
    return profile


def solve_mbar(u_kn: np.ndarray, n_k: np.ndarray, initial_f_k: np.ndarray | None = None):
    """MBAR solved by pymbar's adaptive Newton/self-consistent iteration to :data:`MBAR_TOLERANCE`, from
    ``initial_f_k`` (reduced free energies) when given."""
    solver = ({"method": "adaptive", "options": {"min_sc_iter": 0, "maxiter": MBAR_MAX_ITERATIONS}},)
    return quiet_pymbar().MBAR(u_kn, n_k, relative_tolerance=MBAR_TOLERANCE, solver_protocol=solver,
                               initial_f_k=initial_f_k)


def _target_log_weights(mbar, u_kn, n_k, u_target) -> np.ndarray:
    """log of each sample's MBAR weight in the unbiased target state (unnormalised)."""
    return -u_target - logsumexp(np.asarray(mbar.f_k)[:, None] - u_kn, b=n_k[:, None], axis=0)


def in_range(values: np.ndarray, bounds: Sequence[float]) -> np.ndarray:
    """Mask of ``values`` in [lo, hi]; with lo > hi, the range wraps round a periodic coordinate."""
    lo, hi = bounds
    return (values >= lo) & (values <= hi) if lo <= hi else (values >= lo) | (values <= hi)


def _lowest_in(centers: np.ndarray, f: np.ndarray, bounds: Sequence[float], name: str) -> int:
    inside = np.flatnonzero(in_range(centers, bounds))
    if inside.size == 0:
        raise CalculationError(f"no sampled bin lies in the {name} range {list(bounds)}")
    return int(inside[np.argmin(f[inside])])


def _reference_bin(centers: np.ndarray, f_bins: np.ndarray, reactant: tuple[float, float] | None) -> int:
    return int(np.argmin(f_bins)) if reactant is None else _lowest_in(centers, f_bins, reactant, "reactant")


def _barrier(profile: Profile, product: tuple[float, float], bin_edges: np.ndarray, period: float | None) -> None:
    """Barrier (highest bin on the path between the reactant and product minima; on a circle, the lower
    of the two ways round, a way without unsampled bins first) and reaction free energy, ± 1σ. A path
    through unsampled bins is warned of."""
    centers, f, df = profile.centers, profile.free_energy, profile.uncertainty
    ref = int(np.argmin(np.abs(centers - profile.reference)))
    prod = _lowest_in(centers, f, product, "product")
    low, high = sorted((centers[ref], centers[prod]))
    arcs = [(low, high)] + ([(high, low)] if period is not None else [])  # (high, low): through ±π
    all_centers = 0.5 * (bin_edges[1:] + bin_edges[:-1])
    paths = []
    for arc in arcs:
        on_path = np.flatnonzero(in_range(centers, arc))
        top = int(on_path[np.argmax(f[on_path])])
        paths.append((int(in_range(all_centers, arc).sum()) - len(on_path), float(f[top]), top, arc))
    unsampled, height, top, arc = min(paths)  # a fully sampled way first: a gap may hide the real top
    if unsampled:
        profile.warnings.append(f"the path from reactant to product (s from {arc[0]:.4g} to {arc[1]:.4g}) crosses "
                                f"{unsampled} unsampled bins: the barrier may be underestimated; add windows there")
    for gaps, other_height, _, other in paths:
        if gaps and other_height < height:
            profile.warnings.append(
                f"the other way round (s from {other[0]:.4g} to {other[1]:.4g}) has a lower sampled top "
                f"({other_height:.1f} kJ/mol) but {gaps} unsampled bins: the barrier reported may be an upper "
                "bound; add windows there")
    profile.barrier = (float(f[top]), float(df[top]))
    profile.reaction_free_energy = (float(f[prod]), float(df[prod]))
    profile.ts_position = float(centers[top])


def _bootstrap(u_kn, n_k, in_bin, u_target, ref: int, count: int, seed: int) -> np.ndarray:
    """Standard deviation (k_BT) of F_b − F_ref over ``count`` resamplings of every window."""
    rng = np.random.default_rng(seed)
    starts = np.concatenate([[0], np.cumsum(n_k)])
    curves = []
    for _ in range(count):
        pick = np.concatenate([rng.integers(a, b, b - a) for a, b in zip(starts[:-1], starts[1:], strict=True)])
        mbar = solve_mbar(u_kn[:, pick], n_k)
        log_w = _target_log_weights(mbar, u_kn[:, pick], n_k, u_target[pick])
        with np.errstate(divide="ignore"):
            f = -np.array([logsumexp(log_w[row[pick]]) if row[pick].any() else -np.inf for row in in_bin])
        curves.append(f - f[ref])
    curves = np.array(curves)
    finite = np.isfinite(curves)
    return np.array([curves[finite[:, b], b].std(ddof=1) if finite[:, b].sum() > 1 else np.nan
                     for b in range(curves.shape[1])])


def neighbour_pairs(windows: Sequence[Window]) -> list[tuple[int, int]]:
    """Index pairs of umbrella windows next to each other in centre order (the last and first too on a
    circle); windows at the same centre (of two levels) are neighbours as well. A bias without a centre
    (metadynamics) has no neighbours: the overlap matrix and the connectivity check cover it."""
    umbrellas = [i for i, w in enumerate(windows) if w.bias.center is not None]
    order = sorted(umbrellas, key=lambda i: windows[i].bias.center)
    pairs = list(zip(order[:-1], order[1:], strict=True))
    centres = [windows[i].bias.center for i in order]
    period = windows[0].bias.period
    wrap_gap = None if period is None or len(order) < 3 else centres[0] + period - centres[-1]
    if wrap_gap is not None and wrap_gap <= max(np.diff(centres)) * (1 + 1e-9):
        pairs.append((order[-1], order[0]))  # the windows go round the circle
    return pairs


def _overlap_warnings(windows: Sequence[Window], overlap: np.ndarray,
                      neighbours: dict[tuple[str, str], float]) -> list[str]:
    """Warnings for neighbours that overlap poorly; an error when some windows do not overlap at all."""
    connected = _components(overlap > NO_OVERLAP)
    if len(connected) > 1:
        groups = "; ".join(", ".join(windows[i].name for i in sorted(group)) for group in connected)
        raise CalculationError(f"the windows fall into {len(connected)} groups with no overlap between them "
                               f"({groups}): add windows between the groups or raise the number of samples")
    where = {w.name: w.bias.describe() for w in windows}
    return [f"windows {a} ({where[a]}) and {b} ({where[b]}) overlap {value:.3g} < {MIN_OVERLAP}: "
            "add a window between them or sample longer" for (a, b), value in neighbours.items() if value < MIN_OVERLAP]


def _components(adjacent: np.ndarray) -> list[set[int]]:
    unseen, groups = set(range(len(adjacent))), []
    while unseen:
        stack, group = [unseen.pop()], set()
        while stack:
            i = stack.pop()
            group.add(i)
            for j in np.flatnonzero(adjacent[i]):
                if j in unseen:
                    unseen.discard(int(j))
                    stack.append(int(j))
        groups.append(group)
    return groups


def _common_levels(windows: Sequence[Window], target: str) -> list[str]:
    """The levels every window has energies of (``target`` among them), sorted."""
    levels = set(windows[0].energies)
    for w in windows:
        if set(w.energies) != levels:
            raise ValueError(f"window {w.name} has energies of {sorted(w.energies)}, window {windows[0].name} of "
                             f"{sorted(levels)}: every window needs the same levels")
    if target not in levels:
        raise ValueError(f"target level {target!r} is not among the windows' levels {sorted(levels)}")
    return sorted(levels)


def _ess(windows: Sequence[Window], kt: float, target: str,
         min_fraction: float) -> tuple[dict[str, float], list[str]]:
    """Kish ESS of each window reweighted from its level to the target (a target window keeps all samples)."""
    ess, warnings = {}, []
    for w in windows:
        if w.level == target:
            ess[w.name] = float(len(w.s))
            continue
        ess[w.name] = kish_ess(-(w.energies[target] - w.energies[w.level]) / kt)
        if ess[w.name] < min_fraction * len(w.s):
            warnings.append(f"window {w.name} ({w.bias.describe()}): reweighting {w.level} -> {target} keeps "
                            f"{ess[w.name]:.1f} of {len(w.s)} samples (Kish ESS < {min_fraction:g} of them); "
                            f"add target-level windows at {w.bias.describe()}")
    return ess, warnings
