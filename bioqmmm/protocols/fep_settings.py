"""Settings of the ``fep`` protocol (:mod:`bioqmmm.protocols.fep`): the two end states, the estimator
(λ windows or nonequilibrium switching), the automatic λ schedule, the trust thresholds and an
optional thermodynamic cycle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bioqmmm.protocols.pmf_settings import LevelSection
from bioqmmm.protocols.settings import Declared, FieldError, setting


@dataclass(frozen=True)
class RegionSection(Declared):
    """A smaller QM region R₁ (λ = 0) inside the ``qm`` block's region R₂ (λ = 1), at the ``qm`` block's
    level: ΔA is the free energy of moving R₂ \\ R₁ from MM into QM."""

    atoms: str | tuple[int, ...] = setting(doc="mdtraj selection or Topology indices of R₁")
    charge: int = setting(doc="of R₁, link atoms included", unit="e")
    multiplicity: int = setting(1, doc="spin multiplicity of R₁", check="positive_int")


@dataclass(frozen=True)
class SwitchingSection(Declared):
    """Nonequilibrium switching (:mod:`bioqmmm.fep.switching`): ``trajectories`` per direction, each
    from an equilibrium end-state sample (one every ``sample_interval`` steps), λ moved in ``steps``
    increments; ``both_directions`` adds reverse switches (b → a) from samples of λ = 1 and Crooks/BAR."""

    trajectories: int = setting(20, doc="switching trajectories per direction (a rerun with more adds)",
                                check="positive_int")
    steps: int = setting(50, doc="λ increments (= evaluations of both levels) per trajectory",
                         check="positive_int")
    both_directions: bool = setting(False, doc="also switch b → a (samples λ = 1 at the high level)")


@dataclass(frozen=True)
class CycleSection(Declared):
    """A thermodynamic cycle this run is one leg of: ``binding`` (legs ``complex`` and ``solvent``),
    ΔG_bind(high) = ΔG_bind(low) + ΔA_complex − ΔA_solvent; ``solvation`` (legs ``solution`` and
    ``gas``), ΔG_solv(high) = ΔG_solv(low) + ΔA_solution − ΔA_gas. ``other_leg``: the output folder of the
    other leg's ``fep`` run; ``low_free_energy_kjmol``: ΔG at the low level (0: the correction alone)."""

    kind: Literal["binding", "solvation"] = setting(doc="the cycle")
    leg: Literal["complex", "solvent", "solution", "gas"] = setting(doc="which leg this run is")
    other_leg: str = setting(doc="output folder of the other leg's fep run (relative to this file)")
    low_free_energy_kjmol: float = setting(0.0, doc="ΔG of the cycle at the low level", unit="kJ/mol")

    def check(self) -> None:
        legs = {"binding": ("complex", "solvent"), "solvation": ("solution", "gas")}[self.kind]
        if self.leg not in legs:
            raise FieldError("leg", f"a {self.kind} cycle has the legs {' and '.join(legs)}")


@dataclass(frozen=True)
class FEPSettings(Declared):
    """Free energy between two Hamiltonians of the same system, U(λ) = (1 − λ) U_a + λ U_b
    (:mod:`bioqmmm.fep`). End state b is the ``qm`` block's model; end state a is ``low`` (``mm``: the QM
    region described by the force field, or another QM level of the same region) or ``low_region`` (a
    smaller QM region at the same level). ``method: windows`` samples every λ in ``lambdas`` (MBAR, BAR);
    with ``max_windows`` above their count, windows are added where neighbours overlap less than
    ``min_overlap``. ``method: switching`` samples the end states and switches between them
    (Jarzynski, Crooks/BAR)."""

    low: Literal["mm"] | LevelSection | None = setting(None, doc="end state a: mm, or a QM level of the region")
    low_region: RegionSection | None = setting(None, doc="end state a: a smaller QM region at the qm level")
    method: Literal["windows", "switching"] = setting("windows", doc="λ windows (MBAR) or switching")
    lambdas: tuple[float, ...] = setting((0.0, 0.5, 1.0), doc="λ windows to start from (0 and 1 included)")
    max_windows: int = setting(0, doc="window budget of the automatic schedule (0: lambdas only)",
                               check="non_negative")
    samples: int = setting(200, doc="samples per λ window (method: windows)", check="positive_int")
    sample_interval: int = setting(10, doc="steps between samples", check="positive_int")
    equilibration_steps: int = setting(500, doc="steps before the first sample", check="non_negative")
    timestep_fs: float = setting(1.0, doc="time step", check="positive")
    temperature_k: float = setting(300.0, doc="thermostat and k_BT", check="positive")
    friction_per_ps: float = setting(5.0, doc="Langevin friction", check="positive")
    seed: int = setting(1, doc="seeds every window and trajectory (from its name)", check="positive_int")
    checkpoint_interval: int = setting(50, doc="samples between checkpoints", check="positive_int")
    switching: SwitchingSection = setting(SwitchingSection(), doc="nonequilibrium switching (method: switching)")
    min_overlap: float = setting(0.03, doc="least neighbour / work-distribution overlap trusted", check="fraction")
    min_ess: float = setting(10.0, doc="least Kish effective sample size of an exponential average trusted",
                             check="positive")
    max_sigmas: float = setting(3.0, doc="largest first-half/second-half disagreement trusted, in σ",
                                check="positive")
    bootstraps: int = setting(100, doc="bootstrap resamplings for a second uncertainty", check="non_negative")
    cycle: CycleSection | None = setting(None, doc="the thermodynamic cycle this run is a leg of")

    def check(self) -> None:
        if (self.low is None) == (self.low_region is None):
            raise FieldError("low", "give end state a as either 'low' (a level) or 'low_region' (a smaller region)")
        lambdas = self.lambdas
        rising = all(b > a for a, b in zip(lambdas[:-1], lambdas[1:], strict=True))
        if len(lambdas) < 2 or lambdas[0] != 0 or lambdas[-1] != 1 or not rising:
            raise FieldError("lambdas", "must rise from 0 to 1 (both included)")
        if self.max_windows and self.max_windows < len(lambdas):
            raise FieldError("max_windows", f"is below the {len(lambdas)} windows of 'lambdas'")
        if self.method == "switching" and self.max_windows:
            raise FieldError("max_windows", "the automatic λ schedule belongs to method: windows")
