"""Data sets: mnist5k, user-supplied MNIST/CIFAR-10, the domain-shift test sets."""
