"""Harmonic normal modes of a Hessian: frequencies, Cartesian modes, reduced masses, IR intensities.

With M the diagonal of masses, the mass-weighted Hessian M^-½ H M^-½ = U Λ Uᵀ gives ω_k = √λ_k
(rad/ps, since kJ/mol = amu nm² ps⁻²) and wavenumbers ν̃ = ω / 2πc; imaginary modes are reported as
negative. Translations and rotations (of a free molecule or cluster) are projected out in
mass-weighted coordinates and their modes dropped. The Cartesian mode of k is L_k = M^-½ U_k, its
reduced mass 1/|L_k|². IR intensities (double-harmonic, Wilson, Decius & Cross 1955):

    A_k = N_A / (12 ε₀ c²) · |∂μ/∂Q_k|²,   ∂μ/∂Q_k = Σ_j (∂μ/∂x_j) L_jk,

in km/mol (974.88 km/mol per e²/amu). Modes are written in the Molden format, which Molden, Jmol
and Avogadro animate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bioqmmm.units import BOHR_NM
from bioqmmm.vibrations.hessian import rigid_body_modes

#: Wavenumber (cm⁻¹) of ω = 1 rad/ps: 10¹² / (2π c), c in cm/s.
CM_PER_RAD_PS = 1e12 / (2 * np.pi * 2.99792458e10)
#: IR intensity in km/mol of |∂μ/∂Q|² = 1 e²/amu: N_A e² / (12 ε₀ c² u), SI, over 1000 m/km.
KM_MOL_PER_E2_AMU = 6.02214076e23 * 1.602176634e-19**2 / (
    12 * 8.8541878128e-12 * 2.99792458e8**2 * 1.66053906660e-27) / 1000


@dataclass
class NormalModes:
    """``frequencies`` (k,) cm⁻¹ ascending, imaginary as negative; ``modes`` (k, n, 3) Cartesian
    displacements L_k (amu^-½); ``reduced_masses`` (k,) amu; ``intensities`` (k,) km/mol or None;
    ``masses`` (n,) amu used."""

    frequencies: np.ndarray
    modes: np.ndarray
    reduced_masses: np.ndarray
    masses: np.ndarray
    intensities: np.ndarray | None = None

    @property
    def imaginary(self) -> np.ndarray:
        """Imaginary frequencies as negative numbers, cm⁻¹."""
        return self.frequencies[self.frequencies < 0]


def normal_modes(hessian: np.ndarray, masses: Sequence[float], *, rigid_positions: np.ndarray | None = None,
                 dipole_derivatives: np.ndarray | None = None) -> NormalModes:
    """Normal modes of ``hessian`` (3n, 3n) kJ/mol/nm² for ``masses`` (n,) amu.

    ``rigid_positions`` (n, 3) nm: the atoms form a free body whose translations and rotations are
    projected out (their 5 or 6 modes dropped). ``dipole_derivatives`` (3, 3n) ∂μ/∂x in e (e nm / nm)
    give IR intensities."""
    masses = np.asarray(masses, dtype=float)
    inv_sqrt = np.repeat(1 / np.sqrt(masses), 3)
    weighted = hessian * inv_sqrt[:, None] * inv_sqrt[None, :]
    rigid = None if rigid_positions is None else rigid_body_modes(np.asarray(rigid_positions, dtype=float))
    if rigid is not None:
        basis, _ = np.linalg.qr((rigid * np.repeat(np.sqrt(masses), 3)[None, :]).T)
        projector = np.eye(len(weighted)) - basis @ basis.T
        weighted = projector @ weighted @ projector
    values, vectors = np.linalg.eigh(0.5 * (weighted + weighted.T))
    if rigid is not None:  # drop the modes that lie in the rigid-body space
        keep = np.sort(np.argsort(np.linalg.norm(basis.T @ vectors, axis=0))[: len(values) - len(rigid)])
        values, vectors = values[keep], vectors[:, keep]
    cartesian = vectors * inv_sqrt[:, None]  # L = M^-½ U
    intensities = None
    if dipole_derivatives is not None:
        dmu_dq = np.asarray(dipole_derivatives) @ cartesian  # (3, k), e/amu^½
        intensities = KM_MOL_PER_E2_AMU * (dmu_dq**2).sum(axis=0)
    return NormalModes(
        frequencies=np.sign(values) * np.sqrt(np.abs(values)) * CM_PER_RAD_PS,
        modes=cartesian.T.reshape(len(values), -1, 3),
        reduced_masses=1 / (cartesian**2).sum(axis=0),
        masses=masses,
        intensities=intensities,
    )


def write_molden(path: str | Path, symbols: Sequence[str], positions: np.ndarray, modes: NormalModes) -> None:
    """Normal modes in the Molden format ([FREQ], [FR-COORD] in bohr, [FR-NORM-COORD], [INT])."""
    lines = ["[Molden Format]", "[FREQ]"]
    lines += [f"{f:.4f}" for f in modes.frequencies]
    lines.append("[FR-COORD]")
    lines += [f"{s} {x:.8f} {y:.8f} {z:.8f}" for s, (x, y, z) in zip(symbols, np.asarray(positions) / BOHR_NM,
                                                                       strict=True)]
    lines.append("[FR-NORM-COORD]")
    for k, mode in enumerate(modes.modes, start=1):
        lines.append(f"vibration {k}")
        lines += [f"{x:.8f} {y:.8f} {z:.8f}" for x, y, z in mode / np.abs(mode).max()]
    if modes.intensities is not None:
        lines.append("[INT]")
        lines += [f"{i:.6f}" for i in modes.intensities]
    Path(path).write_text("\n".join(lines) + "\n")
