"""Plain functions over tensors: hardness, mean field, power law, transfer, Kos matrices, cell metrics."""
