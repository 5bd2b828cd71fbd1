"""Running an ``openmm.app.Simulation`` to a step count in checkpointed chunks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bioqmmm.errors import BioQMMMError, CalculationError, ReplicaAbortedError
from bioqmmm.simulation.checkpoint import write_checkpoint
from bioqmmm.simulation.reporters import close_reporter


def step_with_checkpoints(simulation, model, *, steps: int, checkpoint_interval: int, checkpoint: Path,
                          meta: dict[str, Any], bar=None, label: str = "MD") -> int:
    """Step ``simulation`` from its current step to ``steps``, writing ``checkpoint`` (with ``meta`` and the
    step) after every ``checkpoint_interval``-th step and at ``steps``; returns the final step.

    ``model``: the QMMMSystem or composite Hamiltonian whose state the checkpoint keeps and whose typed
    errors are re-raised. A failure (an unconverged SCF …) stops the run with the step named and the
    last good checkpoint to resume from. ``bar``: a tqdm progress bar to advance, or None.
    """
    step = simulation.currentStep
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
        if bar is not None:
            bar.update(chunk)
    return step


@contextlib.contextmanager
def progress_bar(total: int, initial: int, label: str, enabled: bool) -> Iterator[Any]:
    """A tqdm bar over the run's steps (disabled: nothing printed)."""
    from tqdm import tqdm

    with tqdm(total=total, initial=min(initial, total), unit="step", disable=not enabled, desc=label) as bar:
        yield bar


@contextlib.contextmanager
def closing_reporters(reporters: list) -> Iterator[list]:
    """Close every reporter in ``reporters`` (flushing its file) however the block ends."""
    try:
        yield reporters
    finally:
        for reporter in reporters:
            close_reporter(reporter)
