from __future__ import annotations

from pathlib import Path

import pytest

from aura_ops.engine import playbook
from aura_ops.errors import ConfigError


def load_text(tmp_path: Path, text: str) -> playbook.Playbook:
    path = tmp_path / "book.yaml"
    path.write_text(text)
    return playbook.load(str(path))


def test_every_semantic_error_is_reported_at_once_with_step_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(
            tmp_path,
            """
name: broken
params: {version: "1"}
steps:
  - name: first
    action: teleport
  - name: second
    action: command
    with: {argv: ["echo", "{{ steps.third.stdout }}"], colour: blue}
  - name: third
    action: file
    with: {path: /tmp/x, content: "{{ steps.nowhere.x }} {{ params.missing }} {{ secret }}"}
  - name: fourth
    action: sql
    with: {sql: "select 1"}
  - name: third
    action: wait
    with: {argv: ["true"]}
""",
        )
    error = caught.value
    text = str(error)
    assert "book.yaml is invalid" in text
    problems = error.problems
    assert any(p.startswith("step 1 'first': unknown action 'teleport' (known: ") for p in problems)
    assert "step 2 'second': with.colour: unknown parameter of command" in problems
    assert any(
        p.startswith("step 2 'second': with.argv[1]: refers to step 'third', which does not run before it")
        for p in problems
    )
    assert "step 3 'third': with.content: refers to unknown step 'nowhere'" in problems
    assert "step 3 'third': with.content: refers to undeclared parameter 'missing'" in problems
    assert any("unknown name 'secret'" in p for p in problems)
    assert "step 4 'fourth': with.component: required by sql" in problems
    assert "step 'third': duplicate step name" in problems
    assert error.exit_code == 2


def test_a_step_that_refers_to_itself_is_a_cycle(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="refers to step 'loop', which does not run before it"):
        load_text(
            tmp_path,
            """
name: cyclic
steps:
  - name: loop
    action: command
    with: {argv: ["echo", "{{ steps.loop.stdout }}"]}
""",
        )


def test_structural_errors_name_the_step(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(
            tmp_path,
            """
name: structural
steps:
  - name: ok
    action: command
    with: {argv: [true]}
    retries: many
    on_failure: shrug
""",
        )
    problems = caught.value.problems
    assert any(p.startswith("step 1 'ok': retries:") for p in problems)
    assert any(p.startswith("step 1 'ok': on_failure:") for p in problems)


def test_malformed_yaml_and_unknown_playbook(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="malformed YAML at line"):
        load_text(tmp_path, "name: x\nsteps: [\n")
    with pytest.raises(ConfigError, match="not found"):
        playbook.load("no-such-playbook")


def test_parameters_resolve_with_defaults_and_refuse_unknown_ones(tmp_path: Path) -> None:
    book = load_text(
        tmp_path,
        """
name: params
params: {version: null, tag: nightly}
steps:
  - {name: s, action: command, with: {argv: ["echo", "{{ params.version }}"]}}
""",
    )
    assert book.resolve_params({"version": "3"}) == {"version": "3", "tag": "nightly"}
    with pytest.raises(ConfigError, match="required"):
        book.resolve_params({})
    with pytest.raises(ConfigError, match="unknown parameter"):
        book.resolve_params({"version": "1", "colour": "red"})


def test_templates_are_sandboxed() -> None:
    from jinja2.exceptions import SecurityError

    with pytest.raises(SecurityError):
        playbook.render("{{ params.__class__.__mro__[1].__subclasses__() }}", {"params": {}})


def test_the_shipped_backup_playbook_is_valid() -> None:
    book = playbook.load("backup")
    assert [s.action for s in book.steps] == ["snapshot"]
