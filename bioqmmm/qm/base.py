"""The QM engine protocol: the single seam between bioqmmm and a quantum chemistry code.

Everything crossing this seam is in OpenMM units: nm, kJ/mol, elementary charge.
An engine converts to its own units internally and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from openmm import app

from bioqmmm.errors import InputError, SCFAttempt


@dataclass(frozen=True)
class PolynomialPotential:
    """A smooth external potential, Taylor-expanded to second order about ``center``.

    phi(r) = t0 + t1 . (r - c) + 1/2 (r - c)^T t2 (r - c)

    Units: ``center`` nm, ``t0`` kJ/mol/e, ``t1`` kJ/mol/e/nm, ``t2`` kJ/mol/e/nm^2.
    Used for the far field of the embedding (see ``docs/theory.md``).
    """

    center: np.ndarray
    t0: float
    t1: np.ndarray
    t2: np.ndarray


@dataclass(frozen=True)
class AtomicPolynomialPotential:
    """A smooth external potential, Taylor-expanded to second order about one centre per QM atom.

    phi_A(r) = t0_A + t1_A . (r - c_A) + 1/2 (r - c_A)^T t2_A (r - c_A) (c_A: usually atom A's position).
    Nucleus A sees phi_A(R_A); the electrons see the one-electron operator partitioned by basis function,
    V_mu,nu = 1/2 [<mu|phi_A|nu> + <mu|phi_B|nu>] for mu on atom A and nu on atom B, as PySCF's periodic
    QM/MM couples its Ewald potential (``pyscf.qmmm.pbc``). The truncation error then runs in the extent of a
    basis-function product over the distance to the sources, not in the radius of the QM region.

    Units as :class:`PolynomialPotential`; ``centers`` (n, 3), ``t0`` (n,), ``t1`` (n, 3), ``t2`` (n, 3, 3),
    one row per atom passed to the engine (link atoms included), in the same order.
    """

    centers: np.ndarray
    t0: np.ndarray
    t1: np.ndarray
    t2: np.ndarray


@dataclass(frozen=True)
class QMMoments:
    """Multipole moments of the QM region (nuclei + electrons) about a centre.

    m0 in e, m1 in e nm, m2 (3, 3) in e nm^2 (second moment sum q (r-c)(r-c)^T; traceless from an
    engine that couples only the harmonic part of t2, as the xtb engine does).
    The interaction energy with a :class:`PolynomialPotential` is
    t0 m0 + t1 . m1 + 1/2 t2 : m2, and m0, m1, 1/2 m2 are its derivatives with respect to t0, t1, t2.
    For an :class:`AtomicPolynomialPotential` each has a leading atom axis (m0 (n,), m1 (n, 3), m2 (n, 3, 3)):
    atom A's nucleus and the density rows of its basis functions, about c_A.
    """

    m0: float | np.ndarray
    m1: np.ndarray
    m2: np.ndarray


@dataclass(frozen=True)
class QMInfo:
    """Per-call statistics of an engine call."""

    scf_cycles: int
    converged: bool
    wall_time: float  # s
    attempts: tuple[SCFAttempt, ...] = ()
    warm_start: bool = False
    spin_square: float | None = None  # <S^2> of an unrestricted determinant; None when restricted


@dataclass(frozen=True)
class QMResult:
    """What an engine returns for one geometry (OpenMM units).

    energy: E_QM including the interaction with every MM charge and the external
    potential, kJ/mol. qm_forces (n_qm, 3) and mm_forces (n_mm, 3): kJ/mol/nm.
    mm_potentials: electrostatic potential of the QM region (nuclei + electrons) at the
    MM charges requested with ``potential_at``, kJ/mol/e (= dE/dq_j).
    moments: QM multipoles about the centre of the external potential, if one was given;
    center_gradient: then also dE/dc, the derivative with respect to the potential's centre c at fixed
    t0, t1, t2, kJ/mol/nm (-(m0 t1 + t2 m1) for an exact polynomial coupling); both per atom, (n, ...), for an
    :class:`AtomicPolynomialPotential`.
    dipole: Σ_A Z_A R_A − ∫ ρ r, about the coordinate origin (e nm); its derivatives give IR intensities.
    """

    energy: float
    qm_forces: np.ndarray
    mm_forces: np.ndarray
    info: QMInfo
    mm_potentials: np.ndarray = field(default_factory=lambda: np.zeros(0))
    moments: QMMoments | None = None
    atomic_charges: np.ndarray | None = None  # Mulliken charges of the QM atoms (link atoms included), e
    center_gradient: np.ndarray | None = None
    dipole: np.ndarray | None = None  # dipole of the QM region (nuclei + electrons) about the origin, e nm


@runtime_checkable
class QMEngine(Protocol):
    """Protocol every QM engine implements.

    ``potentials``: whether :meth:`compute` returns potentials at MM charges (``potential_at``); the
    periodic embedding switches charges by scaling them where it does, by moving them otherwise.
    ``atomic_external``: whether ``external`` may be an :class:`AtomicPolynomialPotential`; the periodic
    embedding then expands its far field about every QM atom instead of the region's centroid.
    """

    potentials: bool
    atomic_external: bool

    def validate(self, symbols: list[str], charge: int, multiplicity: int) -> None:
        """Raise :class:`bioqmmm.errors.InputError` if the input cannot be computed.

        Called once when a QM/MM system is built, before any SCF.
        """

    def compute(
        self,
        symbols: list[str],
        coordinates: np.ndarray,
        charge: int,
        multiplicity: int,
        mm_positions: np.ndarray,
        mm_charges: np.ndarray,
        *,
        potential_at: np.ndarray | None = None,
        external: PolynomialPotential | AtomicPolynomialPotential | None = None,
        step: int | None = None,
        gradients: bool = True,
    ) -> QMResult:
        """Energy and forces of the QM region in the field of MM point charges.

        coordinates (n, 3) and mm_positions (m, 3) in nm; mm_charges (m,) in e.
        ``potential_at``: indices of MM charges at which to return the QM potential.
        ``step`` (the OpenMM step count) labels the call in errors, and an engine may use an equally
        spaced sequence of steps to extrapolate its SCF guess (:mod:`bioqmmm.qm.extrapolation`).
        ``gradients=False``: the energy only (forces returned as zeros; potentials and moments as asked), for
        callers that need no forces (reweighting, FEP rows, stresses); an engine whose gradients come free
        with the energy may compute them anyway. The energy is the same either way.
        Never returns unconverged results: raises :class:`bioqmmm.errors.SCFConvergenceError` instead.
        """

    def get_state(self) -> dict[str, np.ndarray]:
        """Arrays that restore the engine's run-to-run state (e.g. the SCF guess) for a checkpoint."""

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`get_state` returned."""


def atomic_number(symbol: str) -> int:
    """The atomic number of an element symbol (``"Zn"`` → 30)."""
    try:
        return app.element.Element.getBySymbol(symbol).atomic_number
    except KeyError:
        raise InputError(f"unknown element {symbol!r}") from None


def check_electrons(symbols: Sequence[str], charge: int, multiplicity: int) -> None:
    """Raise :class:`~bioqmmm.errors.InputError` unless ``charge`` leaves electrons whose count fits
    ``multiplicity`` (2S + 1 with S = unpaired / 2, so parity and count both matter)."""
    if multiplicity < 1 or int(multiplicity) != multiplicity:
        raise InputError(f"multiplicity must be a positive integer, got {multiplicity}")
    nuclear = sum(atomic_number(s) for s in symbols)
    n_electrons = nuclear - charge
    if n_electrons <= 0:
        raise InputError(f"charge {charge} leaves {n_electrons} electrons in the QM region ({len(symbols)} atoms, "
                         f"nuclear charge {nuclear}): the charge is wrong")
    unpaired = multiplicity - 1
    if n_electrons < unpaired or (n_electrons - unpaired) % 2:
        raise InputError(
            f"charge {charge} and multiplicity {multiplicity} are inconsistent with "
            f"{n_electrons} electrons in the QM region ({len(symbols)} atoms): "
            f"{'an odd' if n_electrons % 2 else 'an even'} electron count needs "
            f"{'an even' if n_electrons % 2 else 'an odd'} multiplicity"
        )
