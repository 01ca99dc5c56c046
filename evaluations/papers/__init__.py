"""The papers' published numbers (data only)."""
