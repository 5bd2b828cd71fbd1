"""SCF guesses from the always-stable predictor: coefficients, geometry mapping, step logic, engine."""

from __future__ import annotations

import numpy as np
import pytest

from bioqmmm.errors import InputError
from bioqmmm.qm import PySCFEngine
from bioqmmm.qm.extrapolation import DensityExtrapolator, aspc_coefficients
from bioqmmm.units import BOHR_NM

KEY = (("O", "H", "H"), 0, 1)


def test_aspc_coefficients_are_kolafas():
    # J. Kolafa, J. Comput. Chem. 25, 335 (2004), Table 1: K = 2 (four past values)
    np.testing.assert_allclose(aspc_coefficients(4), [2.8, -2.8, 1.2, -0.2], atol=1e-14)
    np.testing.assert_allclose(aspc_coefficients(3), [2.5, -2.0, 0.5], atol=1e-14)
    for n in range(1, 7):
        b = aspc_coefficients(n)
        assert b.sum() == pytest.approx(1.0, abs=1e-12)  # a constant is kept
        if n > 1:
            assert b @ np.arange(1, n + 1) == pytest.approx(0.0, abs=1e-12)  # a straight line is continued


def _overlap(t: float) -> np.ndarray:
    """A smooth, symmetric positive-definite 'overlap' that changes with t."""
    a = np.array([[1.0, 0.3 + 0.1 * t, 0.1], [0.3 + 0.1 * t, 1.0, 0.2 - 0.05 * t], [0.1, 0.2 - 0.05 * t, 1.0]])
    return a


def _density(t: float) -> np.ndarray:
    """AO density whose Löwdin-orthogonalised form is linear in t."""
    values, vectors = np.linalg.eigh(_overlap(t))
    inverse_root = (vectors / np.sqrt(values)) @ vectors.T
    p = np.diag([1.0, 0.5, 0.0]) + t * np.array([[0.0, 0.1, 0.0], [0.1, 0.0, 0.2], [0.0, 0.2, 0.3]])
    return inverse_root @ p @ inverse_root


def test_linear_orthogonalised_densities_are_predicted_exactly_on_a_moving_basis():
    extrapolator = DensityExtrapolator(4)
    for step in range(3):
        extrapolator.add(KEY, _overlap(0.1 * step), _density(0.1 * step), step)
    np.testing.assert_allclose(extrapolator.guess(KEY, _overlap(0.3), 3), _density(0.3), atol=1e-12)
    # the previous density alone (history 1) is off by one step's change
    previous = DensityExtrapolator(1)
    previous.add(KEY, _overlap(0.2), _density(0.2), 2)
    assert np.abs(previous.guess(KEY, _overlap(0.3), 3) - _density(0.3)).max() > 1e-2


def test_only_an_equally_spaced_continuation_is_extrapolated():
    extrapolator = DensityExtrapolator(4)
    for step in (0, 2, 4):  # every second step (multiple time steps)
        extrapolator.add(KEY, _overlap(0.05 * step), _density(0.05 * step), step)
    np.testing.assert_allclose(extrapolator.guess(KEY, _overlap(0.3), 6), _density(0.3), atol=1e-12)
    last = _density(0.2)  # steps out of sequence, unknown or repeated: the last density, remapped
    for step in (5, None, 4, 0):
        np.testing.assert_allclose(extrapolator.guess(KEY, _overlap(0.2), step), last, atol=1e-12)
    assert extrapolator.guess((("O", "H"), -1, 1), _overlap(0.3), 6) is None  # another region
    extrapolator.add(KEY, _overlap(0.35), _density(0.35), 7)  # spacing 3: only steps 4 and 7 continue it
    np.testing.assert_allclose(extrapolator.guess(KEY, _overlap(0.5), 10), _density(0.5), atol=1e-12)


def test_a_repeated_step_replaces_the_last_density_and_keeps_the_history():
    """A barostat trial re-evaluates step k: the sequence before it must survive."""
    extrapolator = DensityExtrapolator(4)
    for step in range(3):
        extrapolator.add(KEY, _overlap(0.1 * step), _density(0.1 * step), step)
    extrapolator.add(KEY, _overlap(0.2), _density(0.2) + 0.05, 2)  # trial move
    extrapolator.add(KEY, _overlap(0.2), _density(0.2), 2)  # rejected: the original state again
    np.testing.assert_allclose(extrapolator.guess(KEY, _overlap(0.3), 3), _density(0.3), atol=1e-12)


def test_nearly_linearly_dependent_basis_starts_cold():
    extrapolator = DensityExtrapolator(2)
    extrapolator.add(KEY, _overlap(0.0), _density(0.0), 0)
    singular = np.ones((3, 3)) + 1e-10 * np.eye(3)
    assert extrapolator.guess(KEY, singular, 1) is None


def test_history_survives_a_checkpoint_round_trip():
    extrapolator = DensityExtrapolator(3)
    for step in range(5):
        extrapolator.add(KEY, _overlap(0.1 * step), _density(0.1 * step) + 0.01 * step**2, step)
    restored = DensityExtrapolator(3)
    restored.set_state(extrapolator.get_state())
    np.testing.assert_array_equal(restored.guess(KEY, _overlap(0.5), 5), extrapolator.guess(KEY, _overlap(0.5), 5))
    restored.set_state({})
    assert restored.guess(KEY, _overlap(0.5), 5) is None


WATER = ["O", "H", "H"]
WATER_XYZ = np.array([[0.0, 0.0, 0.0], [0.0957, 0.0, 0.0], [-0.024, 0.0927, 0.0]])  # nm
MM_XYZ = np.array([[0.30, 0.10, 0.05], [-0.25, 0.20, 0.10], [0.10, -0.30, 0.20]])  # nm
MM_Q = np.array([-0.8, 0.4, 0.4])


def _trajectory(step: int) -> np.ndarray:
    """A smooth vibration of the water molecule (nm), sampled every step."""
    phase = 0.3 * step
    return WATER_XYZ + 0.004 * np.array([[0.0, 0.0, 0.0], [np.sin(phase), 0.0, 0.0], [0.0, np.sin(phase + 1.0), 0.0]])


def test_extrapolated_guess_is_closer_to_the_converged_density_and_changes_no_result():
    engine = PySCFEngine("hf", "6-31g", conv_tol=1e-10, density_history=4)
    previous_only = DensityExtrapolator(1)
    errors = {"aspc": [], "previous": []}
    for k in range(10):
        mol = engine._molecule(WATER, _trajectory(k) / BOHR_NM, 0, 1)
        overlap = mol.intor_symmetric("int1e_ovlp")
        guesses = {"aspc": engine._densities.guess(KEY, overlap, k), "previous": previous_only.guess(KEY, overlap, k)}
        result = engine.compute(WATER, _trajectory(k), 0, 1, MM_XYZ, MM_Q, step=k)
        converged = engine._densities.guess(KEY, overlap, None)  # the density just stored, unmapped
        previous_only.add(KEY, overlap, converged, k)
        if k >= 4:
            for name, guess in guesses.items():
                errors[name].append(np.abs(guess - converged).max())
        cold = PySCFEngine("hf", "6-31g", conv_tol=1e-10).compute(WATER, _trajectory(k), 0, 1, MM_XYZ, MM_Q)
        assert result.energy == pytest.approx(cold.energy, abs=1e-5)  # kJ/mol
        np.testing.assert_allclose(result.qm_forces, cold.qm_forces, atol=0.05)  # kJ/mol/nm
    assert sum(errors["aspc"]) < 0.25 * sum(errors["previous"]), errors  # observed 0.11


def test_density_history_must_hold_a_density():
    with pytest.raises(InputError, match="density_history"):
        PySCFEngine("hf", "sto-3g", density_history=0)
