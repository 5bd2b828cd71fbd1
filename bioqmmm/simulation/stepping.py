"""Running an ``openmm.app.Simulation`` to a step count in checkpointed chunks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bioqmmm.errors import BioQMMMError, CalculationError, ReplicaAbortedError
from bioqmmm.simulation.checkpoint import write_checkpoint
from bioqmmm.simulation.reporters import close_reporter


def step_with_checkpoints(simulation, model, *, steps: int, checkpoint_interval: int, checkpoint: Path,
                          meta: dict[str, Any], progress: bool = True, label: str = "MD") -> int:
    """Step ``simulation`` from its current step to ``steps``, writing ``checkpoint`` (with ``meta`` and the
    step) after every ``checkpoint_interval``-th step; returns the final step and closes the reporters.

    ``model``: the QMMMSystem or composite Hamiltonian whose state the checkpoint keeps and whose typed
    errors are re-raised. A failure (an unconverged SCF …) stops the run with the step named and the
    last good checkpoint to resume from.
    """
    from tqdm import tqdm

    step = simulation.currentStep
    try:
        with tqdm(total=steps, initial=min(step, steps), unit="step", disable=not progress, desc=label) as bar:
            while step < steps:
                chunk = min(checkpoint_interval - step % checkpoint_interval, steps - step)
                try:
                    with model.typed_errors():
                        simulation.step(chunk)
                except ReplicaAbortedError:
                    raise
                except BioQMMMError as exc:
                    raise CalculationError(
                        f"{label} stopped near step {simulation.currentStep}: {exc}; the last good state is "
                        f"{checkpoint} (step {step}); rerun to resume from it"
                    ) from exc
                step = simulation.currentStep
                write_checkpoint(checkpoint, simulation.context, model, {**meta, "step": step})
                bar.update(chunk)
    finally:
        for reporter in simulation.reporters:
            close_reporter(reporter)
        simulation.reporters.clear()
    return step
