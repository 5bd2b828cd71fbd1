"""Error of the periodic embedding's far field, for docs/theory.md.

QM water (HF/6-31G*) in a 4 nm TIP3P box. The reference is the same scheme with a 1.8 nm
cutoff, where the second-order far-field expansion is converged; at each smaller cutoff we
report the energy error and the RMS force error on QM atoms and on all MM atoms, and the
size of the far-field term itself (what a cutoff-only scheme would miss).

    python benchmarks/far_field_error.py
"""

from __future__ import annotations

import numpy as np

from bioqmmm import QMMMSystem
from bioqmmm.examples import water_box
from bioqmmm.qm import PySCFEngine
from bioqmmm.qmmm.embedding import PeriodicEmbedding


def main() -> None:
    top, system, pos = water_box(4.0, nonbonded_cutoff=0.9)
    results = {}
    for cutoff in (0.8, 1.0, 1.2, 1.8):
        qmmm = QMMMSystem(
            top,
            system,
            [0, 1, 2],
            charge=0,
            multiplicity=1,
            engine=PySCFEngine("hf", "6-31g*", conv_tol=1e-11),
            embedding=PeriodicEmbedding(cutoff=cutoff, switch_width=0.2),
            platform="Reference",
        )
        energy, forces = qmmm.energy_and_forces(pos)
        results[cutoff] = (energy, forces, qmmm.last_qm.far_field_energy, qmmm.last_qm.n_exact_charges)
    e_ref, f_ref, _, _ = results[1.8]
    print(f"{top.getNumAtoms()} atoms; reference: cutoff 1.8 nm")
    print("cutoff/nm  exact charges  E_far/(kJ/mol)  dE/(kJ/mol)  RMS dF QM  RMS dF MM  (kJ/mol/nm)")
    for cutoff, (energy, forces, e_far, n_exact) in results.items():
        df = forces - f_ref
        print(
            f"{cutoff:9.1f}  {n_exact:13d}  {e_far:14.4f}  {energy - e_ref:11.4f}  "
            f"{np.sqrt(np.mean(df[:3] ** 2)):9.4f}  {np.sqrt(np.mean(df[3:] ** 2)):9.4f}"
        )


if __name__ == "__main__":
    main()
