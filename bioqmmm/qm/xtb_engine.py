"""GFN2-xTB (or GFN1-xTB) as a QM engine, in-process through xtb-python, with point-charge embedding.

The MM charges enter xtb's self-consistent-charge Hamiltonian as external point charges: each shell
charge q_s of a QM atom A interacts with each MM charge q_j through the damped kernel

    GFN2:  gamma = 1 / sqrt(r^2 + (2 / (eta_s + eta_j))^2)
    GFN1:  gamma = 1 / (r^2 + ((1/eta_s + 1/eta_j) / 2)^2)  (generalised, exponent 2)

where eta_j is the chemical hardness of the element given to the point charge (``charge_element``,
nitrogen by default, as in xtb's own ``$embedding``); far from the QM region gamma tends to 1/r
(docs/theory.md). The forces on the point charges come from libxtb's ``xtb_getPCGradient``, called with
ctypes on the calculator's own handles (xtb-python does not wrap it).

An external second-order polynomial potential (the far field of a periodic embedding) cannot be given to
xtb directly. Its constant term couples to the total charge only (added exactly); its first- and
second-order harmonic terms are reproduced by twelve charges on an icosahedron of radius
``VIRTUAL_RADIUS`` about the expansion centre, where the kernel is bare Coulomb to 1e-10 and the
expansion is exact to (r/R)^2 ~ 1e-7. xtb couples potentials to atomic (shell) charges only, so the
multipoles the embedding needs are those of xtb's atomic charges; the isotropic part of the second-order
term (nonzero only for a net-charged MM box) is not representable by exterior charges and is dropped,
consistently in the energy, the moments and the gradients.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import ThreadpoolController

from bioqmmm.errors import InputError, SCFAttempt, SCFConvergenceError
from bioqmmm.qm.base import PolynomialPotential, QMInfo, QMMoments, QMResult, atomic_number, check_electrons
from bioqmmm.units import BOHR_NM, HARTREE_KJMOL, HARTREE_PER_BOHR_KJMOL_NM

logger = logging.getLogger(__name__)

METHODS = ("gfn2", "gfn1")
MAX_ELEMENT = 86  # GFN1- and GFN2-xTB are parametrised up to radon

#: Radius of the icosahedron of charges that carries an external polynomial potential (Bohr): far enough
#: that xtb's damping is invisible ((2/eta)^2 / R^2 < 1e-10) and the l >= 3 leakage small ((r/R)^2), near
#: enough that the charges (~ t2 R^3) keep 10 significant digits in the potential they sum to.
VIRTUAL_RADIUS = 1.0e4


@dataclass(frozen=True)
class XTBOptions:
    """Settings of :class:`XTBEngine`, with xtb's defaults.

    method: ``"gfn2"`` or ``"gfn1"``. accuracy: xtb's accuracy factor (SCC energy and charge convergence
    scale with it; 1e-4 is its tightest). electronic_temperature: Fermi smearing of the occupations, K.
    max_iterations: SCC iterations per attempt. charge_element: atomic number whose chemical hardness the
    MM point charges carry in the damped Coulomb kernel (7, nitrogen: xtb's default).
    warm_start: start each SCC from the previous call's charges. threads: threads of the OpenMP and
    OpenBLAS runtimes xtb-python bundles (PySCF's and NumPy's are not touched), set at the first call;
    1 by default: for QM regions of tens of atoms more threads cost more in wake-ups than they save
    (benchmarks/xtb_step.py); raise it for large regions.
    """

    method: str = "gfn2"
    accuracy: float = 1.0
    electronic_temperature: float = 300.0
    max_iterations: int = 250
    charge_element: int = 7
    warm_start: bool = True
    threads: int = 1


def check_options(options: XTBOptions) -> None:
    """Raise InputError for settings xtb cannot run."""
    if options.method not in METHODS:
        raise InputError(f"unknown xtb method {options.method!r}; known: {', '.join(METHODS)}")
    if not 1e-4 <= options.accuracy <= 1e3:
        raise InputError(f"xtb accuracy must lie in [1e-4, 1e3], got {options.accuracy}")
    if options.electronic_temperature < 0:
        raise InputError(f"electronic_temperature must be >= 0 K, got {options.electronic_temperature}")
    if options.threads < 1:
        raise InputError(f"threads must be at least 1, got {options.threads}")
    if options.max_iterations < 1:
        raise InputError(f"max_iterations must be at least 1, got {options.max_iterations}")
    if not 1 <= options.charge_element <= MAX_ELEMENT:
        raise InputError(f"charge_element must be an atomic number 1-{MAX_ELEMENT}, got {options.charge_element}")


#: libxtb's OpenMP threads otherwise spin after each call, competing with OpenMM's threads: passive
#: waiting (unless the user chose a policy) took a 22-atom GFN2 MD step from 0.12 to 0.01 s on 2 cores.
#: xtb's bundled libgomp reads it when it loads, so it is set when this module is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _xtb():
    """xtb-python's interface module and libxtb opened with ctypes; InputError naming what to install."""
    try:
        import xtb
        from xtb import interface
        from xtb.libxtb import VERBOSITY_MUTED, ffi
    except ImportError as exc:
        raise InputError(
            "the xtb engine needs xtb-python: pip install xtb cffi typing_extensions (wheels for CPython 3.10 "
            f"and 3.11): {exc}"
        ) from exc
    libraries = sorted(glob.glob(os.path.join(os.path.dirname(xtb.__file__), os.pardir, "xtb.libs", "libxtb*")))
    if not libraries:
        raise InputError("xtb-python is installed without its bundled libxtb (xtb.libs/libxtb*): reinstall xtb")
    lib = ctypes.CDLL(libraries[0])  # the library xtb-python has loaded: dlopen returns the same handle
    lib.xtb_getPCGradient.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_double)]
    lib.xtb_getPCGradient.restype = None
    return interface, ffi, lib, VERBOSITY_MUTED


def _limit_xtb_threads(threads: int) -> None:
    """Cap the thread pools of the libraries bundled with xtb-python (its libgomp and OpenBLAS) only."""
    controller = ThreadpoolController()
    bundled = [lib.filepath for lib in controller.lib_controllers if f"{os.sep}xtb.libs{os.sep}" in lib.filepath]
    if bundled:
        controller.select(filepath=bundled).limit(limits=threads)


def _icosahedron() -> np.ndarray:
    """The 12 unit vectors to the vertices of a regular icosahedron (a spherical 5-design)."""
    phi = (1.0 + 5.0**0.5) / 2.0
    vertices = []
    for a in (-1.0, 1.0):
        for b in (-phi, phi):
            vertices += [(0.0, a, b), (a, b, 0.0), (b, 0.0, a)]
    v = np.array(vertices)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _polynomial_charges_map(directions: np.ndarray, radius: float) -> np.ndarray:
    """Matrix L with q = L @ [t1 (3), T_xx, T_yy, T_zz, T_xy, T_xz, T_yz, 0]: charges on ``radius`` * directions
    whose potential inside is t1 . d + 1/2 d^T T d (T traceless) + O(d^3 / R^3), with zero net charge.

    From 1/|R s - d| = 1/R + s.d/R^2 + (3 (s.d)^2 - d^2) / (2 R^3) + ...: sum q s / R^2 = t1,
    sum q (3 s s^T - 1) / R^3 = T, sum q / R = 0; the minimum-norm solution.
    """
    rows = [directions[:, a] / radius**2 for a in range(3)]
    for a, b in ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)):
        rows.append((3.0 * directions[:, a] * directions[:, b] - (a == b)) / radius**3)
    rows.append(np.ones(len(directions)) / radius)
    return np.linalg.pinv(np.array(rows), rcond=1e-12)


_DIRECTIONS = _icosahedron()
_POLYNOMIAL_MAP = _polynomial_charges_map(_DIRECTIONS, VIRTUAL_RADIUS)


@dataclass(frozen=True)
class _Attempt:
    name: str
    fresh_guess: bool
    iterations_factor: int


#: What the engine tries, in order, before raising SCFConvergenceError (xtb's own Broyden mixing inside).
XTB_LADDER = (_Attempt("warm_start", False, 1), _Attempt("fresh_guess", True, 1), _Attempt("fresh_long", True, 4))


class XTBEngine:
    """QM engine backed by xtb-python (GFN2-xTB by default).

    >>> engine = XTBEngine("gfn2", accuracy=0.01)

    Keeps one xtb calculator (and its last results, the next SCC's guess) per atom set, charge and
    multiplicity. The guess lives inside libxtb and is not part of :meth:`get_state`: a resumed run
    starts its first SCC from xtb's own guess and converges to the same charges.
    """

    potentials = False  # dE/dq at MM charges is not available from xtb (shell-resolved kernel)
    atomic_external = False  # the external potential reaches xtb only through point charges

    def __init__(self, method: str = "gfn2", **options) -> None:
        known = set(XTBOptions.__dataclass_fields__) - {"method"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"unknown XTBEngine option(s) {unknown}; known options: {sorted(known)}")
        self.options = XTBOptions(method=method.lower().strip(), **options)
        check_options(self.options)
        self.calls = 0
        self._connect()

    def _connect(self) -> None:
        """Load xtb and forget any calculator (a new engine, or one unpickled in another process)."""
        self._interface, self._ffi, self._lib, self._muted = _xtb()
        self._session: tuple | None = None  # (key, calculator, last converged results)
        self._threads_limited = False

    def __getstate__(self) -> dict:
        return {"options": self.options, "calls": self.calls}  # libxtb handles do not pickle

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._connect()

    def get_state(self) -> dict[str, np.ndarray]:
        """Nothing: the SCC guess stays inside libxtb (see the class docstring)."""
        return {}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Nothing to restore; the next SCC starts from xtb's guess."""

    def validate(self, symbols: list[str], charge: int, multiplicity: int) -> None:
        """Elements xtb knows, and an electron count that fits charge and multiplicity; InputError otherwise."""
        if not symbols:
            raise InputError("the QM region has no atoms")
        beyond = sorted({s for s in symbols if atomic_number(s) > MAX_ELEMENT})
        if beyond:
            raise InputError(f"{self.options.method}-xTB has no parameters for {', '.join(beyond)} (Z > {MAX_ELEMENT})")
        check_electrons(symbols, charge, multiplicity)

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
        external: PolynomialPotential | None = None,
        step: int | None = None,
        gradients: bool = True,
    ) -> QMResult:
        """See :meth:`bioqmmm.qm.base.QMEngine.compute` (OpenMM units in and out). ``potential_at`` is
        refused: the periodic embedding asks engines without potentials for none. ``gradients`` is accepted
        and ignored: xtb's singlepoint returns the gradient with the energy at no extra cost worth saving."""
        if potential_at is not None and len(potential_at):
            raise InputError("the xtb engine cannot return potentials at MM charges (potential_at)")
        start = time.perf_counter()
        self.calls += 1
        if not self._threads_limited:
            _limit_xtb_threads(self.options.threads)
            self._threads_limited = True
        qm_bohr = np.asarray(coordinates, dtype=float).reshape(-1, 3) / BOHR_NM
        mm_bohr = np.asarray(mm_positions, dtype=float).reshape(-1, 3) / BOHR_NM
        mm_q = np.asarray(mm_charges, dtype=float).reshape(-1)
        n_mm = len(mm_q)
        virtual = _virtual_charges(external) if external is not None else None
        if virtual is not None:
            mm_bohr = np.vstack([mm_bohr, virtual[0]])
            mm_q = np.concatenate([mm_q, virtual[1]])

        calculator, results, attempts = self._converge(symbols, qm_bohr, charge, multiplicity, mm_bohr, mm_q, step)
        energy = float(results.get_energy())
        grad_qm = np.array(results.get_gradient())
        grad_pc = self._pc_gradient(calculator, results, len(mm_q))
        q_atoms = np.array(results.get_charges())

        moments, center_gradient = None, None
        if external is not None:
            energy += external.t0 / HARTREE_KJMOL * charge
            moments = _charge_moments(q_atoms, qm_bohr * BOHR_NM, np.asarray(external.center, dtype=float))
            center_gradient = grad_pc[n_mm:].sum(axis=0) * HARTREE_PER_BOHR_KJMOL_NM
        info = QMInfo(scf_cycles=0, converged=True, wall_time=time.perf_counter() - start,
                      attempts=tuple(attempts), warm_start=attempts[0].strategy == "warm_start")
        return QMResult(
            energy=energy * HARTREE_KJMOL,
            qm_forces=-grad_qm * HARTREE_PER_BOHR_KJMOL_NM,
            mm_forces=-grad_pc[:n_mm] * HARTREE_PER_BOHR_KJMOL_NM,
            info=info,
            moments=moments,
            atomic_charges=q_atoms,
            center_gradient=center_gradient,
            dipole=np.array(results.get_dipole()) * BOHR_NM,
        )

    def _calculator(self, symbols, qm_bohr, charge, multiplicity):
        """The cached calculator of this atom set, charge and multiplicity (moved to ``qm_bohr``), and its
        last results (None for a new one)."""
        key = (tuple(symbols), charge, multiplicity)
        if self._session is not None and self._session[0] == key:
            _, calculator, results = self._session
            calculator.update(qm_bohr)
            return calculator, results
        param = {"gfn2": self._interface.Param.GFN2xTB, "gfn1": self._interface.Param.GFN1xTB}[self.options.method]
        numbers = np.array([atomic_number(s) for s in symbols])
        calculator = self._interface.Calculator(param, numbers, qm_bohr, charge, multiplicity - 1)
        calculator.set_verbosity(self._muted)
        calculator.set_accuracy(self.options.accuracy)
        calculator.set_electronic_temperature(self.options.electronic_temperature)
        self._session = (key, calculator, None)
        return calculator, None

    def _converge(self, symbols, qm_bohr, charge, multiplicity, mm_bohr, mm_q, step):
        calculator, results = self._calculator(symbols, qm_bohr, charge, multiplicity)
        if len(mm_q):
            numbers = np.full(len(mm_q), self.options.charge_element, dtype=np.int32)
            calculator.set_external_charges(numbers, mm_q, mm_bohr)
        else:
            calculator.release_external_charges()
        attempts: list[SCFAttempt] = []
        ladder = XTB_LADDER if (results is not None and self.options.warm_start) else XTB_LADDER[1:]
        for attempt in ladder:
            calculator.set_max_iterations(self.options.max_iterations * attempt.iterations_factor)
            guess = None if attempt.fresh_guess else results
            try:
                converged = calculator.singlepoint(guess)
            except self._interface.XTBException as exc:
                attempts.append(SCFAttempt(attempt.name, 0, False, float("nan")))
                logger.warning("xtb SCC attempt %r failed at step %s: %s", attempt.name, step, exc)
                continue
            attempts.append(SCFAttempt(attempt.name, 0, True, float(converged.get_energy())))
            if len(attempts) > 1:
                logger.warning("xtb SCC at step %s converged only with attempt %r", step, attempt.name)
            self._session = (self._session[0], calculator, converged)
            return calculator, converged, attempts
        self._session = (self._session[0], calculator, None)
        raise SCFConvergenceError(step, attempts, where=f" ({self.options.method}-xTB SCC)")

    def _pc_gradient(self, calculator, results, n: int) -> np.ndarray:
        """dE/dr of every point charge (Bohr units), from libxtb's xtb_getPCGradient."""
        grad = np.zeros((n, 3))
        if n:
            env = int(self._ffi.cast("uintptr_t", calculator._env))
            res = int(self._ffi.cast("uintptr_t", results._res))
            self._lib.xtb_getPCGradient(env, res, grad.ctypes.data_as(ctypes.POINTER(ctypes.c_double)))
        return grad


def _virtual_charges(external: PolynomialPotential) -> tuple[np.ndarray, np.ndarray]:
    """Positions (Bohr) and values (e) of the charges that carry t1 and the traceless part of t2."""
    t1 = np.asarray(external.t1, dtype=float) * BOHR_NM / HARTREE_KJMOL
    t2 = np.asarray(external.t2, dtype=float) * BOHR_NM**2 / HARTREE_KJMOL
    t2 = 0.5 * (t2 + t2.T)
    t2 = t2 - np.trace(t2) / 3.0 * np.eye(3)
    target = np.array([*t1, t2[0, 0], t2[1, 1], t2[2, 2], t2[0, 1], t2[0, 2], t2[1, 2], 0.0])
    center = np.asarray(external.center, dtype=float) / BOHR_NM
    return center + VIRTUAL_RADIUS * _DIRECTIONS, _POLYNOMIAL_MAP @ target


def _charge_moments(q: np.ndarray, positions_nm: np.ndarray, center_nm: np.ndarray) -> QMMoments:
    """Moments of atomic charges about a centre: m0 (e), m1 (e nm) and the traceless m2 (e nm^2)."""
    d = positions_nm - center_nm
    m2 = np.einsum("i,ia,ib->ab", q, d, d)
    return QMMoments(m0=float(q.sum()), m1=q @ d, m2=m2 - np.trace(m2) / 3.0 * np.eye(3))
