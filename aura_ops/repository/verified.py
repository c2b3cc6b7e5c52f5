"""``VerifiedCache``: which stored files a check hashed and found as sealed, kept in the
repository's ``cache/verified-files.json`` (a file of the control machine, like the rest of the
repository's own files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aura_ops.repository.backend import open_regular_file, write_cache


class _Entries(dict[str, str]):
    """The cache's map, remembering which keys were looked up or set (``used``)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.used: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        return super().get(key, default)

    def __setitem__(self, key: str, value: str) -> None:
        self.used.add(key)
        super().__setitem__(key, value)


class VerifiedCache:
    """Stored files of the repository that a check hashed and found as sealed (key: device,
    inode, size, mtime, ctime -> hash): lets ``snapshots list`` skip re-hashing what nobody
    rewrote since (``Component.damage``). Only a hint for ``list``: ``verify`` re-hashes every
    artifact and file, and restores hash what they use. A cache file that is unreadable or not a
    map of strings is ignored (and replaced by verify)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, str] = _Entries()
        try:
            with open_regular_file(path) as source:
                loaded = json.loads(source.read())
        except (OSError, ValueError):
            return
        if isinstance(loaded, dict):
            self.entries = _Entries((k, v) for k, v in loaded.items() if isinstance(k, str) and isinstance(v, str))

    def keep_only_used(self) -> bool:
        """Drop the entries nobody looked up or set since this cache was read (files of deleted
        snapshots: a caller that looked at every snapshot's files calls it); whether any went."""
        used = getattr(self.entries, "used", None)
        if used is None or len(used) >= len(self.entries):
            return False
        kept = _Entries((k, v) for k, v in self.entries.items() if k in used)
        kept.used = set(used)
        self.entries = kept
        return True

    @staticmethod
    def key(st: Any) -> str:
        """The key of a file from its ``os.stat_result`` (or any object with its st_* fields)."""
        return VerifiedCache.key_of(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    @staticmethod
    def key_of(dev: int, ino: int, size: int, mtime_ns: int, ctime_ns: int) -> str:
        return f"{dev}:{ino}:{size}:{mtime_ns}:{ctime_ns}"

    def save(self) -> None:
        """Write the cache atomically under a temporary name of its own (``write_cache``):
        ``snapshots list`` and ``stats`` save it without the repository lock, beside a verify."""
        write_cache(self.path, self.entries)
