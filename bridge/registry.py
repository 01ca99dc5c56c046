"""One small generic registry: a read-only, ordered mapping from names to plugins of one kind.

Every extension point of advbridge (attacks, model families, estimators, report sections, executors, commands) is a
`Registry`. A plugin is one module of the registry's package; it imports the registry (which lives in the interface
module, below the plugins) and registers itself at import time::

    ATTACKS: Registry[AttackDef] = Registry("attack", "advbridge.bridge.attacks")   # in attacks/base.py
    FGSM = ATTACKS.add(AttackDef(name="fgsm", ...), rank=10)                      # in attacks/fgsm.py

Consumers look plugins up by name (``ATTACKS["fgsm"]``, ``ATTACKS.lookup(name)``) and never import a plugin module.
The first read of a registry imports every public module of its package (automatic discovery,
``pkgutil.iter_modules``, in name order), so adding a plugin is adding one file. Iteration is in ``(rank, name)``
order, so where the order is user-visible (a listing, a report's sections) a plugin fixes its place with ``rank``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Plugins of one ``kind``, discovered in ``package``.

    :param kind: what a plugin is, for messages ("attack", "estimator", ...).
    :param package: the dotted name of the package whose modules are the plugins; ``None`` for a registry filled
        only by explicit `add` calls.
    """

    def __init__(self, kind: str, package: str | None = None) -> None:
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty string, got {kind!r}")
        self.kind = kind
        self.package = package
        self._items: dict[str, tuple[float, T]] = {}
        self._order: list[str] | None = None
        self._discovered = package is None

    def add(self, item: T, *, name: str | None = None, rank: float = 0) -> T:
        """Register ``item`` under ``name`` (default ``item.name``) and return it; a name registered twice raises
        ``ValueError``, so two plugins cannot silently shadow each other."""
        key = name if name is not None else getattr(item, "name", None)
        if not isinstance(key, str) or not key:
            raise ValueError(f"a {self.kind} needs a non-empty string name, got {key!r}")
        if key in self._items:
            raise ValueError(f"{self.kind} {key!r} is registered twice")
        self._items[key] = (rank, item)
        self._order = None
        return item

    def discover(self) -> None:
        """Import every public module of the package (once), so that each registers its plugins."""
        if self._discovered:
            return
        self._discovered = True
        assert self.package is not None
        package = importlib.import_module(self.package)
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def lookup(self, name: Any) -> T:
        """The plugin called ``name``; ``ValueError`` naming the known ones otherwise."""
        self.discover()
        if not isinstance(name, str) or name not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; expected one of {sorted(self._items)}")
        return self._items[name][1]

    def _names(self) -> list[str]:
        self.discover()
        if self._order is None:
            self._order = sorted(self._items, key=lambda k: (self._items[k][0], k))
        return self._order

    def __getitem__(self, name: str) -> T:
        self.discover()
        return self._items[name][1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self)!r})"
