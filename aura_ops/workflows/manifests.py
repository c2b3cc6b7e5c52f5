"""What a snapshot's component section must hold: the ``validate`` hook the workflows hand the
repository, which knows no component. Each section is checked by its type's manifest model
(``components.manifest_model``); a section of an unknown type, or one its model refuses, marks the
snapshot damaged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from aura_ops.components import REGISTRY, manifest_model

if TYPE_CHECKING:
    from aura_ops.components.base import ComponentManifest

# TRANSITIONAL: the keys each type's section must hold, used only while that type's component
# class (and so its manifest model) is not written yet. Remove once every type has its model.
_ARTIFACTS = ("artifacts", dict)
REQUIRED: dict[str, tuple[tuple[str, type], ...]] = {
    "files": (_ARTIFACTS, ("source", str), ("file_count", int), ("bytes", int), ("copied_bytes", int)),
    "postgres": (_ARTIFACTS, ("database", str)),
    "release": (_ARTIFACTS, ("path", str)),
    "docker": (_ARTIFACTS, ("containers", list)),
}


def section_problem(name: str, section: dict[str, Any]) -> str | None:
    """What makes component ``name``'s manifest section unusable, or None (a ``SectionCheck``)."""
    kind = section.get("type")
    if not isinstance(kind, str) or kind not in REGISTRY:
        return f"component {name} has an unknown type {kind!r}"
    model = _model(kind)
    if model is None:
        return _required_problem(name, kind, section)
    try:
        model.model_validate(section)
    except ValidationError as exc:
        return _describe(name, exc)
    return None


def _model(kind: str) -> type[ComponentManifest] | None:
    try:
        return manifest_model(kind)
    except AttributeError:  # TRANSITIONAL: the type's component class is not written yet
        return None


def _describe(name: str, error: ValidationError) -> str:
    """The first problem a model found, in the words the repository has always used."""
    first = error.errors()[0]
    where = [str(part) for part in first["loc"]]
    if len(where) > 1 and where[0] == "artifacts":
        return f"component {name}: artifact {where[1]} has no size or hash"
    return f"component {name} lacks {'.'.join(where) or 'a field'} (or it is not valid: {first['msg']})"


def _required_problem(name: str, kind: str, section: dict[str, Any]) -> str | None:
    for key, expected in REQUIRED[kind]:
        if not isinstance(section.get(key), expected) or isinstance(section.get(key), bool):
            return f"component {name} lacks {key} (or it is not a {expected.__name__})"
    for artifact, info in section["artifacts"].items():
        if not (isinstance(info, dict) and isinstance(info.get("size"), int) and isinstance(info.get("hash"), str)):
            return f"component {name}: artifact {artifact} has no size or hash"
    return None
