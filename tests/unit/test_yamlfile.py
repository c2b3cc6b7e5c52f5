"""YAML within limits: hostile documents are refused before any Python object is built."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aura_ops import yamlfile
from aura_ops.errors import ConfigError


def laughs(levels: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


def refused(text: str | bytes, match: str) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError, match=match) as caught:
        yamlfile.parse(text.encode() if isinstance(text, str) else text, "test.yaml")
    assert caught.value.exit_code == 2
    assert time.monotonic() - started < 20  # no expansion took place (generous: a shared, slow machine)


def test_a_billion_laughs_is_refused_before_it_expands() -> None:
    refused(laughs(9), "more than 100000 values once its aliases are expanded")


def test_a_modest_use_of_aliases_is_read_as_before() -> None:
    data = yamlfile.parse(
        b"base: &base {jobs: 2, tags: [a, b]}\ndb: {<<: *base, jobs: 4}\nup: *base\nsmall: &s [1, 2]\nmore: [*s, *s]\n",
        "ok.yaml",
    )
    assert data["db"] == {"jobs": 4, "tags": ["a", "b"]} and data["up"]["jobs"] == 2
    assert data["more"] == [[1, 2], [1, 2]]


def test_deep_nesting_is_refused_without_exhausting_the_stack() -> None:
    refused("x: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested more than 64 levels deep")
    refused("x: " + "{a: " * 70 + "1" + "}" * 70 + "\n", "nested more than 64 levels deep")


def test_a_chain_of_aliases_cannot_nest_deeper_than_the_limit() -> None:
    lines = ["a0: &a0 [x]"] + [f"a{n}: &a{n} [*a{n - 1}]" for n in range(1, 5000)]
    refused("\n".join(lines) + "\n", "nested more than 64 levels deep")


def test_a_recursive_alias_is_refused() -> None:
    refused("a: &a [1, *a]\n", "an alias refers to a node that contains it")


def test_a_document_larger_than_the_cap_is_refused_and_a_device_is_not_read_to_its_end(tmp_path: Path) -> None:
    refused(b"x: " + b"y" * (yamlfile.MAX_BYTES + 10), "larger than 1024 KiB")
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        yamlfile.read_capped(Path("/dev/zero"))
    small = tmp_path / "small.yaml"
    small.write_text("a: 1\n")
    assert yamlfile.parse(yamlfile.read_capped(small), str(small)) == {"a": 1}


def test_bytes_that_are_not_utf8_are_a_config_error() -> None:
    refused(b"a: caf\xe9\n", "not UTF-8 text")


@pytest.mark.parametrize(
    "text",
    ["a: " + "9" * 5000 + "\n", "when: 2024-13-45\n"],
    ids=["5000-digit integer", "impossible date"],
)
def test_a_scalar_that_cannot_be_built_is_a_config_error(text: str) -> None:
    refused(text, "a value cannot be read")


def test_malformed_yaml_names_line_and_column() -> None:
    refused("a: [1, 2\nb: }\n", r"malformed YAML at line \d+, column \d+")


def test_an_empty_document_is_none() -> None:
    assert yamlfile.parse(b"", "empty.yaml") is None
    assert yamlfile.parse(b"# only a comment\n", "empty.yaml") is None


def test_a_key_given_twice_in_one_mapping_is_refused_naming_it() -> None:
    text = b"components:\n  db: {type: files, path: /srv/a}\n  db: {type: files, path: /srv/b}\n"
    with pytest.raises(ConfigError, match="'db' is given twice"):
        yamlfile.parse(text, "aura.yaml")


def test_a_merge_key_is_not_a_duplicate() -> None:
    text = b"base: &b {jobs: 2}\nother:\n  <<: *b\n  jobs: 3\n"
    assert yamlfile.parse(text, "aura.yaml")["other"]["jobs"] == 3
