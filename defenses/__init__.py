"""Defenses neither toolkit has (MagNet, MID, Invert-and-Classify, trainers), as ART-compatible classes.

Filled in by the defenses issues; may import ``advbridge.bridge``, never ``advbridge.evaluations``.
"""
