"""``protocol: fep``: the free energy between two Hamiltonians of one system, A_b − A_a, with the
diagnostics that say whether it can be trusted (:mod:`bioqmmm.fep`).

End state b is the file's QM/MM model; end state a is the MM force field (``low: mm``), another QM level
of the same region (``low: {method, basis, engine}``) or a smaller QM region (``low_region``). Both
share the MM reference's masses and constraints, so they live on the same configuration space.

``method: windows``: every λ window is a replica (over MPI under mpirun) sampled with the mixed
Hamiltonian into ``OUTPUT/windows/lX.XXXXXX`` with checkpoints, recording U_a and U_b of every sample;
with ``max_windows``, rank 0 measures the neighbour overlaps after each round and midpoints are added
where they are low (:mod:`bioqmmm.fep.schedule`). ``method: switching``: the end states are sampled
(``OUTPUT/switching/a``, ``b``) and chunks of switching trajectories start from their samples
(``OUTPUT/switching/F000`` …), each trajectory's work saved as it finishes. A rerun resumes either.
Rank 0 writes ``result.json``, ``summary.txt``, ``windows.csv`` or ``works.csv``, and the plots.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import openmm

from bioqmmm.errors import CalculationError, InputError
from bioqmmm.fep.analysis import FreeEnergyResult, Thresholds, analyse_switching, analyse_windows, uncorrelated
from bioqmmm.fep.cycles import cycle_record
from bioqmmm.fep.hamiltonian import MixedHamiltonian
from bioqmmm.fep.schedule import refine
from bioqmmm.fep.switching import switch
from bioqmmm.parallel.replicas import Replica, replica_seed, run_replicas
from bioqmmm.protocols.context import RunContext
from bioqmmm.protocols.fep_settings import FEPSettings
from bioqmmm.protocols.registry import Protocol
from bioqmmm.protocols.settings import settings_record
from bioqmmm.region.region import QMRegion
from bioqmmm.region.selection import resolve_qm_atoms
from bioqmmm.results import new_figure, quantity, write_results
from bioqmmm.sampling.windows import SamplingSettings, sample
from bioqmmm.simulation.checkpoint import save_arrays
from bioqmmm.simulation.identity import fingerprint
from bioqmmm.units import kt_kjmol

#: Switching trajectories per replica (their works are saved one by one; the chunking fixes the folders).
TRAJECTORIES_PER_CHUNK = 5


class _Ends:
    """How this rank builds the mixed Hamiltonian of the two end states."""

    def __init__(self, context: RunContext, settings: FEPSettings) -> None:
        self.context, self.settings = context, settings
        self.region = _low_region(context, settings) if settings.low_region is not None else None
        self.low_model()  # a QM level or region is validated (basis, electrons) before any sampling

    def low_model(self):
        low = self.settings.low
        if self.region is not None:
            return self.context.model_at(None, self.region)
        if low == "mm":
            return openmm.XmlSerializer.clone(self.context.qmmm.reference_system)
        return self.context.model_at(low.level())

    def hamiltonian(self, lam: float) -> MixedHamiltonian:
        return MixedHamiltonian(self.low_model(), self.context.model_at(None), lam,
                                constraints=self.context.qmmm.reference_system, platform=self.context.platform,
                                threads=self.context.threads)

    def label(self) -> str:
        if self.region is not None:
            return f"QM region of {len(self.region.atoms)} atoms (charge {self.region.charge})"
        return "mm" if self.settings.low == "mm" else self.settings.low.level().label


def _low_region(context: RunContext, settings: FEPSettings) -> QMRegion:
    """R₁ of ``low_region``, validated, and checked to lie inside the file's region R₂."""
    section, high = settings.low_region, context.qmmm.region
    selection = section.atoms if isinstance(section.atoms, str) else list(section.atoms)
    atoms = resolve_qm_atoms(context.qmmm.topology, selection)
    outside = sorted(set(atoms) - set(high.atoms))
    if outside:
        raise InputError(f"low_region: atoms {outside[:10]} are not in the qm block's region: R1 must lie inside R2")
    if set(atoms) == set(high.atoms):
        raise InputError("low_region: selects the qm block's whole region; R1 must be smaller than R2")
    return QMRegion.select(context.qmmm.topology, atoms, charge=section.charge, multiplicity=section.multiplicity,
                           boundary_charges=high.boundary_charges)


def _sampling(settings: FEPSettings, samples: int, seed: int) -> SamplingSettings:
    return SamplingSettings(samples=samples, sample_interval=settings.sample_interval,
                            equilibration_steps=settings.equilibration_steps, timestep_fs=settings.timestep_fs,
                            temperature_k=settings.temperature_k, friction_per_ps=settings.friction_per_ps,
                            seed=seed, checkpoint_interval=settings.checkpoint_interval)


def _identity(context: RunContext, settings: FEPSettings, name: str) -> str:
    """What a window's or an end state's samples are: the model, both ends, the dynamics (not the count)."""
    dynamics = {key: getattr(settings, key) for key in ("sample_interval", "equilibration_steps", "timestep_fs",
                                                        "temperature_k", "friction_per_ps", "seed")}
    low = settings_record(settings.low if settings.low_region is None else settings.low_region)
    return fingerprint(*context.inputs_at(None), low, dynamics, context.platform, name)


def run(context: RunContext, settings: FEPSettings) -> dict:
    """The ``fep`` protocol on every rank (windows or trajectories shared out); rank 0 writes the files."""
    ends = _Ends(context, settings)
    if settings.cycle is not None:  # the other leg's folder is checked before sampling
        cycle_record(settings.cycle, None, context.base, context.output, settings.temperature_k)
    kt = kt_kjmol(settings.temperature_k)
    thresholds = Thresholds(settings.min_overlap, settings.min_ess, settings.max_sigmas)
    if settings.method == "windows":
        analyse, extra = _run_windows(context, settings, ends, kt, thresholds)
    else:
        analyse, extra = _run_switching(context, settings, ends, kt, thresholds)
    outcome = None
    if context.comm.rank == 0:
        try:
            outcome = _write(context, settings, ends, analyse(), extra)
        except (InputError, CalculationError) as exc:  # every rank raises it (the others wait for rank 0)
            outcome = (type(exc).__name__, str(exc))
    outcome = context.comm.bcast(outcome)
    if isinstance(outcome, tuple):
        raise {"InputError": InputError}.get(outcome[0], CalculationError)(outcome[1])
    return outcome


# ---------------------------------------------------------------------------------------------------- windows


def _window_name(lam: float) -> str:
    return f"l{lam:.6f}"


def _run_windows(context, settings: FEPSettings, ends: _Ends, kt: float, thresholds: Thresholds):
    folder, comm = context.output / "windows", context.comm
    lambdas = [float(x) for x in settings.lambdas]
    schedule = [lambdas]

    def work(replica: Replica, poll) -> dict[str, Any]:
        lam = replica.payload
        hamiltonian = ends.hamiltonian(lam)
        where = folder / replica.name

        def measure(_context, state) -> dict[str, float]:
            u_a, u_b = hamiltonian.energies_of(state)
            return {"u_a": u_a, "u_b": u_b}

        recorded = sample(hamiltonian.system, context.positions, _sampling(settings, settings.samples,
                          replica_seed(settings.seed, replica.name)), where, measure, box=context.box,
                          qmmm=hamiltonian, platform=context.platform, threads=context.threads,
                          identity=_identity(context, settings, replica.name), poll=poll, what=f"λ window {lam:g}")
        save_arrays(where / "window.npz", {"u_a": recorded["u_a"], "u_b": recorded["u_b"], "lam": np.array(lam),
                                           "identity": np.array(_identity(context, settings, replica.name))})
        if context.progress:
            rank = f"rank {comm.rank}: " if comm.size > 1 else ""
            print(f"{rank}λ window {lam:g}: {len(recorded['u_a'])} samples", flush=True)
        return {"samples": len(recorded["u_a"])}

    def finished(replica: Replica) -> dict[str, Any] | None:
        stored = _stored(folder / replica.name / "window.npz", _identity(context, settings, replica.name))
        return {"samples": len(stored["u_a"])} if stored and len(stored["u_a"]) == settings.samples else None

    while True:
        replicas = [Replica(_window_name(lam), cost=_window_cost(lam), payload=lam) for lam in lambdas]
        run_replicas(replicas, work, folder, finished=finished, comm=comm)
        refined = None
        if comm.rank == 0 and settings.max_windows > len(lambdas):
            try:
                groups = [_uncorrelated(folder / _window_name(lam)) for lam in lambdas]
                overlap = analyse_windows(lambdas, groups, kt, thresholds=thresholds).windows.neighbour_overlap
                refined = refine(lambdas, overlap, settings.min_overlap, settings.max_windows)
            except (InputError, CalculationError) as exc:  # raised on every rank, not left waiting
                refined = (type(exc).__name__, str(exc))
        refined = comm.bcast(refined)
        if isinstance(refined, tuple):
            raise {"InputError": InputError}.get(refined[0], CalculationError)(refined[1])
        if refined is None or refined == lambdas:
            break
        lambdas = refined
        schedule.append(lambdas)
        if context.progress and comm.rank == 0:
            print(f"λ schedule: {len(lambdas)} windows {[round(x, 4) for x in lambdas]}", flush=True)

    def analyse() -> FreeEnergyResult:
        groups = [_uncorrelated(folder / _window_name(lam)) for lam in lambdas]
        return analyse_windows(lambdas, groups, kt, thresholds=thresholds, bootstraps=settings.bootstraps,
                               seed=settings.seed)

    steps = settings.equilibration_steps + settings.samples * settings.sample_interval
    evaluations = {"low": sum(steps if lam < 1 else settings.samples for lam in lambdas),  # every step, or samples
                   "high": sum(steps if lam > 0 else settings.samples for lam in lambdas)}
    return analyse, {"schedule": schedule, "evaluations": evaluations}


def _window_cost(lam: float) -> float:
    """Prior relative cost: both levels on every step inside (0, 1), one at the ends."""
    return 2.0 if 0 < lam < 1 else 1.0


def _stored(path: Path, identity: str) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["identity"]) != identity:
                return None
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, KeyError):
        return None


def _uncorrelated(folder: Path) -> np.ndarray:
    """ΔU (kJ/mol) of a window's effectively uncorrelated samples (:func:`bioqmmm.fep.analysis.uncorrelated`)."""
    with np.load(folder / "window.npz") as data:
        return uncorrelated(data["u_b"] - data["u_a"])


# -------------------------------------------------------------------------------------------------- switching


def _run_switching(context, settings: FEPSettings, ends: _Ends, kt: float, thresholds: Thresholds):
    folder, comm, section = context.output / "switching", context.comm, settings.switching
    count = section.trajectories
    directions = ("F", "R") if section.both_directions else ("F",)
    end_names = {"F": "a", "R": "b"}

    def end_state(replica: Replica, poll) -> dict[str, Any]:
        lam = 0.0 if replica.name == "a" else 1.0
        hamiltonian = ends.hamiltonian(lam)
        where = folder / replica.name

        def measure(_context, state) -> dict[str, float]:  # only the sampled end: U(λ) at λ = 0 or 1
            energy = _context.getState(getEnergy=True).getPotentialEnergy()
            return {"u": energy.value_in_unit(openmm.unit.kilojoule_per_mole)}

        recorded = sample(hamiltonian.system, context.positions, _sampling(settings, count,
                          replica_seed(settings.seed, replica.name)), where, measure, box=context.box,
                          qmmm=hamiltonian, platform=context.platform, threads=context.threads,
                          identity=_identity(context, settings, replica.name), poll=poll,
                          what=f"end state {replica.name}")
        arrays = {"positions": recorded["positions"], "u": recorded["u"],
                  "identity": np.array(_identity(context, settings, replica.name))}
        if "boxes" in recorded:
            arrays["boxes"] = recorded["boxes"]
        save_arrays(where / "end_state.npz", arrays)
        return {"samples": len(recorded["u"])}

    def end_finished(replica: Replica) -> dict[str, Any] | None:
        stored = _stored(folder / replica.name / "end_state.npz", _identity(context, settings, replica.name))
        return {"samples": len(stored["u"])} if stored and len(stored["u"]) == count else None

    run_replicas([Replica(end_names[d], cost=1.0) for d in directions], end_state, folder, finished=end_finished,
                 comm=comm)
    chunks = [(d, c) for d in directions for c in range(-(-count // TRAJECTORIES_PER_CHUNK))]

    def trajectories(replica: Replica, poll) -> dict[str, Any]:
        direction, chunk = replica.payload
        starts = _stored(folder / end_names[direction] / "end_state.npz",
                         _identity(context, settings, end_names[direction]))
        path = folder / f"{replica.name}.npz"
        done = _works(path, _chunk_identity(context, settings, direction)) or {}
        hamiltonian = ends.hamiltonian(0.0)
        for i in _chunk_indices(chunk, count):
            if i in done:
                continue
            box = starts["boxes"][i] if "boxes" in starts else None
            result = switch(hamiltonian, starts["positions"][i].astype(float), box, forward=direction == "F",
                            steps=section.steps, timestep_fs=settings.timestep_fs,
                            temperature_k=settings.temperature_k, friction_per_ps=settings.friction_per_ps,
                            seed=replica_seed(settings.seed, f"{direction}{i}"), platform=context.platform,
                            threads=context.threads)
            done[i] = (result.work, result.start_delta_u)
            _save_works(path, done, _chunk_identity(context, settings, direction))
            if poll is not None:
                poll()
        return {"trajectories": len(done)}

    def chunk_finished(replica: Replica) -> dict[str, Any] | None:
        direction, chunk = replica.payload
        done = _works(folder / f"{replica.name}.npz", _chunk_identity(context, settings, direction)) or {}
        wanted = _chunk_indices(chunk, count)
        return {"trajectories": len(wanted)} if set(wanted) <= set(done) else None

    run_replicas([Replica(f"{d}{c:03d}", cost=float(len(_chunk_indices(c, count))), payload=(d, c))
                  for d, c in chunks], trajectories, folder, finished=chunk_finished, comm=comm)

    def collect(direction: str) -> tuple[np.ndarray, np.ndarray]:
        rows = {}
        for d, c in chunks:
            if d == direction:
                rows.update(_works(folder / f"{d}{c:03d}.npz", _chunk_identity(context, settings, d)) or {})
        order = sorted(i for i in rows if i < count)
        return (np.array([rows[i][0] for i in order]), np.array([rows[i][1] for i in order]))

    def analyse() -> FreeEnergyResult:
        forward, start_du = collect("F")
        reverse = collect("R")[0] if section.both_directions else None
        return analyse_switching(forward, reverse, kt, thresholds=thresholds, bootstraps=settings.bootstraps,
                                 seed=settings.seed, end_state_delta_u=start_du)

    end_steps = settings.equilibration_steps + count * settings.sample_interval  # one end evaluated per step
    switches = count * section.steps * len(directions)  # both ends per λ increment
    evaluations = {"low": switches + end_steps, "high": switches + end_steps * section.both_directions}
    return analyse, {"evaluations": evaluations}


def _chunk_indices(chunk: int, count: int) -> list[int]:
    return list(range(chunk * TRAJECTORIES_PER_CHUNK, min(count, (chunk + 1) * TRAJECTORIES_PER_CHUNK)))


def _chunk_identity(context, settings: FEPSettings, direction: str) -> str:
    return fingerprint(_identity(context, settings, direction), settings.switching.steps)


def _works(path: Path, identity: str) -> dict[int, tuple[float, float]] | None:
    stored = _stored(path, identity)
    if stored is None:
        return None
    return {int(i): (float(w), float(d)) for i, w, d in zip(stored["index"], stored["work"], stored["start_delta_u"],
                                                           strict=True)}


def _save_works(path: Path, done: dict[int, tuple[float, float]], identity: str) -> None:
    order = sorted(done)
    save_arrays(path, {"index": np.array(order), "work": np.array([done[i][0] for i in order]),
                       "start_delta_u": np.array([done[i][1] for i in order]), "identity": np.array(identity)})


# ------------------------------------------------------------------------------------------------------ output


def _write(context: RunContext, settings: FEPSettings, ends: _Ends, result: FreeEnergyResult,
           extra: dict[str, Any]) -> dict[str, Any]:
    out = context.output
    files = ["result.json", "summary.txt", "convergence.png"]
    if result.windows is not None:
        _write_windows_csv(out / "windows.csv", result)
        _plot_windows(out / "lambda.png", out / "overlap.png", result)
        files += ["windows.csv", "lambda.png", "overlap.png", "windows/"]
    else:
        _write_works_csv(out / "works.csv", result)
        _plot_works(out / "works.png", result, kt_kjmol(settings.temperature_k))
        files += ["works.csv", "works.png", "switching/"]
    _plot_convergence(out / "convergence.png", result)
    record = {
        **context.record,
        "low_end_state": ends.label(),
        "method": settings.method,
        "verdict": "trusted" if result.trusted else "NOT TRUSTED: " + "; ".join(result.problems),
        **result.record(),
        "temperature": quantity(settings.temperature_k, "K"),
        "energy_evaluations": extra["evaluations"],
    }
    if "schedule" in extra:
        record["lambda_schedule"] = extra["schedule"]
    if settings.cycle is not None:
        record["cycle"] = cycle_record(settings.cycle, result, context.base, context.output, settings.temperature_k)
    record["files"] = sorted(files)
    record = write_results(out, "fep", record)
    (out / "summary.txt").write_text(_summary(record, result))
    return record


def _summary(record: dict[str, Any], result: FreeEnergyResult) -> str:
    """summary.txt: the number with its verdict first, then every estimate and check (failed critical
    checks marked FAIL, failed cross-checks 'note')."""
    e = result.estimate
    boot = "" if e.bootstrap is None else f", bootstrap ± {e.bootstrap:.3f}"
    lines = [f"ΔA = A_b − A_a = {e.value:.3f} ± {e.uncertainty:.3f} kJ/mol ({e.method}{boot})",
             f"verdict: {record['verdict']}",
             f"end state a: {record['low_end_state']}; end state b: {record['qm_level']} (the qm block)",
             "", "estimates (kJ/mol):"]
    for name, other in result.estimates.items():
        other_boot = "" if other.bootstrap is None else f"  (bootstrap ± {other.bootstrap:.3f})"
        lines.append(f"  {name:<18} {other.value:14.3f} ± {other.uncertainty:.3f}{other_boot}")
    lines += ["", "diagnostics:"]
    for check in result.checks:
        mark = "ok  " if check.passed else ("FAIL" if check.critical else "note")
        lines.append(f"  {mark}  {check.message}")
    if "lambda_schedule" in record:
        lines += ["", "λ schedule (rounds): " + " → ".join(str([round(x, 4) for x in r]) for r in
                                                         record["lambda_schedule"])]
    evaluations = record["energy_evaluations"]
    lines += [f"energy evaluations: end state a {evaluations['low']}, end state b {evaluations['high']}"]
    if "cycle" in record:
        cycle = record["cycle"]
        lines.append(f"cycle ({cycle['kind']}): " + (cycle["status"] if "status" in cycle else
                     f"ΔG(high) = {cycle['value']:.3f} ± {cycle['uncertainty']:.3f} kJ/mol "
                     f"({'trusted' if cycle['trusted'] else 'NOT TRUSTED'})"))
    lines += ["", f"files: {', '.join(record['files'])}"]
    return "\n".join(lines) + "\n"


def _write_windows_csv(path: Path, result: FreeEnergyResult) -> None:
    analysis = result.windows
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["lambda", "free_energy_kjmol", "uncertainty_kjmol", "uncorrelated_samples",
                         "overlap_with_next"])
        for k, lam in enumerate(result.lambdas):
            writer.writerow([f"{lam:.6g}", f"{analysis.state_free_energies[k]:.6f}",
                             f"{analysis.state_uncertainties[k]:.6f}", result.uncorrelated[k],
                             f"{analysis.neighbour_overlap[k]:.6g}" if k < len(result.lambdas) - 1 else ""])


def _write_works_csv(path: Path, result: FreeEnergyResult) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["direction", "trajectory", "work_kjmol"])
        for direction, works in result.works.items():
            for i, w in enumerate([] if works is None else works):
                writer.writerow([direction, i, f"{w:.6f}"])


def _plot_windows(lambda_path: Path, overlap_path: Path, result: FreeEnergyResult) -> None:
    """A(λ) − A(0), and its departure from the straight line λ ΔA (the part that needs the windows between
    the ends: for a constant ΔU it would be zero), both with ±2σ bars; the overlap matrix."""
    analysis = result.windows
    lambdas, f, df = result.lambdas, analysis.state_free_energies, 2 * analysis.state_uncertainties
    fig, axes = new_figure(rows=2)
    axes[0].errorbar(lambdas, f, yerr=df, fmt="o-", ms=3, capsize=2)
    axes[0].set_ylabel("A(λ) − A(0) (kJ/mol)")
    axes[0].set_title(f"ΔA = {result.estimate.value:.2f} ± {result.estimate.uncertainty:.2f} kJ/mol (MBAR, ±2σ bars)"
                      + ("" if result.trusted else "  NOT TRUSTED"), fontsize=9)
    axes[1].errorbar(lambdas, f - lambdas * f[-1], yerr=df, fmt="o-", ms=3, capsize=2, color="tab:green")
    axes[1].axhline(0.0, color="0.6", lw=0.8)
    axes[1].set_ylabel("A(λ) − A(0) − λ ΔA")
    axes[1].set_xlabel("λ")
    for ax in axes:
        ax.ticklabel_format(axis="y", useOffset=False)
    fig.savefig(lambda_path, dpi=120)
    fig, (ax,) = new_figure(height=5.5)
    image = ax.imshow(analysis.overlap, cmap="viridis", vmin=0, vmax=1)
    labels = [f"{x:.3g}" for x in result.lambdas]
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_title("MBAR overlap matrix (λ windows)")
    fig.colorbar(image, ax=ax)
    fig.savefig(overlap_path, dpi=120)


def _plot_works(path: Path, result: FreeEnergyResult, kt: float) -> None:
    """Histograms of W − ΔA (forward) and −W_R − ΔA (reverse), in k_BT: Crooks' theorem puts both at 0 where
    they cross; a forward histogram far right of 0 is dissipation, and no overlap means no estimate."""
    fig, (ax,) = new_figure()
    forward, reverse = result.works["forward"], result.works["reverse"]
    delta = result.estimate.value
    shown = [(forward - delta) / kt] + ([] if reverse is None else [(-reverse - delta) / kt])
    bins = np.histogram_bin_edges(np.concatenate(shown), bins=20)
    ax.hist(shown[0], bins=bins, alpha=0.6, label="forward W (a → b)")
    if reverse is not None:
        ax.hist(shown[1], bins=bins, alpha=0.6, label="−W reverse (b → a)")
    ax.axvline(0.0, color="k", lw=1, label=f"ΔA ({result.estimate.method})")
    ax.set_xlabel("(work − ΔA) / k_BT")
    ax.set_ylabel("trajectories")
    ax.legend(fontsize=8)
    ax.set_title(f"switching works, ΔA = {delta:.2f} ± {result.estimate.uncertainty:.2f} kJ/mol"
                 + ("" if result.trusted else "  NOT TRUSTED"), fontsize=9)
    fig.savefig(path, dpi=120)


def _plot_convergence(path: Path, result: FreeEnergyResult) -> None:
    fig, (ax,) = new_figure()
    for name, series in result.convergence.items():
        if series:
            fraction, value, sigma = np.array(series).T
            ax.errorbar(fraction, value, yerr=2 * sigma, fmt="o-", ms=3, capsize=2, label=f"{name} (±2σ)")
    ax.axhline(result.estimate.value, color="k", lw=0.8)
    ax.set_xlabel("fraction of the data")
    ax.set_ylabel("ΔA (kJ/mol)")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_title(f"time convergence ({result.convergence_method}): first (forward) and last (backward) "
                 "fractions of every window or direction", fontsize=9)
    if result.convergence:
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)


PROTOCOL = Protocol("fep", "free energy between two levels of theory or QM regions: λ windows (MBAR) or switching",
                    FEPSettings, run, length_keys=("samples",), parallel=True)
