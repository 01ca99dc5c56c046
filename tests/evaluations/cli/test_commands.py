"""The command registry: exactly the 14 subcommands, in their ``--help`` order, each run through `main` on a tiny case
(a real run where cheap, else its ``--help`` and an argument error it raises before any work)."""

from __future__ import annotations

import argparse
import json

import pytest

from advbridge.evaluations.cli.app import build_parser, main
from advbridge.evaluations.cli.command import COMMANDS, Command

#: Today's subcommands, in the order ``advbridge --help`` lists them.
ORDER = ["attacks", "models", "weights", "crossval", "demo", "run", "audit", "defend", "invert", "kos", "hardness",
         "transfer", "meanfield", "report"]

TINY_SUITE = """[suite]
name = "cli_tiny"
seed = 0
models = ["mnist_tiny_cnn"]
backends = ["art"]

[data]
dataset = "mnist5k"
split = "test"
n = 4

[[attacks]]
name = "fgsm"
norm = "linf"
params = { eps = 0.1 }
"""


def test_the_registry_holds_the_fourteen_commands_in_help_order():
    assert set(COMMANDS) == set(ORDER) and len(COMMANDS) == 14
    assert list(COMMANDS) == ORDER
    assert all(isinstance(c, Command) and c.name == name for name, c in COMMANDS.items())
    choices = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert list(choices) == ORDER


def test_a_command_registered_twice_is_an_error():
    with pytest.raises(ValueError, match="command 'attacks' is registered twice"):
        COMMANDS.add(Command(name="attacks", help="again", run=lambda args: 0))
    assert COMMANDS["attacks"].help == "list the attack registry: norms, backends, targeted support"
    with pytest.raises(ValueError, match="unknown command 'nope'"):
        COMMANDS.lookup("nope")


@pytest.mark.parametrize("name", ORDER)
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: advbridge {name} ")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """``advbridge run`` on a four-input FGSM suite: the store ``report`` re-renders."""
    root = tmp_path_factory.mktemp("cli_tiny")
    (root / "tiny.toml").write_text(TINY_SUITE)
    code = main(["run", str(root / "tiny.toml"), "--out", str(root / "out"), "--threads", "1", "--device", "cpu"])
    return code, root / "out"


def _runs(name: str, tmp_path, tiny_run) -> tuple[list[str], int, str]:
    """The argument list of a tiny case of command ``name``, its exit code, and a fragment of its output."""
    out = str(tmp_path / "out")
    common = ["--threads", "1", "--device", "cpu"]
    if name == "run":
        return [], tiny_run[0], ""
    if name == "report":
        return [name, str(tiny_run[1])], 0, "rendered 1 cells (0 failed)"
    if name == "weights":
        return [name, "--check"], 0, "ok  "
    if name == "crossval":
        return [name, "--model", "mnist_tiny_cnn", "--attack", "fgsm", "--n", "3", "--param", "eps=0.1",
                "--backends", "art", "--out", out, *common], 0, "wrote "
    cases = {  # an error the command raises before it loads data or trains anything
        "attacks": ([name], 0, "fgsm"),
        "models": ([name], 0, "mnist_tiny_cnn"),
        "demo": ([name, "--quick", "--help"], 0, "usage: advbridge demo"),  # the flagship suite takes minutes
        "audit": ([name, "--model", "mnist_nope", "--quick", "--out", out, *common], 2, "unknown model 'mnist_nope'"),
        "defend": ([name, "--defense", "magnet", "--attack", "fgsm", "--param", "eps", "--out", out, *common], 2,
                   "--param must look like key=value"),
        "invert": ([name, "--attack", "fgsm", "--param", "eps", "--out", out, *common], 2,
                   "--param must look like key=value"),
        "kos": ([name, "--attack", "latent", "--model", "mnist_nope", "--out", out, *common], 2,
                "unknown model 'mnist_nope'"),
        "hardness": ([name, "--levels", "x", "--out", out, *common], 2, "could not convert string to float"),
        "transfer": ([name, "--models", "mnist_tiny_cnn", "--noise-sigmas", "x", "--out", out, *common], 2,
                     "could not convert string to float"),
        "meanfield": ([name, "--model", "mnist_nope", "--out", out, *common], 2, "unknown model 'mnist_nope'"),
    }
    return cases[name]


@pytest.mark.parametrize("name", ORDER)
def test_every_command_runs_a_tiny_case(name, tmp_path, tiny_run, capsys):
    argv, code, fragment = _runs(name, tmp_path, tiny_run)
    if name == "run":
        assert code == 0
        records = json.loads((tiny_run[1] / "results.json").read_text())
        assert [(r["attack"], r["backend"], r["n"]) for r in records] == [("fgsm", "art", 4)]
        return
    if argv[-1] == "--help":
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        result = exit_.value.code
    else:
        result = main(argv)
    captured = capsys.readouterr()
    assert result == code, captured.err
    assert fragment in (captured.out if code == 0 else captured.err)
