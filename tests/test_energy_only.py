"""The energy-only path (issue 25, item 2): no gradients computed, the same energies as energy + forces."""

from __future__ import annotations

import numpy as np
import pytest

from bioqmmm import QMMMSystem
from bioqmmm.qm import PySCFEngine
from bioqmmm.qmmm.embedding import PeriodicEmbedding

QM = [0, 1, 2]


def _count_gradient_calls(engine, monkeypatch) -> list[int]:
    calls = [0]
    original = engine._gradients

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "_gradients", counted)
    return calls


@pytest.mark.parametrize("periodic", [False, True])
def test_energy_only_equals_the_energy_of_energy_and_forces(water_cluster, small_water_box, monkeypatch, periodic):
    """HF/6-31G* water in a 12-water cluster (full embedding) and in a periodic box (near field, far-field
    multipoles): ``QMMMSystem.energy`` gives the energy of ``energy_and_forces`` to round-off without calling
    the engine's gradients; a cached energy-only result never stands in for forces."""
    top, system, positions = small_water_box if periodic else water_cluster
    engine = PySCFEngine("hf", "6-31g*", conv_tol=1e-11, warm_start=False)
    embedding = PeriodicEmbedding(cutoff=0.9, switch_width=0.3) if periodic else None
    qmmm = QMMMSystem(top, system, QM, charge=0, multiplicity=1, engine=engine, embedding=embedding,
                      platform="Reference")
    calls = _count_gradient_calls(engine, monkeypatch)
    moved = positions.copy()
    moved[1] += [0.003, -0.002, 0.001]
    energy_only = qmmm.energy(moved)
    assert calls[0] == 0 and qmmm.kernel.gradients
    energy, forces = qmmm.energy_and_forces(moved)  # same positions: the energy-only cache must not serve forces
    assert calls[0] == 1 and np.abs(forces[:3]).max() > 1.0
    assert energy_only == pytest.approx(energy, abs=1e-7)
    assert qmmm.energy(moved) == energy and calls[0] == 1  # a full result serves an energy-only call
