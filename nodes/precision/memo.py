"""One kind of cache for everything the pack makes from an object it was given (a weight copy at a dtype, a fused
detector network, a SAM runtime, a fingerprint): kept per source object and key while the source lives, never
keeping it alive, and never stored on the source itself (a value on a graph edge is shared and must not change).
Each store is one PerSource owned by the module that makes its values."""
from __future__ import annotations

import threading
import weakref
from typing import Callable, Hashable, TypeVar

V = TypeVar("V")


class PerSource:
    """Values per (source object, key): `source` is held weakly, so an entry goes with its source."""

    def __init__(self):
        self._by_source: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()
        self._lock = threading.RLock()

    def get(self, source, key: Hashable):
        with self._lock:
            return self._by_source.get(source, {}).get(key)

    def put(self, source, key: Hashable, value) -> None:
        with self._lock:
            self._by_source.setdefault(source, {})[key] = value

    def made(self, source, key: Hashable, make: Callable[[], V]) -> tuple[V, bool]:
        """The value for (source, key), made by `make()` the first time (under the store's lock, so two callers never
        make it twice); returns (value, whether it was made now)."""
        with self._lock:
            per_source = self._by_source.setdefault(source, {})
            if key in per_source:
                return per_source[key], False
            value = per_source[key] = make()
            return value, True

    def current(self, source, key: Hashable, valid_for: Hashable, make: Callable[[], V]) -> V:
        """The value for (source, key) made while `valid_for` was what it is now (what the value depends on that can
        change in place: tensor versions, a parameter's dtype), else a new one from `make()`, kept in its stead."""
        with self._lock:
            hit = self._by_source.get(source, {}).get(key)
        if hit is not None and hit[0] == valid_for:
            return hit[1]
        value = make()
        self.put(source, key, (valid_for, value))
        return value

    def clear(self) -> None:
        with self._lock:
            self._by_source.clear()
