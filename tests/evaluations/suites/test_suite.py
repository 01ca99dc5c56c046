"""Suite files: expansion into cells and clear errors (key and line) before any work starts."""

import pytest

from advbridge.evaluations.core.keys import config_key
from advbridge.evaluations.suites.load import load_suite
from advbridge.evaluations.suites.schema import SuiteError

GOOD = """\
[suite]
name = "t"
models = ["mnist_tiny_cnn"]
backends = ["art", "foolbox"]

[data]
n = 8

[quick]
n = 4
params = { steps = 3 }

[[attacks]]
name = "pgd"
norm = "linf"
params = { eps = [0.1, 0.2], steps = 10 }

[[attacks]]
name = "deepfool"
norm = "linf"
"""


def test_expansion_into_cells():
    suite = load_suite("t", text=GOOD)
    cells = suite.cells()
    # pgd: 2 eps x 2 backends; deepfool linf exists on foolbox only
    assert [(c.spec.name, c.backend) for c in cells].count(("pgd", "art")) == 2
    assert [c.backend for c in cells if c.spec.name == "deepfool"] == ["foolbox"]
    assert {c.setting["eps"] for c in cells if c.spec.name == "pgd"} == {0.1, 0.2}
    keys = {config_key(c.config(suite, {"torch": "x"})) for c in cells}
    assert len(keys) == len(cells) == 5
    quick = load_suite("t", text=GOOD, quick=True)
    assert quick.data["n"] == 4
    assert {c.spec.params["steps"] for c in quick.cells() if c.spec.name == "pgd"} == {3}


def test_toolkit_defaults_differ_per_backend():
    text = GOOD.replace('name = "deepfool"\nnorm = "linf"', 'name = "deepfool"\nnorm = "l2"\ndefaults = "toolkit"')
    cells = [c for c in load_suite("t", text=text).cells() if c.spec.name == "deepfool"]
    by_backend = {c.backend: c.spec.resolved_params() for c in cells}
    assert by_backend["art"]["overshoot"] == 1e-6 and by_backend["art"]["steps"] == 100
    assert by_backend["foolbox"]["overshoot"] == 0.02


@pytest.mark.parametrize("old,new,message", [
    ('n = 8', 'n = 8\nsize = 3', r"t:8: unknown key 'size' in \[data\]"),
    ('n = 8', 'n = "eight"', r"t:7: 'n' must be of type int, got str"),
    ('name = "pgd"', 'name = "pgdd"', r"t:14: unknown attack 'pgdd'"),
    ('models = ["mnist_tiny_cnn"]', 'models = ["resnet9000"]', r"t:3: unknown model 'resnet9000'"),
    ('eps = [0.1, 0.2]', 'eps = []', r"t:16: empty grid: parameter 'eps' of attack 'pgd' lists no value"),
    ('models = ["mnist_tiny_cnn"]', 'models = []', r"t:3: empty grid: 'models' lists no model"),
    ('steps = 10 }', 'steps = 10, stepz = 3 }', r"t:16: unknown parameter\(s\) \['stepz'\]"),
    ('backends = ["art", "foolbox"]', 'backends = ["art", "cleverhans"]', r"t:4: unknown backend 'cleverhans'"),
])
def test_bad_suites_name_key_and_line(old, new, message):
    text = GOOD.replace(old, new, 1)
    assert text != GOOD
    with pytest.raises(SuiteError, match=message):
        load_suite("t", text=text)


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(SuiteError, match="invalid TOML"):
        load_suite("t", text="[suite\nname=")
    with pytest.raises(SuiteError, match="suite file not found"):
        load_suite(tmp_path / "nope.toml")


@pytest.mark.parametrize("name", ["goodfellow_fgsm", "security_curves", "toolkit_audit", "flagship"])
def test_shipped_suites_load(name):
    from advbridge.evaluations.cli.common import suite_path

    for quick in (False, True):
        suite = load_suite(suite_path(name), quick=quick)
        assert suite.name == name and suite.cells()


def test_quick_caps_lower_but_never_raise():
    text = GOOD.replace('name = "deepfool"\nnorm = "linf"', 'name = "bim"\nnorm = "linf"\nparams = { steps = 2 }')
    cells = load_suite("t", text=text, quick=True).cells()
    steps = {c.spec.name: c.spec.resolved_params()["steps"] for c in cells}
    assert steps == {"pgd": 3, "bim": 2}
