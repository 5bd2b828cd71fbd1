"""Elastic constants of a periodic cell by stress–strain: C_IJKL = ∂S_IJ/∂E_KL by central differences.

Strains are Green–Lagrange, E = ½(FᵀF − I), applied as F = (I + 2E)^½ at fixed fractional coordinates
(:func:`~bioqmmm.periodic.cells.deformed`); at each strain the atoms are relaxed at fixed box.

The stress is the derivative of the energy itself, so it has every contribution the energy has (MM,
PME, the QM region and its embedding, exactly as they enter E): at a relaxed structure the internal
forces vanish, so dE/dG of a further homogeneous deformation G at fixed fractional coordinates is the
total derivative. The Cauchy stress of the current cell is σ_ij = (1/V) ∂E/∂G_ij at G = I (central
differences; at the reference cell over all nine G_ij, so σ's symmetry, which rotational invariance
demands, is a check; at the strained cells over the six symmetric deformations), and
the second Piola–Kirchhoff stress with respect to the reference cell is S = J F⁻¹ σ F⁻ᵀ with F the
deformation from the reference cell and J = det F (e.g. Wallace, Thermodynamics of Crystals (1972), ch. 1).

C in Voigt notation (11, 22, 33, 23, 13, 12; shear strains engineering, γ = 2E_ij):
C_IK = [S_I(+h e_K) − S_I(−h e_K)] / 2h. The truncation error of a central difference grows as h², so
with two amplitudes h₁ < h₂ the error of the h₁ result is estimated as |C(h₁) − C(h₂)| / 3
(Richardson: (h₂/h₁)² − 1 = 3 for h₂ = 2h₁). Checks: major symmetry (C_IK = C_KI), σ symmetry (minor
symmetry), positive definiteness (Born stability), and for a cubic crystal the cubic pattern.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bioqmmm.periodic.cells import deformation, deformed
from bioqmmm.periodic.model import CellModel

#: 1 kJ/mol/nm³ in GPa.
KJMOL_NM3_GPA = 1e3 / 6.02214076e23 / 1e-27 / 1e9
#: Voigt index → tensor index pair.
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
#: Finite-difference step of the stress (deformation-gradient components).
STRESS_STEP = 1e-5


def voigt_strain(component: int, amplitude: float) -> np.ndarray:
    """Green–Lagrange strain with Voigt component ``component`` = ``amplitude`` (shear: engineering γ)."""
    i, j = VOIGT[component]
    strain = np.zeros((3, 3))
    if i == j:
        strain[i, i] = amplitude
    else:
        strain[i, j] = strain[j, i] = amplitude / 2.0
    return strain


def cauchy_stress(model: CellModel, positions: np.ndarray, box: np.ndarray, step: float = STRESS_STEP,
                  full: bool = False) -> np.ndarray:
    """σ_ij = (1/V) ∂E/∂G_ij of the cell as it is (3 × 3, kJ/mol/nm³; tension positive), by central
    differences of the energy over deformations G = I ± step e_ij at fixed fractional coordinates.

    ``full``: all nine G_ij (σ's asymmetry is then a check); else the six symmetric deformations
    G = I ± step (e_ij + e_ji)/2, which give σ's symmetric part with 12 energies instead of 18.
    """
    volume = abs(np.linalg.det(box))
    sigma = np.empty((3, 3))
    pairs = [(i, j) for i in range(3) for j in range(3)] if full else [(i, j) for i in range(3) for j in range(i, 3)]
    for i, j in pairs:
        energies = []
        for sign in (1.0, -1.0):
            gradient = np.eye(3)
            if full or i == j:
                gradient[i, j] += sign * step
            else:
                gradient[i, j] += sign * step / 2.0
                gradient[j, i] += sign * step / 2.0
            energies.append(model.energy(*deformed(positions, box, gradient)))
        sigma[i, j] = (energies[0] - energies[1]) / (2.0 * step * volume)
        if not full:
            sigma[j, i] = sigma[i, j]
    return sigma


def second_piola_kirchhoff(sigma: np.ndarray, box: np.ndarray, reference_box: np.ndarray) -> np.ndarray:
    """S = J F⁻¹ σ F⁻ᵀ with F the deformation from ``reference_box`` to ``box`` (rows, nm)."""
    gradient = np.asarray(box).T @ np.linalg.inv(np.asarray(reference_box).T)
    inverse = np.linalg.inv(gradient)
    return np.linalg.det(gradient) * inverse @ sigma @ inverse.T


@dataclass(frozen=True)
class ElasticTensor:
    """Elastic constants (Voigt 6 × 6, GPa) at the smallest amplitude, with diagnostics.

    ``by_amplitude``: C at each amplitude. ``error``: estimated truncation error of ``c`` (GPa).
    ``stress``: the reference cell's stress (Voigt, GPa). ``stress_asymmetry``: |σ_ij − σ_ji| of the
    reference cell's stress from all nine deformations (GPa; zero for an exactly rotation-invariant energy).
    ``relaxations``: strained structures relaxed.
    """

    c: np.ndarray
    error: np.ndarray
    amplitudes: tuple[float, ...]
    by_amplitude: tuple[np.ndarray, ...]
    stress: np.ndarray
    stress_asymmetry: float
    relaxations: int

    @property
    def major_asymmetry(self) -> float:
        """max |C_IK − C_KI| (GPa)."""
        return float(np.abs(self.c - self.c.T).max())

    @property
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of the symmetrised C (GPa): all positive for a mechanically stable crystal."""
        return np.linalg.eigvalsh(0.5 * (self.c + self.c.T))

    def cubic(self) -> dict[str, float]:
        """C11, C12, C44 averaged over their cubic-equivalent entries, the largest deviation of any entry from
        the cubic pattern (GPa), the bulk modulus (C11 + 2 C12)/3 and Zener's anisotropy 2 C44/(C11 − C12)."""
        c = self.c
        c11, c12, c44 = np.mean(np.diag(c)[:3]), np.mean([c[0, 1], c[0, 2], c[1, 2], c[1, 0], c[2, 0], c[2, 1]]), \
            np.mean(np.diag(c)[3:])
        pattern = np.zeros((6, 6))
        pattern[:3, :3] = c12
        pattern[np.diag_indices(3)] = c11
        pattern[3:, 3:][np.diag_indices(3)] = c44
        return {"c11": float(c11), "c12": float(c12), "c44": float(c44),
                "cubic_deviation": float(np.abs(c - pattern).max()),
                "bulk_modulus": float((c11 + 2.0 * c12) / 3.0), "zener_anisotropy": float(2.0 * c44 / (c11 - c12))}


def elastic_tensor(model: CellModel, positions: np.ndarray, box: np.ndarray, amplitudes: Sequence[float],
                   relax: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                   progress: Callable[[str], None] | None = None) -> ElasticTensor:
    """C of the cell (``positions`` relaxed already) from ±h strains along the six Voigt components for each
    amplitude h (two or more, smallest first, for the error estimate). ``relax(positions, box)`` relaxes a
    strained structure (None: homogeneous deformation only, right for a Bravais lattice)."""
    amplitudes = tuple(sorted(float(h) for h in amplitudes))
    sigma0 = cauchy_stress(model, positions, box, full=True)
    asymmetry = float(np.abs(sigma0 - sigma0.T).max())
    tensors, relaxations = [], 0
    for h in amplitudes:
        c = np.empty((6, 6))
        for k in range(6):
            stresses = []
            for sign in (1.0, -1.0):
                strained, strained_box = deformed(positions, box, deformation(voigt_strain(k, sign * h)))
                if relax is not None:
                    strained = relax(strained, strained_box)
                    relaxations += 1
                sigma = cauchy_stress(model, strained, strained_box)
                s = second_piola_kirchhoff(sigma, strained_box, box)
                stresses.append(np.array([s[i, j] for i, j in VOIGT]))
            c[:, k] = (stresses[0] - stresses[1]) / (2.0 * h)
            if progress is not None:
                progress(f"amplitude {h:g}: strain component {k + 1}/6 done")
        tensors.append(c * KJMOL_NM3_GPA)
    error = np.abs(tensors[0] - tensors[1]) / ((amplitudes[1] / amplitudes[0]) ** 2 - 1.0) if len(tensors) > 1 \
        else np.full((6, 6), np.nan)
    stress = np.array([sigma0[i, j] for i, j in VOIGT]) * KJMOL_NM3_GPA
    return ElasticTensor(tensors[0], error, amplitudes, tuple(tensors), stress, asymmetry * KJMOL_NM3_GPA, relaxations)
