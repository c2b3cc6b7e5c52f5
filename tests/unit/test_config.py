from __future__ import annotations

from pathlib import Path

import pytest

from aura_ops import config
from aura_ops.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "aura.yaml"
    path.write_text(text)
    return path


def test_every_problem_is_reported_at_once_with_its_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
repository: {path: repo}
components:
  db: {type: postgres, dsn_env: X, jobs: many, colour: blue}
  up: {type: files}
  odd: {type: mongo}
""",
    )
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    problems = caught.value.problems
    assert "At 'components.db.jobs': Input should be a valid integer, unable to parse string as an integer" in problems
    assert "At 'components.db.colour': unknown key" in problems
    assert "At 'components.up.path': Field required" in problems
    assert any(p.startswith("At 'components.odd'") and "mongo" in p for p in problems)
    assert caught.value.exit_code == 2


def test_malformed_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "repository: {path: repo\ncomponents: [\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+, column \d+"):
        config.load(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.yaml")


def test_password_in_dsn_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
repository: {path: repo}
components:
  db: {type: postgres, dsn: "postgresql://app:hunter22@db/app"}
""",
    )
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert "hunter22" not in str(caught.value)
    assert "At 'components.db.dsn'" in str(caught.value)


def test_cross_checks_unknown_host_and_missing_dsn(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
repository: {path: repo}
components:
  db: {type: postgres, host: nowhere}
""",
    )
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert "At 'components.db.host': unknown host 'nowhere'" in caught.value.problems
    assert "At 'components.db': one of dsn_env or dsn is required" in caught.value.problems


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
repository: {path: repo}
components:
  up: {type: files, path: ../srv/uploads}
""",
    )
    loaded = config.load(path)
    assert loaded.repository.path == tmp_path / "repo"
    assert loaded.component("up").path == tmp_path / "../srv/uploads"  # type: ignore[union-attr]
    assert loaded.logging.dir == tmp_path / "logs"


def test_env_variable_chooses_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "repository: {path: elsewhere}\n")
    monkeypatch.setenv("AURA_CONFIG", str(path))
    assert config.load().repository.path == tmp_path / "elsewhere"


def test_checks_and_deploy_settings_are_validated(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
repository: {path: repo}
components:
  db: {type: postgres, dsn_env: X}
deploy: {fast_rollback: sometimes, fast_rollback_wait: -1}
checks:
  - {type: container, component: db}
  - {type: ping}
""",
    )
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    problems = caught.value.problems
    assert any(p.startswith("At 'deploy.fast_rollback':") and "'auto', 'required' or 'off'" in p for p in problems)
    assert any(p.startswith("At 'deploy.fast_rollback_wait':") for p in problems)
    assert "At 'checks.1': unknown type 'ping'; expected http, tcp, command, sql or container" in problems
    path.write_text(path.read_text().replace("fast_rollback: sometimes, fast_rollback_wait: -1", "fast_rollback: off"))
    path.write_text(path.read_text().replace("  - {type: ping}\n", ""))
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert caught.value.problems == ["At 'checks.0.component': no docker component 'db'"]
