"""Vibrational thermochemistry: harmonic oscillators (RRHO) with a quasi-harmonic treatment of low modes.

For each real mode of wavenumber ν̃ (u = hcν̃/kT), per mole (McQuarrie, Statistical Mechanics, ch. 8):

    ZPE = ½ N_A h c ν̃,   U = ZPE + R T u/(eᵘ − 1),   S = R [u/(eᵘ − 1) − ln(1 − e⁻ᵘ)],   G = U − T S.

Quasi-RRHO (Grimme, Chem. Eur. J. 18, 9955 (2012)): low modes are damped toward free rotors,

    S = w S_vib + (1 − w) S_rot,   w = 1 / (1 + (ν̃₀/ν̃)^α),   α = 4,
    S_rot = R [½ + ln √(8π³ μ' k T / h²)],   μ = h / (8π² c ν̃),   μ' = μ B_av / (μ + B_av),
    B_av = 10⁻⁴⁴ kg m²,

and the thermal energy likewise toward ½RT (Li, Gomes, Sharada, Bell & Head-Gordon, J. Phys. Chem. C
119, 1840 (2015)): U = ZPE + w (U_vib − ZPE) + (1 − w) ½RT, the zero-point term kept harmonic. Imaginary
modes (a transition state's reaction mode) are left out. Energies kJ/mol, entropies J/mol/K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

H = 6.62607015e-34  # J s
KB = 1.380649e-23  # J/K
C_CM = 2.99792458e10  # cm/s
NA = 6.02214076e23
R = KB * NA  # J/mol/K
#: Average moment of inertia of the free-rotor limit, kg m² (Grimme 2012).
B_AV = 1e-44
#: Default quasi-harmonic cut-off ν̃₀, cm⁻¹, and damping exponent α (Grimme 2012).
QRRHO_CUTOFF, QRRHO_ALPHA = 100.0, 4


@dataclass(frozen=True)
class Thermochemistry:
    """Vibrational contributions at ``temperature`` K: ``zpe``, ``thermal_energy`` (U, ZPE included),
    ``free_energy`` (G = U − TS) kJ/mol; ``entropy`` J/mol/K; ``modes``: real modes counted."""

    temperature: float
    zpe: float
    thermal_energy: float
    entropy: float
    free_energy: float
    modes: int
    quasi_harmonic_cutoff: float | None


def damping(wavenumbers: np.ndarray, cutoff: float = QRRHO_CUTOFF, alpha: int = QRRHO_ALPHA) -> np.ndarray:
    """Grimme's weight w(ν̃) = 1 / (1 + (ν̃₀/ν̃)^α)."""
    return 1 / (1 + (cutoff / np.asarray(wavenumbers, dtype=float)) ** alpha)


def vibrational_thermochemistry(wavenumbers, temperature: float = 298.15, *,
                                quasi_harmonic_cutoff: float | None = QRRHO_CUTOFF) -> Thermochemistry:
    """RRHO (``quasi_harmonic_cutoff`` None) or quasi-RRHO vibrational terms of the real ``wavenumbers``
    (cm⁻¹; negative = imaginary, ignored)."""
    nu = np.asarray(wavenumbers, dtype=float)
    nu = nu[nu > 0]
    u = H * C_CM * nu / (KB * temperature)
    zpe = 0.5 * NA * H * C_CM * nu  # J/mol per mode
    thermal = R * temperature * u / np.expm1(u)
    s_vib = R * (u / np.expm1(u) - np.log(-np.expm1(-u)))
    energy, entropy = zpe + thermal, s_vib
    if quasi_harmonic_cutoff is not None:
        w = damping(nu, quasi_harmonic_cutoff)
        mu = H / (8 * np.pi**2 * C_CM * nu)
        mu_eff = mu * B_AV / (mu + B_AV)
        s_rot = R * (0.5 + np.log(np.sqrt(8 * np.pi**3 * mu_eff * KB * temperature / H**2)))
        entropy = w * s_vib + (1 - w) * s_rot
        energy = zpe + w * thermal + (1 - w) * 0.5 * R * temperature
    u_total, s_total = float(energy.sum()) / 1000, float(entropy.sum())
    return Thermochemistry(temperature, float(zpe.sum()) / 1000, u_total, s_total,
                           u_total - temperature * s_total / 1000, len(nu), quasi_harmonic_cutoff)
