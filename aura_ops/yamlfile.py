"""YAML files read within limits: configs and playbooks come from users, and sometimes from
attackers. A file larger than ``MAX_BYTES``, nested deeper than ``MAX_DEPTH`` or holding more than
``MAX_VALUES`` values once its aliases are expanded (a "billion laughs") is refused with a
ConfigError (exit 2) before any Python object is built from it, so memory and time stay bounded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from aura_ops.errors import ConfigError

MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_VALUES = 100_000


class _Refused(Exception):
    pass


class _Loader(yaml.SafeLoader):
    """The safe loader, with the composer's recursion bounded (it recurses once per level)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def read_capped(path: Path) -> bytes:
    """The file's bytes; ConfigError when it is larger than MAX_BYTES (read no further: it
    may be /dev/zero). OSError as raised."""
    with open(path, "rb") as stream:
        data = stream.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_BYTES // 1024} KiB; refused")
    return data


def _count(root: yaml.Node) -> int:
    """Values in the document with every alias expanded; _Refused past MAX_VALUES, past
    MAX_DEPTH levels (aliases included) or on a recursive alias. Each node is measured once
    (aliases share nodes), so this is linear in the file's size."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, levels) below and with it
    open_nodes: set[int] = set()

    def measure(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in open_nodes:
            raise _Refused("an alias refers to a node that contains it")
        if key not in measured:
            if depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep (aliases included)")
            open_nodes.add(key)
            children: list[yaml.Node] = []
            if isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            elif isinstance(node, yaml.MappingNode):
                children = [part for pair in node.value for part in pair]
                _refuse_duplicate_keys(node)
            values, levels = 1, 1
            for child in children:
                child_values, child_levels = measure(child, depth + 1)
                values += child_values
                levels = max(levels, child_levels + 1)
                if values > MAX_VALUES:
                    raise _Refused(f"more than {MAX_VALUES} values once its aliases are expanded")
            open_nodes.discard(key)
            measured[key] = (values, levels)
        values, levels = measured[key]
        if depth + levels - 1 > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep (aliases included)")
        return values, levels

    return measure(root, 1)[0]


def _refuse_duplicate_keys(node: yaml.MappingNode) -> None:
    """A key given twice in one mapping (say two ``db:`` components): YAML keeps the last one
    silently, so the config used would not be the one the user reads."""
    seen: set[str] = set()
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
            if key.value in seen:
                raise _Refused(f"key {key.value!r} is given twice in one mapping (line {key.start_mark.line + 1})")
            seen.add(key.value)


def parse(data: bytes, where: str) -> Any:
    """The one YAML document in ``data``; ConfigError naming ``where`` when it is not UTF-8,
    malformed, or beyond the limits."""
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_BYTES // 1024} KiB; refused")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _count(node)
        return loader.construct_document(node)
    except _Refused as exc:
        raise ConfigError(f"{where}: {exc}; refused") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigError(f"{where}: malformed YAML{at}: {problem}") from None
    except (ValueError, OverflowError, RecursionError) as exc:
        # a scalar the constructor cannot build: a 5000-digit integer, the 45th of a 13th month
        raise ConfigError(f"{where}: a value cannot be read: {str(exc).splitlines()[0][:200]}") from None
    finally:
        loader.dispose()
