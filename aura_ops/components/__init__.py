"""Components: things aura-ops can snapshot, verify and restore.

Each component module implements the same few functions (``snapshot``, ``verify``,
``restore``, ``doctor``); this literal registry maps a config ``type`` to its module.
"""

from __future__ import annotations

from types import ModuleType

from aura_ops.components import containers, files, postgres, release

REGISTRY: dict[str, ModuleType] = {
    "postgres": postgres,
    "files": files,
    "release": release,
    "docker": containers,
}
