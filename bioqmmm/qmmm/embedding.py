"""Which MM charges the QM region sees, and how: the electrostatic embedding layer.

* :class:`FullEmbedding` (non-periodic systems): every MM charge enters the QM
  Hamiltonian exactly.
* :class:`PeriodicEmbedding`: the QM region is made whole by minimum image; MM charges
  (and their periodic images) within ``cutoff`` of any QM atom enter exactly, switched off by a
  C2 weight w so energy and forces are continuous -- scaled to w q where the engine returns
  potentials at MM charges (PySCF), moved out to c + (r - c) / w where it does not (xtb), so
  that only position derivatives are needed; everything else -- the switched-off part
  of those charges, all farther charges and all periodic images -- is the Ewald far field,
  Taylor-expanded to second order and coupled to the QM density as a polynomial potential:
  about every QM atom, partitioned by basis function, for engines that take one
  (``atomic_external``, PySCF), else about the QM centroid. The derivation is in ``docs/theory.md``.

Both return the QM/MM energy (kJ/mol) and forces (kJ/mol/nm) on the QM atoms and on each MM
charge, the exact gradient of that energy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bioqmmm.errors import InputError
from bioqmmm.qm.base import AtomicPolynomialPotential, PolynomialPotential, QMEngine, QMResult
from bioqmmm.qmmm.ewald import multipole_response_sum, point_tensors_at
from bioqmmm.qmmm.far_field import EwaldFarField, images_within
from bioqmmm.region.region import QMRegion
from bioqmmm.units import COULOMB_KJMOL_NM, minimum_image


@dataclass(frozen=True)
class EmbeddingResult:
    """Energy (kJ/mol), forces on QM atoms and on MM charges (kJ/mol/nm), engine output.

    n_exact_charges: MM charges (or periodic images) that entered the QM Hamiltonian exactly;
    far_field_energy: interaction of the QM region with the far field, kJ/mol (part of energy).
    """

    energy: float
    qm_forces: np.ndarray
    mm_forces: np.ndarray
    qm: QMResult
    n_exact_charges: int
    far_field_energy: float = 0.0


class FullEmbedding:
    """Every MM charge enters the QM Hamiltonian exactly (non-periodic systems)."""

    periodic = False

    def evaluate(
        self,
        engine: QMEngine,
        region: QMRegion,
        qm_pos: np.ndarray,
        mm_pos: np.ndarray,
        mm_q: np.ndarray,
        box: np.ndarray | None = None,
        step: int | None = None,
        gradients: bool = True,
    ) -> EmbeddingResult:
        res = engine.compute(list(region.symbols), qm_pos, region.charge, region.multiplicity, mm_pos, mm_q, step=step,
                             gradients=gradients)
        return EmbeddingResult(res.energy, res.qm_forces, res.mm_forces, res, len(mm_q))


def whole_region(qm_pos: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Rebuild the QM region whole: each atom as the minimum image relative to the first."""
    return qm_pos[0] + minimum_image(qm_pos - qm_pos[0], box)


#: A receding switched charge (engines without potentials at MM charges) is dropped below this weight,
#: at 1e6 times its distance, where what it still adds is below double precision.
MIN_RECEDING_WEIGHT = 1e-6


def quintic_switch(r: np.ndarray, r_on: float, r_off: float) -> tuple[np.ndarray, np.ndarray]:
    """S(r) = 1 - 10 t^3 + 15 t^4 - 6 t^5, t = (r - r_on)/(r_off - r_on), clipped; and dS/dr."""
    t = np.clip((r - r_on) / (r_off - r_on), 0.0, 1.0)
    s = 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t * t)
    ds = -30.0 * t * t * (1.0 - t) ** 2 / (r_off - r_on)
    return s, ds


#: Where the periodic embedding expands its far field (see :class:`PeriodicEmbedding`).
EXPANSIONS = ("atoms", "centroid")


@dataclass
class PeriodicEmbedding:
    """Switched exact near field plus Ewald far field for periodic systems.

    cutoff: MM charges within this distance (nm) of any QM atom enter exactly;
    switch_width: the weight of a charge goes smoothly from 1 at ``cutoff - switch_width``
    to 0 at ``cutoff`` (nm); ewald_tolerance: relative accuracy of the particle mesh of the far
    field's Ewald sums (:class:`~bioqmmm.qmmm.far_field.EwaldFarField`); expansion: ``"atoms"`` expands
    the far field about every QM atom where the engine takes such a potential (``atomic_external``) and
    about the centroid where it does not, ``"centroid"`` always about the centroid.
    """

    cutoff: float = 1.2
    switch_width: float = 0.2
    ewald_tolerance: float = 1e-5
    expansion: str = "atoms"
    _far_field_cache: dict = field(default_factory=dict, repr=False)
    periodic = True

    def __post_init__(self) -> None:
        if not 0.0 < self.switch_width < self.cutoff:
            raise InputError(f"switch_width must lie in (0, cutoff); got {self.switch_width} with cutoff {self.cutoff}")
        if self.expansion not in EXPANSIONS:
            raise InputError(f"far-field expansion {self.expansion!r} is not one of {EXPANSIONS}")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_far_field_cache"] = {}
        return state

    def _far_field(self, box: np.ndarray) -> EwaldFarField:
        """The Ewald sums for this box (cached per box)."""
        key = tuple(np.round(box, 12).ravel())
        if key not in self._far_field_cache:
            self._far_field_cache.clear()
            self._far_field_cache[key] = EwaldFarField(box, self.ewald_tolerance)
        return self._far_field_cache[key]

    def evaluate(
        self,
        engine: QMEngine,
        region: QMRegion,
        qm_pos: np.ndarray,
        mm_pos: np.ndarray,
        mm_q: np.ndarray,
        box: np.ndarray | None = None,
        step: int | None = None,
        gradients: bool = True,
    ) -> EmbeddingResult:
        if box is None:
            raise InputError("PeriodicEmbedding needs periodic box vectors")
        qm = whole_region(qm_pos, box)
        center = qm.mean(axis=0)
        far_field = self._far_field(box)
        d0 = minimum_image(mm_pos - center, box)

        # candidates for the near field: periodic images (image - centre) within reach of any QM atom
        rqm = np.linalg.norm(qm - center, axis=1).max()
        img, owner = images_within(d0, box, self.cutoff + rqm)
        to_qm = img[:, None, :] + center - qm[None]  # (n_images, n_qm, 3)
        r_iA = np.linalg.norm(to_qm, axis=2)
        s, ds = quintic_switch(r_iA, self.cutoff - self.switch_width, self.cutoff)
        weight = 1.0 - np.prod(1.0 - s, axis=1)
        near = weight > 0.0
        img, owner, to_qm, r_iA, s, ds, weight = (a[near] for a in (img, owner, to_qm, r_iA, s, ds, weight))
        q_near = mm_q[owner]
        scaled = getattr(engine, "potentials", True)
        if scaled:  # switched charges keep their place and scale: w q at r
            sites, site_q = center + img, weight * q_near
        else:  # switched charges keep their value and recede from the centre: q at c + (r - c) / w
            keep = weight > MIN_RECEDING_WEIGHT
            img, owner, to_qm, r_iA, s, ds, weight, q_near = (
                a[keep] for a in (img, owner, to_qm, r_iA, s, ds, weight, q_near)
            )
            sites, site_q = center + img / weight[:, None], q_near
        x_sites = center - sites
        partial = np.flatnonzero(weight < 1.0)

        # far field at the expansion centres (every QM atom, or the centroid): full Ewald kernel minus the
        # exactly treated charges
        atomic = self.expansion == "atoms" and getattr(engine, "atomic_external", False)
        centres = qm if atomic else center[None]
        shifts = centres - center
        geometry = far_field.geometry(center, d0, centres)
        far = far_field.tensors(geometry, mm_q) + point_tensors_at(shifts, x_sites, -site_q, None)
        far = far.scaled(COULOMB_KJMOL_NM)
        external = (AtomicPolynomialPotential(centres, far.t0, far.t1, far.t2) if atomic
                    else PolynomialPotential(center, float(far.t0[0]), far.t1[0], far.t2[0]))
        res = engine.compute(
            list(region.symbols),
            qm,
            region.charge,
            region.multiplicity,
            sites,
            site_q,
            potential_at=partial if scaled and gradients else None,
            external=external,
            step=step,
            gradients=gradients,
        )
        k = len(centres)
        m0 = np.reshape(res.moments.m0, k)
        m1, m2 = np.reshape(res.moments.m1, (k, 3)), np.reshape(res.moments.m2, (k, 3, 3))
        e_far = float(far.t0 @ m0 + np.sum(far.t1 * m1) + 0.5 * np.sum(far.t2 * m2))
        if not gradients:
            return EmbeddingResult(res.energy, np.zeros_like(qm), np.zeros_like(mm_pos), res, len(img), e_far)
        f_qm = res.qm_forces.copy()
        f_mm = np.zeros_like(mm_pos)

        # far field: explicit dependence on the MM positions (through the Ewald kernels)
        f_mm += COULOMB_KJMOL_NM * mm_q[:, None] * far_field.multipole_gradient(geometry, m0, m1, m2)

        # dE/d(site position): the engine's and the subtracted near kernel's
        u_sites, g_sites = multipole_response_sum(shifts, x_sites, m0, m1, m2, None)
        grad_sites = -res.mm_forces + COULOMB_KJMOL_NM * site_q[:, None] * g_sites

        # dE/dc per centre: at fixed tensors (the engine's) and through the tensors
        through = m0[:, None] * far.t1 + np.einsum("kab,kb->ka", far.t2, m1)
        fixed = np.reshape(res.center_gradient, (k, 3)) if res.center_gradient is not None else -through
        de_dc = fixed + through + 0.5 * np.einsum("kab,kabc->kc", m2, far.t3)
        if atomic:
            f_qm -= de_dc
        else:
            f_qm -= de_dc.sum(axis=0) / len(qm)
        if scaled:
            np.add.at(f_mm, owner, -grad_sites)
            de_dw = q_near[partial] * (res.mm_potentials - COULOMB_KJMOL_NM * u_sites[partial])
        else:  # receding sites c + (r - c) / w move with the centroid c
            np.add.at(f_mm, owner, -grad_sites / weight[:, None])
            f_qm -= np.sum((1.0 - 1.0 / weight)[:, None] * grad_sites, axis=0) / len(qm)
            de_dw = -np.einsum("ia,ia->i", grad_sites[partial], img[partial]) / weight[partial] ** 2

        # switching weights w_i = 1 - prod_A (1 - S(|r_i - R_A|))
        one_minus = 1.0 - s[partial]  # dw_i/dS_iA = prod over the other QM atoms, as prefix x suffix products
        ones = np.ones((len(partial), 1))
        before = np.cumprod(np.hstack([ones, one_minus[:, :-1]]), axis=1)
        after = np.cumprod(np.hstack([ones, one_minus[:, :0:-1]]), axis=1)[:, ::-1]
        dw_ds = before * after
        unit_vec = to_qm[partial] / r_iA[partial, :, None]
        dE_dvec = (de_dw[:, None] * dw_ds * ds[partial])[:, :, None] * unit_vec  # dE/d(r_i - R_A)
        np.add.at(f_mm, owner[partial], -dE_dvec.sum(axis=1))
        f_qm += dE_dvec.sum(axis=0)
        return EmbeddingResult(res.energy, f_qm, f_mm, res, len(img), e_far)
