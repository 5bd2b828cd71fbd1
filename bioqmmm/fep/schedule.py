"""The automatic λ schedule: windows added where neighbours overlap too little.

Start from a few windows; after they are sampled, every neighbour pair whose MBAR overlap lies below the
target gets a window at its midpoint, the worst pairs first, until every pair overlaps enough or the
window budget is spent. MBAR overlap between neighbours falls roughly exponentially with the variance
of β Δλ ΔU, so halving a gap raises its overlap quickly (Klimovich, Shirts & Mobley 2015).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def refine(lambdas: Sequence[float], neighbour_overlap: Sequence[float], min_overlap: float,
           max_windows: int) -> list[float]:
    """``lambdas`` with midpoints inserted into the gaps whose overlap is below ``min_overlap`` (lowest
    first) while the count stays within ``max_windows``; unchanged when nothing is to be added."""
    lambdas = [float(x) for x in lambdas]
    if len(neighbour_overlap) != len(lambdas) - 1:
        raise ValueError("one overlap per neighbour pair")
    poor = [k for k in np.argsort(neighbour_overlap) if neighbour_overlap[k] < min_overlap]
    room = max(0, max_windows - len(lambdas))
    added = [0.5 * (lambdas[k] + lambdas[k + 1]) for k in poor[:room]]
    return sorted({round(x, 6) for x in lambdas + added})
