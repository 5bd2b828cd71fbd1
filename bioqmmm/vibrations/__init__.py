"""Vibrations of a QM/MM active block: Hessians (finite differences, static condensation of the
environment, partial Hessian), normal modes and IR intensities, thermochemistry, kinetic isotope
effects. Units: nm, kJ/mol, amu, e; frequencies in cm⁻¹ (imaginary ones negative)."""
