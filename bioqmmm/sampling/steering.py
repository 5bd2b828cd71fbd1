"""Steered molecular dynamics: an umbrella whose centre moves along the reaction coordinate.

    run = steered_run(system, coordinate, start, end, k, settings, folder)   # resumable
    run["s"], run["center"], np.cumsum(run["work"])                           # per sample

The bias w(s, t) = ½ k (s − s₀(t))² starts at s₀ = ``start`` for ``settings.equilibration_steps``, then
moves linearly to ``end`` over the ``settings.samples × settings.sample_interval`` sampled steps; the
centre is held for each ``sample_interval`` and moved between intervals, so the work done on the system
is the sum of the jumps of w at fixed configuration (Jarzynski, Phys. Rev. Lett. 78, 2690 (1997)),

    W = Σ_j [w(s_j, s₀_{j+1}) − w(s_j, s₀_j)]   (kJ/mol),

exact for this piecewise-constant protocol. The frames (every sample) are the reason to steer here: a
path across a barrier that plain sampling does not cross, at the level of the System (e.g. GFN2-xTB/MM),
from which umbrella windows start (:mod:`bioqmmm.sampling.starts`). The centre lives in the OpenMM
Context (a global parameter), so a resumed run continues the same protocol from its checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import openmm

from bioqmmm.sampling.coordinates import ReactionCoordinate, Umbrella
from bioqmmm.sampling.windows import SamplingSettings, add_bias, sample


def centre_at(step: int, start: float, end: float, equilibration_steps: int, pull_steps: int) -> float:
    """The umbrella centre s₀ after ``step`` steps of the run (equilibration included)."""
    fraction = min(max(step - equilibration_steps, 0) / pull_steps, 1.0)
    return start + (end - start) * fraction


def steered_run(
    system: openmm.System,
    coordinate: ReactionCoordinate,
    start: float,
    end: float,
    force_constant: float,
    settings: SamplingSettings,
    folder: str | Path,
    *,
    positions: np.ndarray,
    box: np.ndarray | None = None,
    qmmm=None,
    platform: str = "CPU",
    threads: int | None = None,
    identity: str = "",
    poll: Callable[[], None] | None = None,
) -> dict[str, np.ndarray]:
    """Steer ``system`` (which gains the moving umbrella) from ``start`` to ``end`` (unit of s), force
    constant in kJ/mol per unit²; returns per sample s, the centre held during the interval before it
    (``center``), the work of the jump after it (``work``, kJ/mol), the unbiased energy (kJ/mol) and
    the frames (nm, on disk)."""
    if coordinate.period is not None:
        raise ValueError("steering along a dihedral is not supported: its centre would have to wrap at ±π")
    bias_force, unbiased_energy = add_bias(system, coordinate, Umbrella(start, force_constant))
    pull_steps = settings.samples * settings.sample_interval

    def measure(context: openmm.Context, state: openmm.State) -> dict[str, float]:
        s = coordinate.value(bias_force.getCollectiveVariableValues(context))
        held = context.getParameter("s0_bias")
        moved = centre_at(context.getStepCount(), start, end, settings.equilibration_steps, pull_steps)
        context.setParameter("s0_bias", moved)
        return {"s": s, "center": held, "work": 0.5 * force_constant * ((s - moved) ** 2 - (s - held) ** 2),
                "energy": unbiased_energy(context)}

    return sample(system, positions, settings, folder, measure, box=box, qmmm=qmmm, platform=platform,
                  threads=threads, identity=identity, poll=poll, what=f"steering from s = {start:.4g} to {end:.4g}",
                  holds="steered run's samples")
