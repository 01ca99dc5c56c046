"""The ``advbridge`` command line: one command per file."""
