"""One small generic registry used for methods, datasets, architectures, metrics and suites.

Modelled on timm's optimizer registry (frozen info records, wildcard listing, helpful errors),
written for this project. Names are unique; unknown names are answered with the nearest
registered names; third-party packages can add methods through the Python entry-point group
``unlearning_bench.methods``.
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any

from bench.core.errors import BenchError, UnknownNameError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "unlearning_bench.methods"


@dataclass(frozen=True)
class Entry:
    """A registered object and its metadata (what data it needs, its defaults, ...)."""

    name: str
    obj: Any
    meta: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, key: str) -> Any:
        meta = object.__getattribute__(self, "meta")
        if key in meta:
            return meta[key]
        raise AttributeError(key)


class Registry:
    """Name -> object mapping with metadata, wildcard listing and nearest-name errors."""

    def __init__(self, kind: str, loader: Callable[[], None] | None = None):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._loader = loader
        self._loaded = loader is None

    # -- registration -------------------------------------------------------------------
    def register(self, name: str, **meta: Any) -> Callable[[Any], Any]:
        """Decorator: ``@registry.register("name", key=value)``. Duplicate names raise."""

        def deco(obj: Any) -> Any:
            self.add(name, obj, **meta)
            return obj

        return deco

    def add(self, name: str, obj: Any, **meta: Any) -> Entry:
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise BenchError(
                f"{self.kind} names must be non-empty strings without spaces: {name!r}"
            )
        if name in self._entries:
            prev = self._entries[name].obj
            raise BenchError(
                f"{self.kind} {name!r} is already registered (by {_where(prev)}); "
                f"choose another name or remove the duplicate registration"
            )
        entry = Entry(name, obj, dict(meta))
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> None:
        """Unregister ``name`` (used by tests and plugins that replace an entry)."""
        self._entries.pop(name, None)

    # -- lookup -------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True  # set first: the loader registers into this registry
            assert self._loader is not None
            self._loader()

    def entry(self, name: str) -> Entry:
        self._ensure_loaded()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self._unknown_message(name)) from None

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._ensure_loaded()
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._entries)

    def list(self, pattern: str | list[str] = "*") -> list[str]:
        """Sorted names matching one or several shell-style wildcards (``neg*``, ``*label*``)."""
        self._ensure_loaded()
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        return sorted(n for n in self._entries if any(fnmatch.fnmatchcase(n, p) for p in patterns))

    def resolve(self, pattern: str) -> list[str]:
        """Names matching ``pattern``; raises with the nearest names when nothing matches."""
        names = self.list(pattern)
        if not names:
            raise UnknownNameError(self._unknown_message(pattern))
        return names

    def _unknown_message(self, name: str) -> str:
        near = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(near)}?" if near else "no similar name"
        return (
            f"unknown {self.kind} {name!r}: {hint} "
            f"(`python -m bench.run --list {self.kind}s` prints all {len(self._entries)})"
        )


def _where(obj: Any) -> str:
    mod = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None)
    return f"{mod}.{qual}" if mod and qual else repr(obj)


def load_entry_point_methods(registry: Registry) -> list[str]:
    """Import every method plugin declared in the ``unlearning_bench.methods`` entry-point group.

    An entry point may name a module (which registers its methods with ``@register_method`` on
    import) or a callable, which is registered under the entry point's name if importing it did
    not already register that name. A plugin that fails to import is logged and skipped, so one
    broken package cannot take the harness down.
    """
    added = []
    for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
        before = set(registry._entries)
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the harness
            log.warning("method plugin %r (%s) failed to load: %s", ep.name, ep.value, exc)
            continue
        new = set(registry._entries) - before
        if ep.name not in registry._entries and callable(obj) and not new:
            registry.add(ep.name, obj, plugin=ep.value)
            new = {ep.name}
        added.extend(sorted(new))
    return added
