"""Free energies between levels of theory and between QM regions: the λ-mixed Hamiltonian, the automatic λ
schedule, the estimators (MBAR, BAR, Zwanzig), nonequilibrium switching, the trust diagnostics and
thermodynamic cycles behind ``protocol: fep`` (``docs/fep.md``)."""
