"""The suite file's schema: its tables and keys with their types, and the checks that report a problem with the
offending key and its line (:class:`SuiteError`, :class:`Locator`)."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ATTACK_KEYS", "AUTOENCODER_NAME", "DATA_KEYS", "DEFENSE_KEYS", "ESTIMATOR_KEYS", "Locator", "PAPER_KEYS",
           "POWER_LAW_KEYS", "QUICK_KEYS", "SUITE_KEYS", "SYSTEM_KEYS", "SuiteError", "TOP_KEYS", "check_keys", "check_table", "check_type", "read_table"]

#: The tables a suite may hold, and the keys of each with their types.
TOP_KEYS = {"suite", "data", "quick", "attacks", "paper", "defense", "defenses", "estimators", "power_law"}
SUITE_KEYS = {"name": str, "description": str, "seed": int, "models": list, "backends": list, "metrics": list,
              "data_note": str, "num_cpus": float, "num_gpus": float}
DATA_KEYS = {"dataset": str, "split": str, "n": int, "seed": int, "correct_only": bool}
QUICK_KEYS = {"n": int, "models": list, "params": dict, "attack_n": int}
ATTACK_KEYS = {"name": str, "norm": str, "targeted": str, "params": dict, "backends": list, "n": int,
               "defaults": str, "label": str, "num_cpus": float, "num_gpus": float, "threats": list, "models": list}
ESTIMATOR_KEYS = {"name": str, "models": list, "n": int, "params": dict, "label": str}
POWER_LAW_KEYS = {"max_eps": dict, "n_boot": int, "attacks": list}
PAPER_KEYS = {"model": str, "attack": str, "norm": str, "params": dict, "metric": str, "value": float,
              "source": str, "note": str, "threat": str, "label": str}
DEFENSE_KEYS = {"threats": list, "reformer": str, "fit_n": int, "autoencoder": dict, "diverse": dict,
                "generator": dict, "projection": dict, "enhanced": dict}
SYSTEM_KEYS = {"name": str, "reformer": str, "detectors": list, "randomize": list, "query_size": int,
               "description": str, "classifier": str}
#: A reformer or detector autoencoder's name in a suite.
AUTOENCODER_NAME = re.compile(r"^(I|II|cifar|D\d+|alphagan|invert)$")


class SuiteError(ValueError):
    """A suite file problem, reported with the key and its line."""


def read_table(doc: dict, name: str, schema: dict[str, type], loc: Locator) -> dict[str, Any]:
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise SuiteError(f"{loc.at(None, name)}: [{name}] must be a table")
    check_table(table, schema, loc, name)
    return table


def check_table(table: dict, schema: dict[str, type], loc: Locator, name: str) -> None:
    """Unknown keys and wrong types in ``table`` raise, naming the key and its line."""
    check_keys(table, set(schema), loc, name)
    for key, typ in schema.items():
        if key in table:
            check_type(table[key], typ, loc, name, key)


def check_keys(table: dict, allowed: set[str], loc: Locator, name: str | None) -> None:
    for key in table:
        if key not in allowed:
            where = f"[{name}]" if name else "the top level"
            raise SuiteError(f"{loc.at(name, key)}: unknown key '{key}' in {where}; expected one of {sorted(allowed)}")


def check_type(value: Any, typ: type, loc: Locator, table: str, key: str) -> None:
    ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
    if typ is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise SuiteError(f"{loc.at(table, key)}: '{key}' must be of type {typ.__name__}, got "
                         f"{type(value).__name__} ({value!r})")


class Locator:
    """Finds the line of ``key`` inside table ``table`` (``attacks[2]`` is the third ``[[attacks]]``)."""

    def __init__(self, text: str, where: str) -> None:
        self.lines = text.splitlines()
        self.where = where

    def at(self, table: str | None, key: str | None) -> str:
        line = self._find(table, key)
        return f"{self.where}:{line}" if line else self.where

    def _find(self, table: str | None, key: str | None) -> int | None:
        name, index = table, 0
        if table and "[" in table:
            name, index = table.split("[")[0], int(table.split("[")[1].rstrip("]"))
        current: str | None = None
        count: dict[str | None, int] = {}
        start = None
        for no, raw in enumerate(self.lines, 1):
            line = raw.strip()
            header = re.match(r"^\[\[?\s*([\w.]+)\s*\]\]?", line)
            if header:
                current = header.group(1).split(".")[0]
                if line.startswith("[["):
                    count[current] = count.get(current, -1) + 1
                if current == name and count.get(current, 0) == index and start is None:
                    start = no
                continue
            in_table = (name is None and current is None) or (
                current == name and count.get(current, 0) == index)
            if in_table and key and re.match(rf"^{re.escape(key)}\s*=", line):
                return no
            if in_table and key and re.search(rf"[{{,]\s*{re.escape(key)}\s*=", line):
                return no
        return start
