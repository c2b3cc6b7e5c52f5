"""README.md is true to the program: every command and flag the CLI has is in the README's command
table with nothing the CLI lacks, every config key (and playbook key, and action parameter) is in
its table with its default, and the README's example files load.

The lists are taken from the program itself (click's commands and params, the pydantic models),
so a flag or key added without a README line, or a README line left after a flag or key is
removed, fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
from pydantic import BaseModel

from aura_ops import config as config_module
from aura_ops.cli import cli
from aura_ops.engine import playbook as playbook_module
from aura_ops.engine.actions import REGISTRY

README = Path(__file__).resolve().parents[2] / "README.md"
TEXT = README.read_text(encoding="utf-8")
LINES = TEXT.splitlines()


def _section(title: str) -> list[str]:
    """The lines of the ``## title`` section (up to the next ``## `` heading)."""
    start = next(i for i, line in enumerate(LINES) if line.startswith("## ") and line[3:].startswith(title))
    end = next((i for i in range(start + 1, len(LINES)) if LINES[i].startswith("## ")), len(LINES))
    return LINES[start:end]


def _cells(row: str) -> list[str]:
    """A markdown table row's cells (a ``\\|`` inside a cell does not split it)."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def _code(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def _options_in(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", text))


# ---------------------------------------------------------------- commands and flags


def _commands() -> dict[tuple[str, ...], click.Command]:
    found: dict[tuple[str, ...], click.Command] = {}

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        found[path] = command
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, (*path, name))

    walk(cli, ())
    return found


COMMANDS = _commands()
LEAVES = {path: command for path, command in COMMANDS.items() if not isinstance(command, click.Group)}


def _common_names() -> set[str]:
    """The params every command has (``--config``, ``--json``, ``-v``): those of every leaf."""
    names = [{param.name for param in command.params} for command in LEAVES.values()]
    return set.intersection(*names)


def _common_options() -> set[str]:
    """What every command takes (the common params), what the bare ``aura-ops`` takes too
    (``--version``), and the help option."""
    options = {opt for param in cli.params if isinstance(param, click.Option) for opt in param.opts}
    return options | set(cli.context_settings["help_option_names"])


def _own_options(command: click.Command) -> set[str]:
    common = _common_names()
    return {
        opt
        for param in command.params
        if isinstance(param, click.Option) and param.name not in common
        for opt in param.opts + param.secondary_opts
    }


def _synopses() -> dict[tuple[str, ...], str]:
    """Each command of the README's command table (``aura-ops X ...``) and its synopsis, joined
    when a command appears in more than one code span."""
    synopses: dict[tuple[str, ...], str] = {}
    for line in _section("Commands"):
        if not line.startswith("| `aura-ops"):
            continue
        for span in _code(_cells(line)[0]):
            words = span.removeprefix("aura-ops ").split()
            path = tuple(w for w in _leading_words(words))
            synopses[path] = synopses.get(path, "") + " " + span
    return synopses


def _leading_words(words: list[str]) -> list[str]:
    out = []
    for word in words:
        if not re.fullmatch(r"[a-z]+", word):
            break
        out.append(word)
    return out


def test_every_command_is_in_the_readme_command_table_and_nothing_else_is() -> None:
    synopses = _synopses()
    assert set(synopses) == set(LEAVES), (
        f"missing from README: {sorted(set(LEAVES) - set(synopses))}; "
        f"in README but not a command: {sorted(set(synopses) - set(LEAVES))}"
    )


@pytest.mark.parametrize("path", sorted(LEAVES), ids=lambda p: " ".join(p))
def test_each_command_row_names_exactly_the_flags_and_arguments_the_command_has(path: tuple[str, ...]) -> None:
    command = LEAVES[path]
    synopsis = _synopses()[path]
    assert _options_in(synopsis) == _own_options(command), synopsis
    for param in command.params:
        if isinstance(param, click.Argument):
            assert param.metavar in synopsis.split(), (param.metavar, synopsis)


def test_the_options_every_command_takes_are_named_before_the_table() -> None:
    paragraph = " ".join(_section("Commands")[1:8])
    named = {option for span in _code(paragraph) for option in _options_in(span)}
    assert _common_options() <= named, sorted(_common_options() - named)


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "aura-ops")
def test_each_command_explains_every_flag_and_its_exit_codes_in_its_help(path: tuple[str, ...]) -> None:
    command = COMMANDS[path]
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "version":
            assert (param.help or "").strip(), f"{' '.join(path)} {param.opts[0]}: no help text"
    # the help option names as the real command line has them (click caches a command's help option)
    names = cli.context_settings["help_option_names"]
    with click.Context(command, info_name=" ".join(("aura-ops", *path)), help_option_names=names) as ctx:
        assert "Exit codes:" in command.get_help(ctx), f"{' '.join(path)} --help does not list the exit codes"


# ---------------------------------------------------------------- configuration keys


def _default_text(value: Any) -> str | None:
    """How the README writes a field's default, or None when it has no plain default to show."""
    if value is None or isinstance(value, list | dict | tuple | BaseModel):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _fields(model: type[BaseModel], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Each field of ``model`` and its default as the README writes it (None: required or no
    plain default)."""
    return {
        name: (None if field.is_required() else _default_text(field.get_default(call_default_factory=True)))
        for name, field in model.model_fields.items()
        if name not in skip
    }


def _config_rows() -> list[str]:
    section = _section("Configuration")
    start = next(i for i, line in enumerate(section) if line.startswith("| key |"))
    rows = []
    for line in section[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def _row(first_cell_test: Any, rows: list[str] | None = None, what: str = "") -> str:
    matches = [row for row in (rows if rows is not None else _config_rows()) if first_cell_test(_cells(row)[0])]
    assert matches, f"{what}: no row in the README's table"
    return " ".join(matches)


# keys whose default the README gives in words rather than as the value
DEFAULT_IN_WORDS = {
    ("postgres", "jobs"): "cores",  # None: the machine's cores
    ("postgres", "host"): None,
}
COMPONENT_MODELS = {
    "postgres": config_module.PostgresConfig,
    "files": config_module.FilesConfig,
    "release": config_module.ReleaseConfig,
    "docker": config_module.DockerConfig,
}
SECTION_MODELS = {
    "repository": config_module.RepositoryConfig,
    "logging": config_module.LoggingConfig,
    "state": config_module.StateConfig,
    "deploy": config_module.DeployConfig,
}


def test_every_top_level_key_has_a_row() -> None:
    first_cells = " ".join(_cells(row)[0] for row in _config_rows())
    for key in config_module.Config.model_fields:
        if key == "source":  # set by the loader (the file's path), not read from the file
            continue
        assert f"`{key}" in first_cells, f"{key}: no row in README's configuration table"


@pytest.mark.parametrize("section", sorted(SECTION_MODELS))
def test_every_key_of_a_section_has_a_row_with_its_default(section: str) -> None:
    for key, default in _fields(SECTION_MODELS[section]).items():
        row = _row(lambda cell, key=key: f"`{section}.{key}`" in cell, what=f"{section}.{key}")
        if default is not None:
            assert default in _cells(row)[1], f"{section}.{key}: README does not give its default {default!r}"


@pytest.mark.parametrize("kind", sorted(COMPONENT_MODELS))
def test_every_component_key_has_a_row_with_its_default(kind: str) -> None:
    for key, default in _fields(COMPONENT_MODELS[kind], skip=("type", "host")).items():
        row = _row(lambda cell, key=key: cell.startswith(f"{kind} ") and f"`{key}`" in cell, what=f"{kind} {key}")
        expected = DEFAULT_IN_WORDS.get((kind, key), default)
        if expected is not None:
            assert expected in row, f"{kind} {key}: README does not give its default {expected!r}"
    assert _row(lambda cell: cell == "`*.type`").count(f"`{kind}`") == 1
    assert "`local`" in _row(lambda cell: cell == "`*.host`")


def test_the_rows_name_only_keys_that_exist() -> None:
    """The reverse: a key the README's table names is one the configuration accepts."""
    top = set(config_module.Config.model_fields)
    for row in _config_rows():
        cell = _cells(row)[0]
        kind = cell.split()[0]
        for key in _code(cell):
            if kind in COMPONENT_MODELS:
                assert key in COMPONENT_MODELS[kind].model_fields, f"{kind} {key}: no such key"
            elif key.startswith("*."):
                assert all(key[2:] in model.model_fields for model in COMPONENT_MODELS.values()), key
            elif "." in key:
                section, name = key.split(".", 1)
                if name.isupper():  # hosts.NAME, components.NAME
                    assert section in top, key
                else:
                    assert name in SECTION_MODELS[section].model_fields, f"{key}: no such key"
            else:
                assert key in top, f"{key}: no such key"


def test_hosts_and_retention_rows_name_every_key() -> None:
    hosts = _row(lambda cell: cell == "`hosts.NAME`")
    for key in _fields(config_module.HostConfig):
        assert f"`{key}`" in hosts or f"`{key}:" in hosts, f"hosts: {key}"
    retention = _row(lambda cell: cell == "`retention`")
    for key, default in _fields(config_module.RetentionConfig).items():
        assert f"`{key}" in retention, f"retention: {key}"
        if key in ("timezone", "auto"):
            assert default in retention, f"retention.{key}: default {default!r}"


def test_every_check_key_is_in_the_checks_table_with_its_default() -> None:
    section = _section("Configuration")
    start = next(i for i, line in enumerate(section) if line.startswith("| type | keys |"))
    rows = [line for line in section[start + 2 :] if line.startswith("|")][: len(config_module.CHECK_TYPES)]
    common = set(config_module._Check.model_fields)
    paragraph = " ".join(section[: start + 1] + section[start + 2 + len(rows) : start + 2 + len(rows) + 3])
    for key, default in _fields(config_module._Check).items():
        assert f"`{key}`" in paragraph, f"checks: {key}"
        if default is not None and default != "0":
            assert f"default {default}" in paragraph, f"checks: {key} default {default!r}"
    models = {
        model.model_fields["type"].annotation.__args__[0]: model
        for model in (
            config_module.HttpCheck,
            config_module.TcpCheck,
            config_module.CommandCheck,
            config_module.SqlCheck,
            config_module.ContainerCheck,
        )
    }
    assert sorted(models) == sorted(config_module.CHECK_TYPES)
    for kind, model in models.items():
        row = _row(lambda cell, kind=kind: cell == f"`{kind}`", rows)
        keys = _cells(row)[1]
        own = {k: d for k, d in _fields(model, skip=("type",)).items() if k not in common}
        assert set(_code(keys)) == set(own), f"check {kind}: README {sorted(_code(keys))}, model {sorted(own)}"
        for key, default in own.items():
            if default is not None and key != "containers":
                assert re.search(rf"`{key}`[^`|]*\({re.escape(default)}\)", keys), f"check {kind}.{key}: ({default})"


# ---------------------------------------------------------------- playbooks


def test_every_playbook_and_step_key_is_named() -> None:
    section = " ".join(_section("Playbooks and runs"))
    for key in playbook_module.Playbook.model_fields:
        if key != "source":  # set by the loader
            assert f"`{key}" in section or f"{key}:" in section, f"playbook key {key}"
    step = next(line for line in _section("Playbooks and runs") if line.startswith("A step: "))
    step_text = " ".join(_section("Playbooks and runs")[_section("Playbooks and runs").index(step) :][:12])
    for key, default in _fields(playbook_module.Step).items():
        name = "with" if key == "with_" else key
        assert f"`{name}`" in step_text, f"step key {name}"
        if default is not None and name in ("retries", "delay", "verify", "on_failure"):
            assert default in step_text, f"step key {name}: default {default!r}"


def test_the_action_table_names_every_action_with_exactly_its_parameters() -> None:
    section = _section("Playbooks and runs")
    start = next(i for i, line in enumerate(section) if line.startswith("| action |"))
    documented: dict[str, set[str]] = {}
    for line in section[start + 2 :]:
        if not line.startswith("|"):
            break
        names, parameters = _cells(line)[:2]
        for name in _code(names):
            documented[name] = {p for p in _code(parameters) if p not in ("health", "smoke")}
    assert set(documented) == set(REGISTRY)
    for name, action in REGISTRY.items():
        params = getattr(action, "Params", None)
        assert documented[name] == set(params.model_fields if params else ()), name


# ---------------------------------------------------------------- the README's example files


def _yaml_blocks(title: str) -> list[str]:
    blocks, current = [], None
    for line in _section(title):
        if line.startswith("```yaml"):
            current = []
        elif line.startswith("```") and current is not None:
            blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


@pytest.mark.parametrize("title", ["Configuration", "Deploy and rollback"])
def test_the_example_configurations_load(title: str, tmp_path: Path) -> None:
    from aura_ops import yamlfile

    blocks = _yaml_blocks(title)
    assert blocks
    for block in blocks:
        data = yamlfile.parse(block.encode(), "README")
        data.setdefault("repository", {"path": str(tmp_path / "repo")})
        config_module.parse(data, tmp_path / "aura.yaml")


def test_the_example_playbooks_load(tmp_path: Path) -> None:
    blocks = _yaml_blocks("Playbooks and runs")
    assert len(blocks) >= 2
    for index, block in enumerate(blocks):
        path = tmp_path / f"example{index}.yaml"
        path.write_text(block)
        playbook_module.load(str(path))


# ---------------------------------------------------------------- what a command prints first


def test_a_restore_of_a_component_the_snapshot_lacks_announces_nothing(tmp_path: Path) -> None:
    """README: a command that changes something first prints what it is about to change. A
    restore naming a component the snapshot lacks changes nothing: exit 2 naming it, and no
    'restoring snapshot ...:' line naming nothing (it printed one with an empty target list)."""
    import os
    import subprocess
    import sys

    import yaml

    import aura_ops

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a").write_text("a\n")
    config = {
        "repository": {"path": "repo"},
        "components": {"stuff": {"type": "files", "path": str(tmp_path / "data")}},
    }
    (tmp_path / "aura.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AURA_")}
    env["PYTHONPATH"] = str(Path(aura_ops.__file__).parents[1])

    def cli_run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "aura_ops", "-c", str(tmp_path / "aura.yaml"), *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    assert cli_run("backup").returncode == 0
    done = cli_run("restore", "latest", "--component", "nope", "--yes")
    assert done.returncode == 2
    assert "has no component 'nope' (it has: stuff)" in done.stderr
    assert "restoring snapshot" not in done.stderr
    assert (tmp_path / "data" / "a").read_text() == "a\n"


def test_the_exit_code_table_and_help_list_exactly_the_program_s_codes() -> None:
    from aura_ops import errors

    codes = {value for name, value in vars(errors).items() if name.startswith("EXIT_") and isinstance(value, int)}
    table = {int(_cells(line)[0]) for line in _section("Exit codes") if re.match(r"^\| \d+ \|", line)}
    in_help = {int(m) for m in re.findall(r"^  (\d+)  ", errors.EXIT_CODES_HELP, re.MULTILINE)}
    assert table == codes == in_help, (table, codes, in_help)


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "aura-ops")
def test_h_and_help_both_show_a_command_s_help(path: tuple[str, ...]) -> None:
    """README: `-h` / `--help` shows a command's options and the exit codes."""
    from click.testing import CliRunner

    for flag in ("-h", "--help"):
        result = CliRunner().invoke(cli, [*path, flag], prog_name="aura-ops")
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"Usage: {' '.join(('aura-ops', *path))} ") and "Exit codes:" in result.output


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_runs_list_limit_is_at_least_one(limit: str) -> None:
    """README: `runs list --limit N` shows at most N runs. 0 printed "no runs yet" whatever the
    journal held, and -1 printed every run (SQLite's LIMIT -1): both are usage errors now."""
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["runs", "list", "--limit", limit], prog_name="aura-ops")
    assert result.exit_code == 2 and "--limit" in result.output, result.output
