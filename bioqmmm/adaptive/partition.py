"""The buffered partition: which groups are QM, which are MM, and the smooth weight of those in between.

Each group g (a whole molecule: a water, an ion, a substrate) is placed by its centre of mass R_g; the
active centre by the centre of mass R_c of its atoms. With r_g = |R_g − R_c| (minimum image in a
periodic box) the group's QM weight is the quintic smoothstep

    λ(r) = 1 − 10 t³ + 15 t⁴ − 6 t⁵,   t = (r − r_in) / (r_out − r_in) clipped to [0, 1],

1 inside ``r_inner`` (QM), 0 beyond ``r_outer`` (MM), C² everywhere (its first and second derivatives
vanish at both radii). Its gradient, the direction of the **transition force** −(∂E/∂λ_g) ∇λ_g, acts on
every atom that defines r_g:

    ∇_i λ_g = λ'(r_g) (m_i / M_g) u_g   (i in g),     ∇_j λ_g = −λ'(r_g) (m_j / M_c) u_g   (j in the centre),

u_g = (R_g − R_c) / r_g. At most ``max_buffer_groups`` groups are weighted at once (the cost of the
Hamiltonian scheme doubles with each, :mod:`bioqmmm.adaptive.schemes`); beyond the cap the groups of
smallest λ count as MM for that step, which breaks energy conservation, and are reported as dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bioqmmm.errors import InputError
from bioqmmm.qmmm.embedding import quintic_switch
from bioqmmm.units import minimum_image


@dataclass(frozen=True)
class GroupWeights:
    """The partition at one structure.

    lam: λ of every group. inner: groups with λ = 1 (QM). buffer: groups with 0 < λ < 1, largest λ
    first, at most ``max_buffer_groups``. dropped: buffer groups beyond the cap, counted as MM.
    gradients: ∇λ of each buffer group as (atoms, (n, 3) array in 1/nm), in the order of ``buffer``.
    """

    lam: np.ndarray
    inner: tuple[int, ...]
    buffer: tuple[int, ...]
    dropped: tuple[int, ...]
    gradients: tuple[tuple[np.ndarray, np.ndarray], ...]

    def transition_forces(self, de_dlam: Sequence[float], n_particles: int) -> np.ndarray:
        """−Σ_g (∂E/∂λ_g) ∇λ_g over the buffer groups, kJ/mol/nm, given ∂E/∂λ_g (kJ/mol) in buffer order."""
        forces = np.zeros((n_particles, 3))
        for derivative, (atoms, gradient) in zip(de_dlam, self.gradients, strict=True):
            np.add.at(forces, atoms, -derivative * gradient)
        return forces


class BufferedPartition:
    """Groups around an active centre, each QM (inside ``r_inner``), MM (beyond ``r_outer``) or weighted.

    centre: atom indices whose centre of mass is the active centre. groups: atom indices of each
    group (whole molecules; no atom in two groups or in the centre; none: a fixed region). masses: of every
    particle (Da).
    r_inner, r_outer: nm. max_buffer_groups: the most groups weighted at once.
    """

    def __init__(self, centre: Sequence[int], groups: Sequence[Sequence[int]], masses: np.ndarray,
                 r_inner: float, r_outer: float, max_buffer_groups: int = 4) -> None:
        if not 0.0 < r_inner < r_outer:
            raise InputError(f"the buffer needs 0 < r_inner < r_outer, got {r_inner} and {r_outer} nm")
        if max_buffer_groups < 1:
            raise InputError(f"max_buffer_groups must be at least 1, got {max_buffer_groups}")
        self.centre = np.array(sorted(int(i) for i in centre), dtype=int)
        self.groups = tuple(np.array(sorted(int(i) for i in g), dtype=int) for g in groups)
        if len(self.centre) == 0:
            raise InputError("the active centre has no atoms")
        if any(len(g) == 0 for g in self.groups):
            raise InputError("an adaptive group has no atoms")
        seen = np.concatenate([self.centre, *self.groups])
        if len(np.unique(seen)) != len(seen):
            raise InputError("an atom is in two groups, or in a group and in the active centre")
        self.masses = np.asarray(masses, dtype=float)
        self.r_inner, self.r_outer = float(r_inner), float(r_outer)
        self.max_buffer_groups = int(max_buffer_groups)
        self._centre_fraction = self.masses[self.centre] / self.masses[self.centre].sum()
        self._fractions = tuple(self.masses[g] / self.masses[g].sum() for g in self.groups)

    def _centre_of(self, atoms: np.ndarray, fractions: np.ndarray, positions: np.ndarray,
                   box: np.ndarray | None) -> np.ndarray:
        x = positions[atoms]
        if box is not None:  # the group whole about its first atom
            x = x[0] + minimum_image(x - x[0], box)
        return fractions @ x

    def distances(self, positions: np.ndarray, box: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """r_g (nm) of every group and the vectors R_g − R_c (nm, minimum image)."""
        centre = self._centre_of(self.centre, self._centre_fraction, positions, box)
        vectors = np.array([self._centre_of(g, f, positions, box) for g, f in
                            zip(self.groups, self._fractions, strict=True)]).reshape(-1, 3) - centre
        if box is not None:
            vectors = minimum_image(vectors, box)
        return np.linalg.norm(vectors, axis=1), vectors

    def weights(self, positions: np.ndarray, box: np.ndarray | None = None) -> GroupWeights:
        """λ of every group and the gradients of those in the buffer, at ``positions`` (nm)."""
        r, vectors = self.distances(np.asarray(positions, dtype=float), box)
        lam, dlam = quintic_switch(r, self.r_inner, self.r_outer)
        inner = tuple(int(g) for g in np.flatnonzero(lam >= 1.0))
        weighted = [int(g) for g in np.flatnonzero((lam > 0.0) & (lam < 1.0))]
        weighted.sort(key=lambda g: (-lam[g], g))
        buffer, dropped = tuple(weighted[: self.max_buffer_groups]), tuple(weighted[self.max_buffer_groups:])
        lam = lam.copy()
        lam[list(dropped)] = 0.0
        gradients = []
        for g in buffer:
            u = vectors[g] / r[g]
            atoms = np.concatenate([self.groups[g], self.centre])
            scale = np.concatenate([self._fractions[g], -self._centre_fraction])
            gradients.append((atoms, dlam[g] * scale[:, None] * u[None, :]))
        return GroupWeights(lam, inner, buffer, dropped, tuple(gradients))
