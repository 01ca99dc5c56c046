"""The executors, one module each; each registers an `Executor` in ``EXECUTORS`` (`..executor`)."""
