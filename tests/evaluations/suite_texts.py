"""Suite texts shared by several test modules (importable as ``suite_texts``: tests/conftest.py puts this folder on
the path)."""

DEFENDED = """\
[suite]
name = "defended"
models = ["mnist_tiny_cnn"]
backends = ["art"]

[data]
n = 30
correct_only = true

[defense]
threats = ["oblivious", "adaptive", "adaptive:D0", "adaptive:D1"]
fit_n = 300
autoencoder = { epochs = 2 }
diverse = { n = 2, structure = "II", pre_epochs = 1, epochs = 1, alpha = 0.2 }

[[defenses]]
name = "magnet"
reformer = "I"
detectors = [{ kind = "reconstruction", ae = "I", p = 2, drop_rate = 0.01 },
             { kind = "reconstruction", ae = "II", p = 1, drop_rate = 0.01 }]

[[defenses]]
name = "mid"
reformer = "I"
detectors = [{ kind = "reconstruction", ae = "I", p = 2, drop_rate = 0.01 },
             { kind = "mid", ae = "I", drop_rate = 0.01 }]

[[defenses]]
name = "A"
reformer = "D0"
detectors = [{ kind = "reconstruction", ae = "D0", p = 2, drop_rate = 0.01 }]

[[defenses]]
name = "B"
reformer = "D1"
detectors = [{ kind = "reconstruction", ae = "D1", p = 2, drop_rate = 0.01 }]

[[defenses]]
name = "random"
randomize = ["A", "B"]
query_size = 1

[[attacks]]
name = "fgsm"
norm = "linf"
params = { eps = 0.15 }

[[paper]]
attack = "fgsm"
threat = "oblivious"
metric = "accuracy_with_defense[magnet]"
value = 0.5
source = "made up for the test"
"""
