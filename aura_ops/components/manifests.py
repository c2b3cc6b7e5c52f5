"""What a snapshot's component section must hold: the ``validate`` hook handed to the
repository, which knows no component (``snapshotting.repository`` opens one with it). Each
section is checked by its type's manifest model (``components.manifest_model``); a section of an
unknown type, or one its model refuses, marks the snapshot damaged.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from aura_ops.components import REGISTRY, manifest_model


def section_problem(name: str, section: dict[str, Any]) -> str | None:
    """What makes component ``name``'s manifest section unusable, or None (a ``SectionCheck``)."""
    kind = section.get("type")
    if not isinstance(kind, str) or kind not in REGISTRY:
        return f"component {name} has an unknown type {kind!r}"
    try:
        manifest_model(kind).model_validate(section)
    except ValidationError as exc:
        return _describe(name, exc)
    return None


def _describe(name: str, error: ValidationError) -> str:
    """The first problem a model found, in the words the repository has always used."""
    first = error.errors()[0]
    where = [str(part) for part in first["loc"]]
    if len(where) > 1 and where[0] == "artifacts":
        return f"component {name}: artifact {where[1]} has no size or hash"
    return f"component {name} lacks {'.'.join(where) or 'a field'} (or it is not valid: {first['msg']})"
