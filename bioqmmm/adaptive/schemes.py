"""How the partitions of a buffered region combine into energy and forces.

**Permuted adaptive partitioning** (``"pap"``, Hamiltonian; Heyden, Lin & Truhlar, J. Phys. Chem. B
2007, 111, 2231). With the inner groups I always QM and buffer groups b = 1…n of weights λ_b, every
subset S of the buffer gives a partition P_S = core ∪ I ∪ S evaluated as a complete QM/MM (or MM)
model, E_S, and

    E = Σ_S w_S E_S,      w_S = Π_{b∈S} λ_b Π_{b∉S} (1 − λ_b),      Σ_S w_S = 1,

the expectation of E_S when each buffer group is QM with probability λ_b. E is a smooth function of
the coordinates (a polynomial in the λ_b, each C²), so −∇E, including the transition forces

    −(∂E/∂λ_b) ∇λ_b,   ∂E/∂λ_b = Σ_{S ∌ b} w_S^{(b)} (E_{S∪b} − E_S)   (w^{(b)}: the product without b),

is exact and NVE dynamics conserves E + K. A group entering the buffer (λ → 0) or finishing it
(λ → 1) changes nothing, since its weight factor and its derivatives vanish there. Cost: 2ⁿ
evaluations per step, n ≤ ``max_buffer_groups``.

**Force interpolation** (``"interpolation"``, not Hamiltonian; Rode's hot-spot and Bulo et al.,
J. Chem. Theory Comput. 2009, 5, 2212): two evaluations, the small partition (buffer MM) and the large
one (buffer QM), and per-atom forces F_i = α_i F_i^large + (1 − α_i) F_i^small with α = 1 on the core
and inner groups, λ_g on buffer group g and 0 elsewhere. No energy has these forces (no transition
force; action ≠ reaction), so NVE drifts and a thermostat (Langevin) must remove the heat. The energy
reported, E_small + Λ (E_large − E_small) with Λ = 1 − Π_b (1 − λ_b), is for monitoring only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from bioqmmm.adaptive.partition import GroupWeights

#: The partition (QM groups) → (energy kJ/mol, forces kJ/mol/nm of every particle).
Evaluate = Callable[[frozenset[int]], tuple[float, np.ndarray]]

SCHEMES = ("pap", "interpolation")


def _subset(buffer: Sequence[int], mask: int) -> frozenset[int]:
    return frozenset(g for k, g in enumerate(buffer) if mask >> k & 1)


def pap_weights(lam: np.ndarray) -> np.ndarray:
    """w_S of every subset S (bit k of the index: buffer group k is QM) of buffer weights ``lam``."""
    n = len(lam)
    masks = np.arange(2**n)
    bits = (masks[:, None] >> np.arange(n)[None, :]) & 1
    return np.prod(np.where(bits == 1, lam[None, :], 1.0 - lam[None, :]), axis=1)


def pap_derivatives(lam: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """∂E/∂λ_b of E = Σ_S w_S E_S, for every buffer group b (``energies`` indexed by subset mask)."""
    n = len(lam)
    derivatives = np.zeros(n)
    for b in range(n):
        others = np.delete(np.arange(n), b)
        for mask in range(2**n):
            if mask >> b & 1:
                continue
            weight = np.prod([lam[k] if mask >> k & 1 else 1.0 - lam[k] for k in others])
            derivatives[b] += weight * (energies[mask | 1 << b] - energies[mask])
    return derivatives


def pap(weights: GroupWeights, evaluate: Evaluate, n_particles: int) -> tuple[float, np.ndarray, int]:
    """Energy (kJ/mol), forces (kJ/mol/nm) and number of evaluations of the permuted scheme."""
    inner, buffer = frozenset(weights.inner), weights.buffer
    lam = weights.lam[list(buffer)]
    results = [evaluate(inner | _subset(buffer, mask)) for mask in range(2 ** len(buffer))]
    energies = np.array([e for e, _ in results])
    relative = energies - energies[0]  # differences first: the total energies are large
    w = pap_weights(lam)
    energy = energies[0] + float(w @ relative)
    forces = np.einsum("s,sij->ij", w, np.array([f for _, f in results]))
    forces += weights.transition_forces(pap_derivatives(lam, relative), n_particles)
    return energy, forces, len(results)


def interpolation(weights: GroupWeights, evaluate: Evaluate, groups: Sequence[np.ndarray],
                  core: np.ndarray, n_particles: int) -> tuple[float, np.ndarray, int]:
    """Monitoring energy (kJ/mol), interpolated forces (kJ/mol/nm) and evaluations of force interpolation."""
    inner = frozenset(weights.inner)
    small_energy, small_forces = evaluate(inner)
    if not weights.buffer:
        return small_energy, small_forces, 1
    large_energy, large_forces = evaluate(inner | frozenset(weights.buffer))
    alpha = np.zeros(n_particles)
    alpha[core] = 1.0
    for g in weights.inner:
        alpha[groups[g]] = 1.0
    for g in weights.buffer:
        alpha[groups[g]] = weights.lam[g]
    forces = alpha[:, None] * large_forces + (1.0 - alpha[:, None]) * small_forces
    monitor = 1.0 - float(np.prod(1.0 - weights.lam[list(weights.buffer)]))
    return small_energy + monitor * (large_energy - small_energy), forces, 2
