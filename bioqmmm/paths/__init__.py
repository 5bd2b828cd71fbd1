"""Reaction paths: the nudged elastic band, interpolation, QM/MM images, transition-state refinement."""
