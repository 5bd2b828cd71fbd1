"""Antibody–antigen (protein–protein) interface refinement and scoring at QM/MM level.

partners: which chains bind which; model: the complex as scored (bridging waters kept, systems built);
contacts: interface residues, buried area, hydrogen bonds, salt bridges; energies: MM interaction
decomposition and implicit-solvent binding scores; mutation: truncation to alanine; hotspots: the QM
region within an atom budget; scoring: complex − partners at MM-GBSA and QM/MM level, alanine scans;
refine: QM/MM optimisation of the interface; validation: agreement with measured ΔΔG.
"""
