"""Free-energy sampling: reaction coordinates and biases, umbrella windows, metadynamics, MBAR reweighting."""
