"""Defended systems built from a suite's [defense] / [[defenses]]."""
