"""Kinetic isotope effects from harmonic frequencies of a reactant and a transition state.

Transition-state theory with harmonic vibrations, light (L) and heavy (H) isotopologues, u = hcν̃/kT:

* a free molecule (translations and rotations separable): Bigeleisen & Mayer (J. Chem. Phys. 15, 261
  (1947)), with the Teller–Redlich product rule removing the moments of inertia,

      k_L/k_H = (ν‡_L / ν‡_H) · f_R / f_TS,   f = Π_i (u_iH / u_iL) · sinh(u_iL/2) / sinh(u_iH/2),

  the products over the real modes of each species (the TS's reaction mode left out);
* an embedded active block (no translation or rotation: the environment holds it), the ratio of the
  vibrational partition functions q = Π 1 / (2 sinh(u/2)) alone,

      k_L/k_H = [q‡_L q^R_H] / [q‡_H q^R_L],   which tends to ν‡_L/ν‡_H in the classical limit.

Tunnelling multiplies each rate by κ(u‡), u‡ = hc|ν̃‡|/kT: Wigner (Z. Phys. Chem. B 19, 203 (1932))
κ = 1 + u‡²/24, or Bell's infinite parabola (Trans. Faraday Soc. 55, 1 (1959)) κ = (u‡/2)/sin(u‡/2),
valid for u‡ < 2π.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bioqmmm.errors import InputError
from bioqmmm.vibrations.thermo import C_CM, KB, H

TUNNELLING = ("none", "wigner", "bell")


@dataclass(frozen=True)
class IsotopeEffect:
    """``kie`` = k_L/k_H with tunnelling; ``semiclassical`` without; ``tunnelling_light``,
    ``tunnelling_heavy``: κ of each isotopologue."""

    kie: float
    semiclassical: float
    tunnelling_light: float
    tunnelling_heavy: float
    temperature: float
    tunnelling: str


def _u(wavenumbers: np.ndarray, temperature: float) -> np.ndarray:
    return H * C_CM * np.asarray(wavenumbers, dtype=float) / (KB * temperature)


def _split_ts(wavenumbers, label: str) -> tuple[float, np.ndarray]:
    nu = np.asarray(wavenumbers, dtype=float)
    imaginary = nu[nu < 0]
    if len(imaginary) != 1:
        raise InputError(f"{label}: a transition state needs exactly one imaginary frequency, found {len(imaginary)}")
    return float(-imaginary[0]), nu[nu > 0]


def _real(wavenumbers, label: str) -> np.ndarray:
    nu = np.asarray(wavenumbers, dtype=float)
    if (nu < 0).any():
        raise InputError(f"{label}: a reactant has no imaginary frequency (found {nu[nu < 0].round(1).tolist()})")
    return nu


def tunnelling_factor(imaginary_wavenumber: float, temperature: float, model: str) -> float:
    """κ for the magnitude of the imaginary wavenumber (cm⁻¹) by ``model`` ('none', 'wigner', 'bell')."""
    if model not in TUNNELLING:
        raise InputError(f"unknown tunnelling model {model!r}: choose one of {', '.join(TUNNELLING)}")
    u = float(_u(abs(imaginary_wavenumber), temperature))
    if model == "wigner":
        return 1 + u**2 / 24
    if model == "bell":
        if u >= 2 * np.pi:
            raise InputError(f"Bell's parabolic tunnelling diverges for hcν‡/kT = {u:.2f} ≥ 2π "
                             f"(|ν‡| = {abs(imaginary_wavenumber):.0f} cm⁻¹ at {temperature} K): use wigner")
        return (u / 2) / np.sin(u / 2)
    return 1.0


def isotope_effect(reactant_light, reactant_heavy, ts_light, ts_heavy, temperature: float = 298.15, *,
                   free_molecule: bool = False, tunnelling: str = "none") -> IsotopeEffect:
    """k_L/k_H from wavenumbers (cm⁻¹; the TS's imaginary one negative) of both isotopologues.

    ``free_molecule``: the frequencies are those of a whole molecule with translations and rotations
    removed (Bigeleisen–Mayer); otherwise of an embedded block (vibrational partition functions)."""
    nu_ts_l, ts_l = _split_ts(ts_light, "ts_light")
    nu_ts_h, ts_h = _split_ts(ts_heavy, "ts_heavy")
    r_l, r_h = _real(reactant_light, "reactant_light"), _real(reactant_heavy, "reactant_heavy")
    if len(r_l) != len(r_h) or len(ts_l) != len(ts_h):
        raise InputError("light and heavy isotopologues must have the same number of modes")

    def log_q_ratio(light: np.ndarray, heavy: np.ndarray) -> float:  # ln(q_H / q_L)
        return float(np.sum(np.log(np.sinh(_u(light, temperature) / 2)) - np.log(np.sinh(_u(heavy, temperature) / 2))))

    log_kie = log_q_ratio(r_l, r_h) - log_q_ratio(ts_l, ts_h)
    if free_molecule:  # Teller–Redlich: translation and rotation give Π(ν_H/ν_L) per species and ν‡ ratio
        log_kie += (np.log(nu_ts_l / nu_ts_h) + np.sum(np.log(r_h / r_l)) - np.sum(np.log(ts_h / ts_l)))
    kappa_l = tunnelling_factor(nu_ts_l, temperature, tunnelling)
    kappa_h = tunnelling_factor(nu_ts_h, temperature, tunnelling)
    semiclassical = float(np.exp(log_kie))
    return IsotopeEffect(semiclassical * kappa_l / kappa_h, semiclassical, kappa_l, kappa_h, temperature, tunnelling)
