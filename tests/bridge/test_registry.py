"""The generic registry (bridge/registry.py) and the attack registry built on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from advbridge.bridge import ATTACKS
from advbridge.bridge import attacks as attacks_package
from advbridge.bridge.attacks.base import AttackDef
from advbridge.bridge.registry import Registry


def test_registry_orders_by_rank_then_name_and_refuses_duplicates():
    reg: Registry[str] = Registry("thing")
    reg.add("c", name="c", rank=1)
    reg.add("b", name="b", rank=0)
    reg.add("a", name="a", rank=1)
    assert list(reg) == ["b", "a", "c"] and len(reg) == 3 and "a" in reg and "z" not in reg
    with pytest.raises(ValueError, match="thing 'a' is registered twice"):
        reg.add("again", name="a")
    with pytest.raises(ValueError, match=r"unknown thing 'z'; expected one of \['a', 'b', 'c'\]"):
        reg.lookup("z")
    with pytest.raises(ValueError, match="a thing needs a non-empty string name, got None"):
        reg.add(object())
    with pytest.raises(ValueError, match="kind must be a non-empty string"):
        Registry("")


def test_discovery_imports_every_module_of_the_package_once():
    """A fresh registry over the attacks package finds nothing of its own (the modules register in ATTACKS), but
    reading it imports the package's modules; ATTACKS itself holds each attack module's AttackDef exactly once."""
    names = ["fgsm", "bim", "mifgsm", "pgd", "cw", "ead", "deepfool", "newtonfool", "spatial", "jsma", "vat", "step_ll",
             "lbfgs", "kos_classifier", "kos_latent", "kos_vae", "apgd", "square", "autoattack", "ddn", "fmn",
             "saltpepper", "noise", "hsj", "boundary", "brendel_bethge"]
    assert list(ATTACKS) == names  # the rank order `advbridge attacks` lists
    helpers = {"__init__", "advlib", "base", "kos_base", "starts"}  # modules that define no attack
    files = {p.stem for p in Path(attacks_package.__file__).parent.glob("*.py")} - helpers
    assert files == set(names)  # one attack per file, every file found
    assert all(isinstance(a, AttackDef) and a.name == n for n, a in ATTACKS.items())
    with pytest.raises(ValueError, match="attack 'fgsm' is registered twice"):
        ATTACKS.add(ATTACKS["fgsm"])
    empty: Registry[object] = Registry("probe", "advbridge.bridge.attacks")
    assert len(empty) == 0
