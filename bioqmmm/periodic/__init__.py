"""Periodic crystals: charged defects at infinite dilution and elastic constants (docs/periodic.md).

cells: supercells with a defect cell at the origin, deformations in OpenMM's box form; madelung: the
Madelung self-energy of a lattice (anisotropic dielectric); extrapolation: E(L) = E∞ + A/L + B/L³ and the
analytic A; dielectric: the static dielectric tensor from Γ-point force constants; model: energies, forces
and relaxation of a cell at any box; elastic: stress by strain derivatives of the energy, C = ∂S/∂E; setup:
the cells of a protocol run; crystals: the rock-salt cell of the examples.
"""
