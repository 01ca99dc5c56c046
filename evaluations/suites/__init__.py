"""Suite schema, validation with file:line errors, expansion into cells; the shipped TOML files."""
