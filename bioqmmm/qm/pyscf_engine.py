"""PySCF as a QM engine: HF or any DFT functional, electrostatic embedding, exact gradients.

The MM point charges enter the one-electron Hamiltonian through ``pyscf.qmmm.mm_charge``
(PySCF >= 2.11 gives correct MM-charge gradients). With ``device="gpu"`` the SCF and the
gradients run on a CUDA GPU through gpu4pyscf's classes of the same names (``scf``, ``dft``,
``qmmm.mm_charge``); everything else -- the far-field operator and its gradients, potentials,
moments, the SCF guesses -- stays on the CPU with NumPy arrays, so the two paths share every
line but the backend (:class:`_Backend`). An optional smooth external potential
(:class:`~bioqmmm.qm.base.PolynomialPotential` about one centre or
:class:`~bioqmmm.qm.base.AtomicPolynomialPotential` about each atom, the far field of a periodic
embedding) enters as a second-order polynomial operator, partitioned by the atom of the bra basis
function and symmetrised; its Hellmann-Feynman and basis-function (Pulay) gradients are added here,
so forces stay the exact gradient of the energy.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyscf import dft, gto, lib, qmmm, scf
from threadpoolctl import threadpool_limits

from bioqmmm.errors import InputError, SCFAttempt, SCFConvergenceError
from bioqmmm.qm.base import (
    AtomicPolynomialPotential,
    PolynomialPotential,
    QMInfo,
    QMMoments,
    QMResult,
    check_electrons,
)
from bioqmmm.qm.extrapolation import DensityExtrapolator
from bioqmmm.qm.ladder import DEFAULT_LADDER, SCFStrategy
from bioqmmm.units import BOHR_NM, HARTREE_KJMOL, HARTREE_PER_BOHR_KJMOL_NM

logger = logging.getLogger(__name__)

_HF_NAMES = {"hf": None, "rhf": True, "uhf": False}


@dataclass(frozen=True)
class PySCFOptions:
    """Settings of :class:`PySCFEngine`; a misspelt keyword is an error.

    conv_tol: SCF energy tolerance (Hartree). density_fit: None means on for DFT, off
    for HF. restricted: None means restricted for singlets, unrestricted otherwise.
    grid_level: PySCF DFT grid level. grid_response: include the DFT grid-weight
    derivatives so forces are the exact gradient. threads: OpenMP threads for PySCF, a
    process-wide setting for PySCF's OpenMP (at each call) and NumPy's BLAS (at the first call
    in a process); None leaves the defaults.
    device: ``"cpu"`` (PySCF) or ``"gpu"`` (gpu4pyscf on a CUDA GPU; needs the package
    ``gpu4pyscf-cuda12x`` or ``-cuda13x``).
    warm_start: start each SCF from the previous densities (:mod:`bioqmmm.qm.extrapolation`);
    density_history: how many past densities the always-stable predictor extrapolates along an
    MD run (1: the previous density alone).
    """

    method: str = "b3lyp"
    basis: str = "6-31g*"
    conv_tol: float = 1e-9
    conv_tol_grad: float | None = None
    max_cycle: int = 50
    density_fit: bool | None = None
    restricted: bool | None = None
    grid_level: int = 3
    grid_response: bool = True
    threads: int | None = None
    device: str = "cpu"
    warm_start: bool = True
    density_history: int = 4
    ladder: tuple[SCFStrategy, ...] = DEFAULT_LADDER
    max_memory: int = 4000  # MB
    verbose: int = 0


class PySCFEngine:
    """QM engine backed by PySCF.

    >>> engine = PySCFEngine(method="b3lyp", basis="6-31g*", conv_tol=1e-9)

    Keeps the converged densities of the last calls and starts the next SCF from their
    extrapolation (:class:`~bioqmmm.qm.extrapolation.DensityExtrapolator`); they are dropped
    when the atom set, charge or multiplicity changes.
    """

    potentials = True
    atomic_external = True

    def __init__(self, method: str = "b3lyp", basis: str = "6-31g*", **options) -> None:
        known = {f.name for f in dataclasses.fields(PySCFOptions)} - {"method", "basis"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"unknown PySCFEngine option(s) {unknown}; known options: {sorted(known)}")
        self.options = PySCFOptions(method=method.lower().strip(), basis=basis, **options)
        self._is_hf = self.options.method in _HF_NAMES
        self._backend = _backend(self.options.device)
        if not self._is_hf:
            try:
                dft.libxc.parse_xc(self.options.method)
            except Exception as exc:  # PySCF raises KeyError/ValueError for unknown names
                raise InputError(f"unknown QM method {method!r}: neither HF nor a functional PySCF knows") from exc
        if self.options.density_history < 1:
            raise InputError(f"density_history must be at least 1, got {self.options.density_history}")
        self._densities = DensityExtrapolator(self.options.density_history)
        self._blas_limited = False
        self.calls = 0

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_densities"] = DensityExtrapolator(self.options.density_history)
        state["_blas_limited"] = False
        del state["_backend"]  # modules do not pickle; rebuilt from options.device
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._backend = _backend(self.options.device)

    def get_state(self) -> dict[str, np.ndarray]:
        """The past densities the next SCF guess is built from (and their region and steps), for checkpoints."""
        return self._densities.get_state()

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`get_state`."""
        self._densities.set_state(state)

    # ----------------------------------------------------------------- validation
    def restricted_for(self, multiplicity: int) -> bool:
        """Whether a closed-shell (restricted) reference is used at this multiplicity."""
        forced = _HF_NAMES.get(self.options.method) if self._is_hf else None
        choice = self.options.restricted if self.options.restricted is not None else forced
        return multiplicity == 1 if choice is None else choice

    def validate(self, symbols: list[str], charge: int, multiplicity: int) -> None:
        """Check electron count, spin and basis before any SCF; raise InputError."""
        if not symbols:
            raise InputError("the QM region has no atoms")
        check_electrons(symbols, charge, multiplicity)
        if multiplicity > 1 and self.restricted_for(multiplicity):
            raise InputError(
                f"restricted method {self.options.method!r} cannot describe multiplicity {multiplicity}; "
                "use an unrestricted method (e.g. 'uhf') or restricted=False"
            )
        for element in sorted(set(symbols)):
            try:
                if not gto.basis.load(self.options.basis, element):
                    raise KeyError(element)
            except Exception as exc:
                raise InputError(f"basis {self.options.basis!r} is not known to PySCF for element {element}") from exc

    # ---------------------------------------------------------------- computation
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
        """See :meth:`bioqmmm.qm.base.QMEngine.compute` (OpenMM units in and out)."""
        start = time.perf_counter()
        self.calls += 1
        if self.options.threads:
            lib.num_threads(self.options.threads)
            if not self._blas_limited:  # NumPy's BLAS, used around the SCF (the limit is per process)
                threadpool_limits(self.options.threads, user_api="blas")
                self._blas_limited = True
        mol = self._molecule(symbols, np.asarray(coordinates) / BOHR_NM, charge, multiplicity)
        mm_bohr = np.asarray(mm_positions, dtype=float).reshape(-1, 3) / BOHR_NM
        mm_q = np.asarray(mm_charges, dtype=float).reshape(-1)
        ext = _external_in_au(external, mol.natm) if external is not None else None
        overlap = mol.intor_symmetric("int1e_ovlp")  # shared by the guess, the multipoles and Mulliken
        ints = _multipole_integrals(mol, ext.centers, overlap) if ext is not None else None

        key = (tuple(symbols), charge, multiplicity)
        guess = self._densities.guess(key, overlap, step) if self.options.warm_start else None
        mf, attempts = self._converge(mol, mm_bohr, mm_q, ext, ints, guess, step)
        dm = self._backend.to_numpy(mf.make_rdm1())
        self._densities.add(key, overlap, dm, step)
        dm_total = dm if dm.ndim == 2 else dm[0] + dm[1]

        energy = _total_energy(mf, mol, ext)
        if gradients:
            grad_qm, grad_mm = self._gradients(mf, mol, dm_total, mm_q, ext)
        else:
            grad_qm, grad_mm = np.zeros((mol.natm, 3)), np.zeros((mm_q.size, 3))
        potentials = _potentials(mol, dm_total, mm_bohr[potential_at]) if potential_at is not None else np.zeros(0)
        moments = _moments(mol, dm_total, ext, ints) if ext is not None else None
        info = QMInfo(
            scf_cycles=sum(a.cycles for a in attempts),
            converged=True,
            wall_time=time.perf_counter() - start,
            attempts=tuple(attempts),
            warm_start=guess is not None,
            spin_square=float(self._backend.to_numpy(mf.spin_square()[0])) if dm.ndim == 3 else None,
        )
        return QMResult(
            energy=energy * HARTREE_KJMOL,
            qm_forces=-grad_qm * HARTREE_PER_BOHR_KJMOL_NM,
            mm_forces=-grad_mm * HARTREE_PER_BOHR_KJMOL_NM,
            info=info,
            mm_potentials=potentials * HARTREE_KJMOL,
            moments=moments,
            atomic_charges=_mulliken_charges(mol, dm_total, overlap),
            center_gradient=None if moments is None else _center_gradient(moments, external),
            dipole=_dipole(mol, dm_total),
        )

    def _molecule(self, symbols, coords_bohr, charge, multiplicity) -> gto.Mole:
        return gto.M(
            atom=[(s, tuple(x)) for s, x in zip(symbols, coords_bohr, strict=True)],
            unit="Bohr",
            basis=self.options.basis,
            charge=charge,
            spin=multiplicity - 1,
            verbose=self.options.verbose,
            max_memory=self.options.max_memory,
        )

    def _base_method(self, mol: gto.Mole, multiplicity: int):
        restricted = self.restricted_for(multiplicity)
        if self._is_hf:
            mf = self._backend.scf.RHF(mol) if restricted else self._backend.scf.UHF(mol)
        else:
            mf = self._backend.dft.RKS(mol) if restricted else self._backend.dft.UKS(mol)
            mf.xc = self.options.method
            mf.grids.level = self.options.grid_level
        density_fit = self.options.density_fit if self.options.density_fit is not None else not self._is_hf
        return mf.density_fit() if density_fit else mf

    def _scf_object(self, mol, mm_bohr, mm_q, h1e):
        mf = self._base_method(mol, mol.spin + 1)
        if mm_q.size:
            mf = self._backend.mm_charge(mf, mm_bohr, mm_q, unit="Bohr")
        if h1e is not None:
            h1e = self._backend.from_numpy(h1e)
            mf.get_hcore = lambda *args, **kwargs: h1e
        mf.conv_tol = self.options.conv_tol
        if self.options.conv_tol_grad is not None:
            mf.conv_tol_grad = self.options.conv_tol_grad
        mf.verbose = self.options.verbose
        return mf

    def _converge(self, mol, mm_bohr, mm_q, ext, ints, guess, step):
        """Run the ladder; return the converged SCF object and the attempts made."""
        template = self._scf_object(mol, mm_bohr, mm_q, None)
        h1e = self._backend.to_numpy(template.get_hcore())
        if ext is not None:
            h1e = h1e - _polynomial_operator(ints, ext)
        attempts: list[SCFAttempt] = []
        for strategy in self.options.ladder:
            if strategy.diis not in ("cdiis", "none") and strategy.diis not in self._backend.diis:
                continue  # this backend has no such DIIS variant (gpu4pyscf: CDIIS only)
            mf = self._scf_object(mol, mm_bohr, mm_q, h1e)
            mf = _apply_strategy(mf, strategy, self.options.max_cycle, self._backend)
            dm0 = None if strategy.fresh_guess else guess
            mf.kernel(dm0=dm0)
            attempts.append(
                SCFAttempt(strategy.name, int(getattr(mf, "cycles", 0)), bool(mf.converged), float(mf.e_tot))
            )
            if mf.converged:
                if len(attempts) > 1:
                    logger.warning("SCF at step %s converged only with strategy %r", step, strategy.name)
                return (mf.undo_soscf() if strategy.second_order else mf), attempts
            logger.warning(
                "SCF strategy %r failed at step %s after %d cycles", strategy.name, step, attempts[-1].cycles
            )
            guess = self._backend.to_numpy(mf.make_rdm1())
        raise SCFConvergenceError(step, attempts)

    def _gradients(self, mf, mol, dm_total, mm_q, ext) -> tuple[np.ndarray, np.ndarray]:
        """dE/dR of the QM atoms and of the MM charges (Hartree/Bohr), the external polynomial's included."""
        grad = mf.nuc_grad_method()
        if not self._is_hf:
            grad.grid_response = self.options.grid_response
        grad.verbose = self.options.verbose
        grad_qm = self._backend.to_numpy(grad.kernel())
        grad_mm = grad.grad_hcore_mm(dm_total) + grad.grad_nuc_mm() if mm_q.size else np.zeros((0, 3))
        if ext is not None:
            d = mol.atom_coords() - ext.centers
            grad_qm = (grad_qm + mol.atom_charges()[:, None] * (ext.t1 + np.einsum("iab,ib->ia", ext.t2, d))
                       + _polynomial_pulay(mol, dm_total, ext))
        return grad_qm, grad_mm


def _total_energy(mf, mol, ext) -> float:
    """E_SCF plus the nuclei's energy in the external polynomial (the electrons' is in the SCF), Hartree."""
    energy = float(mf.e_tot)
    if ext is not None:
        d = mol.atom_coords() - ext.centers
        potential = ext.t0 + np.einsum("ia,ia->i", d, ext.t1) + 0.5 * np.einsum("ia,iab,ib->i", d, ext.t2, d)
        energy += float(mol.atom_charges() @ potential)
    return energy


def _apply_strategy(mf, strategy: SCFStrategy, default_max_cycle: int, backend: _Backend):
    mf.max_cycle = strategy.max_cycle or default_max_cycle
    mf.level_shift = strategy.level_shift
    mf.damp = strategy.damp
    if strategy.diis == "none":
        mf.diis = False
    elif strategy.diis in backend.diis:
        mf.DIIS = backend.diis[strategy.diis]
    return mf.newton() if strategy.second_order else mf


@dataclass(frozen=True)
class _Backend:
    """The PySCF classes an engine builds its SCF from, and the array conversions at the seam."""

    scf: Any
    dft: Any
    mm_charge: Callable
    to_numpy: Callable[[Any], np.ndarray]
    from_numpy: Callable[[np.ndarray], Any]
    diis: dict[str, type]  # extrapolation schemes of the ladder beyond the default CDIIS


_CPU = _Backend(scf, dft, qmmm.mm_charge, np.asarray, np.asarray, {"adiis": scf.ADIIS, "ediis": scf.EDIIS})


def _backend(device: str) -> _Backend:
    """CPU (PySCF) or GPU (gpu4pyscf, same interface; its SCF has CDIIS only, so the ladder's ADIIS and
    EDIIS rungs are skipped there)."""
    if device == "cpu":
        return _CPU
    if device != "gpu":
        raise InputError(f"unknown device {device!r}: use 'cpu' or 'gpu'")
    try:
        import cupy
        from gpu4pyscf import dft as gpu_dft
        from gpu4pyscf import scf as gpu_scf
        from gpu4pyscf.qmmm.itrf import mm_charge

        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # ImportError, an older gpu4pyscf, or CUDA without a device
        raise InputError(
            f"device='gpu' needs gpu4pyscf (pip install gpu4pyscf-cuda12x or -cuda13x) and a CUDA GPU: {exc}"
        ) from exc
    return _Backend(gpu_scf, gpu_dft, mm_charge, cupy.asnumpy, cupy.asarray, {})


@dataclass(frozen=True)
class _AtomicExternal:
    """An external polynomial per atom in atomic units (centres Bohr, t0 Eh/e, t1 Eh/e/Bohr, t2 Eh/e/Bohr^2),
    the electrons of atom A's basis functions seeing phi_A; ``per_atom`` False when it came as one
    :class:`PolynomialPotential` (every row the same), whose moments and centre gradient are then summed."""

    centers: np.ndarray
    t0: np.ndarray
    t1: np.ndarray
    t2: np.ndarray
    per_atom: bool


def _external_in_au(external: PolynomialPotential | AtomicPolynomialPotential, natm: int) -> _AtomicExternal:
    """The external potential per atom in atomic units; one centre's polynomial is the same on every atom."""
    per_atom = isinstance(external, AtomicPolynomialPotential)
    centers = np.asarray(external.centers if per_atom else external.center, dtype=float)
    t0, t1, t2 = (np.asarray(t, dtype=float) for t in (external.t0, external.t1, external.t2))
    if per_atom and not (centers.shape == (natm, 3) and t0.shape == (natm,) and t1.shape == (natm, 3)
                         and t2.shape == (natm, 3, 3)):
        raise InputError(f"an atomic external potential needs one row per QM atom ({natm}); got centers "
                         f"{centers.shape}, t0 {t0.shape}, t1 {t1.shape}, t2 {t2.shape}")
    rows = (natm,)
    return _AtomicExternal(np.broadcast_to(centers, (*rows, 3)) / BOHR_NM,
                           np.broadcast_to(t0, rows) / HARTREE_KJMOL,
                           np.broadcast_to(t1, (*rows, 3)) * BOHR_NM / HARTREE_KJMOL,
                           np.broadcast_to(t2, (*rows, 3, 3)) * BOHR_NM**2 / HARTREE_KJMOL, per_atom)


def _multipole_integrals(mol: gto.Mole, centers_bohr: np.ndarray, overlap: np.ndarray) -> list[tuple]:
    """Per atom A: (p0, p1, S rows, <mu|(r-c_A)_a|nu> (3, nA, nao), <mu|(r-c_A)_a (r-c_A)_b|nu> (3, 3, nA, nao))
    for the rows mu of A's basis functions (p0:p1)."""
    rows = []
    for atom, (s0, s1, p0, p1) in enumerate(mol.aoslice_by_atom()):
        with mol.with_common_orig(centers_bohr[atom]):
            r = mol.intor("int1e_r", shls_slice=(s0, s1, 0, mol.nbas))
            rr = mol.intor("int1e_rr", shls_slice=(s0, s1, 0, mol.nbas)).reshape(3, 3, p1 - p0, mol.nao)
        rows.append((p0, p1, overlap[p0:p1], r, rr))
    return rows


def _polynomial_operator(ints: list[tuple], ext: _AtomicExternal) -> np.ndarray:
    """V = 1/2 (P + P^T), P_mu,nu = <mu| phi_A |nu> for mu on atom A, phi_A = t0 + t1.(r-c) + 1/2 (r-c)^T t2 (r-c)."""
    nao = ints[0][2].shape[1]
    rows = np.zeros((nao, nao))
    for atom, (p0, p1, s, r, rr) in enumerate(ints):
        rows[p0:p1] = (ext.t0[atom] * s + np.einsum("a,apq->pq", ext.t1[atom], r)
                       + 0.5 * np.einsum("ab,abpq->pq", ext.t2[atom], rr))
    return 0.5 * (rows + rows.T)


def _polynomial_pulay(mol: gto.Mole, dm: np.ndarray, ext: _AtomicExternal) -> np.ndarray:
    """Gradient of -Tr[D V] with respect to the basis-function centres, (natm, 3), at fixed centres c_A.

    -Tr[D V] = -sum_A sum_{mu on A, nu} D_mu,nu <mu|phi_A|nu>; moving atom B moves its functions
    (d mu / dR_B = -grad mu): the bra rows of B with phi_B, and the ket columns of B with every phi_A.
    PySCF's int1e_irp and int1e_irrp (<p| r_a d_b |q>, <p| r_a r_c d_b |q>) put the nabla on the ket, so
    their (all, A) slices transposed give the bra derivatives; int1e_ipovlp puts it on the bra.
    """
    nao, nbas = mol.nao, mol.nbas
    grad = np.zeros((mol.natm, 3))
    ket = np.zeros((nao, 3))  # sum over rows of D_mu,nu <mu|phi_A|d_b nu>, per ket function nu
    for atom, (s0, s1, p0, p1) in enumerate(mol.aoslice_by_atom()):
        n = p1 - p0
        t0, t1, t2 = ext.t0[atom], ext.t1[atom], ext.t2[atom]
        with mol.with_common_orig(ext.centers[atom]):
            irp_row = mol.intor("int1e_irp", comp=9, shls_slice=(s0, s1, 0, nbas)).reshape(3, 3, n, nao)
            irp_col = mol.intor("int1e_irp", comp=9, shls_slice=(0, nbas, s0, s1)).reshape(3, 3, nao, n)
            irrp_row = mol.intor("int1e_irrp", comp=27, shls_slice=(s0, s1, 0, nbas)).reshape(3, 3, 3, n, nao)
            irrp_col = mol.intor("int1e_irrp", comp=27, shls_slice=(0, nbas, s0, s1)).reshape(3, 3, 3, nao, n)
        ip_row = mol.intor("int1e_ipovlp", comp=3, shls_slice=(s0, s1, 0, nbas))  # <d_b mu|nu>
        ip_col = mol.intor("int1e_ipovlp", comp=3, shls_slice=(0, nbas, s0, s1))  # <d_b nu|mu>
        bra = (t0 * ip_row + np.einsum("a,abqp->bpq", t1, irp_col)
               + 0.5 * np.einsum("ac,acbqp->bpq", t2, irrp_col))  # <d_b mu|phi_A|nu>
        ket_ops = (t0 * ip_col.transpose(0, 2, 1) + np.einsum("a,abpq->bpq", t1, irp_row)
                   + 0.5 * np.einsum("ac,acbpq->bpq", t2, irrp_row))  # <mu|phi_A|d_b nu>
        grad[atom] += np.einsum("bpq,pq->b", bra, dm[p0:p1])
        ket += np.einsum("bpq,pq->qb", ket_ops, dm[p0:p1])
    for atom, (_, _, p0, p1) in enumerate(mol.aoslice_by_atom()):
        grad[atom] += ket[p0:p1].sum(axis=0)
    return grad


def _mulliken_charges(mol: gto.Mole, dm: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """Mulliken atomic charges (e): Z_A − Σ_{μ on A} (D S)_μμ."""
    population = np.einsum("pq,qp->p", dm, overlap)
    charges = mol.atom_charges().astype(float)
    for atom, (_, _, p0, p1) in enumerate(mol.aoslice_by_atom()):
        charges[atom] -= population[p0:p1].sum()
    return charges


def _dipole(mol: gto.Mole, dm: np.ndarray) -> np.ndarray:
    """Dipole of nuclei and electrons about the origin, e nm: Σ Z_A R_A − Tr(D r)."""
    electrons = np.einsum("apq,qp->a", mol.intor_symmetric("int1e_r"), dm)
    return (mol.atom_charges() @ mol.atom_coords() - electrons) * BOHR_NM


def _potentials(mol: gto.Mole, dm: np.ndarray, points_bohr: np.ndarray) -> np.ndarray:
    """Electrostatic potential of the QM nuclei and electrons at points (Eh/e)."""
    if len(points_bohr) == 0:
        return np.zeros(0)
    diff = points_bohr[:, None, :] - mol.atom_coords()[None]
    v_nuc = (mol.atom_charges()[None] / np.linalg.norm(diff, axis=2)).sum(axis=1)
    v_el = np.empty(len(points_bohr))
    for i0, i1 in lib.prange(0, len(points_bohr), 200):
        ints = mol.intor("int1e_grids", grids=points_bohr[i0:i1])
        v_el[i0:i1] = np.einsum("kpq,qp->k", ints, dm)
    return v_nuc - v_el


def _moments(mol: gto.Mole, dm: np.ndarray, ext: _AtomicExternal, ints: list[tuple]) -> QMMoments:
    """Charge (e), first (e nm) and second (e nm^2) moments of each atom's nucleus and density rows about c_A,
    m_A = Z_A d_A^l - sum_{mu on A, nu} D_mu,nu <mu|(r - c_A)^l|nu>; summed over atoms for one centre."""
    z = mol.atom_charges()
    d = mol.atom_coords() - ext.centers
    m0 = z.astype(float)
    m1 = z[:, None] * d
    m2 = z[:, None, None] * np.einsum("ia,ib->iab", d, d)
    for atom, (p0, p1, s, r, rr) in enumerate(ints):
        rows = dm[p0:p1]
        m0[atom] -= np.einsum("pq,pq->", s, rows)
        m1[atom] -= np.einsum("apq,pq->a", r, rows)
        m2[atom] -= np.einsum("abpq,pq->ab", rr, rows)
    if not ext.per_atom:
        return QMMoments(m0=float(m0.sum()), m1=m1.sum(axis=0) * BOHR_NM, m2=m2.sum(axis=0) * BOHR_NM**2)
    return QMMoments(m0=m0, m1=m1 * BOHR_NM, m2=m2 * BOHR_NM**2)


def _center_gradient(moments: QMMoments, external: PolynomialPotential | AtomicPolynomialPotential) -> np.ndarray:
    """dE/dc at fixed tensors, kJ/mol/nm: -(m0 t1 + t2 m1), per centre."""
    t1, t2 = np.asarray(external.t1, dtype=float), np.asarray(external.t2, dtype=float)
    return -(np.asarray(moments.m0)[..., None] * t1 + np.einsum("...ab,...b->...a", t2, moments.m1))
