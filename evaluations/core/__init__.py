"""Records, the SQLite store, cell keys, JSON and formatting helpers, the model cache, errors."""
