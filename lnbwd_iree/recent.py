"""A bounded map that keeps its most recently used entries: the one bound on
every per-shape cache (loaded modules, scratch buffers, call plans, bound
CUDA entries), so that a workload with ever new shapes (M varies with the
batch) does not keep what each shape loaded forever."""

from __future__ import annotations

import collections
import threading

# Per-shape state kept per cache: a static artifact's loaded module is about
# 2 MiB, so a cache of shapes holds at most ~64 MiB of them. Older entries are
# released; a shape used again after its release loads from the artifact cache.
SHAPES_KEPT = 32


class RecentlyUsed:
    """A thread-safe map that keeps its ``size`` most recently used (got or put) entries."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"RecentlyUsed needs a size of at least 1, got {size}")
        self.size = size
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        """The value under ``key`` (now the most recently used), or None."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        """Stores ``value`` (not None) under ``key``, releasing the least recently used beyond ``size``."""
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def items(self) -> list:
        """(key, value) pairs, least recently used first (a snapshot)."""
        with self._lock:
            return list(self._entries.items())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
