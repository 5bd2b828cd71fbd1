"""Around a QM/MM model: checkpoints, the MM environment and its relaxation, reporters, optimisers,
multiple time steps, run identities."""
