"""Secrets never leak: a password-protected role's password and secret playbook parameters are
masked in step output, console and file logs, --json, the journal, `runs show` and errors."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from aura_ops.dev.sandbox import PostgresCluster
from tests.conftest import Aura, base_config


def journal_text(aura: Aura) -> str:
    """Everything the journal holds, as SQL text."""
    db = sqlite3.connect(aura.root / "state" / "journal.db")
    try:
        return "\n".join(db.iterdump())
    finally:
        db.close()


def leaks(secret: str, text: str) -> list[str]:
    """Occurrences of ``secret`` in ``text``; a short secret inside a longer word is not one."""
    if len(secret) >= 8:
        return [secret] * text.count(secret)
    return re.findall(rf"(?<!\w){re.escape(secret)}(?!\w)", text)


@pytest.fixture
def role(pg: PostgresCluster, database: str, request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """A password-protected login role that owns a table in the test's database."""
    name = f"aura_pw_{database}"
    password = request.param
    pg.sql(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")
    pg.sql(f'GRANT ALL ON DATABASE "{database}" TO "{name}"')
    with psycopg.connect(pg.dsn(database), autocommit=True) as conn:
        conn.execute(f'CREATE TABLE items (id int); ALTER TABLE items OWNER TO "{name}"')
    yield name, password
    pg.sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    pg.sql(f'DROP ROLE IF EXISTS "{name}"')


def _book(aura: Aura, steps: list[dict[str, Any]], **top: Any) -> Path:
    path = aura.root / "book.yaml"
    path.write_text(yaml.safe_dump({"name": "book", **top, "steps": steps}, sort_keys=False))
    return path


@pytest.mark.parametrize("role", ["S3cr3t-Pa55w0rd-engine", "Zq"], indirect=True, ids=["long", "two-letters"])
def test_a_database_password_never_reaches_output_logs_json_journal_or_errors(
    pg: PostgresCluster, database: str, aura: Aura, role: tuple[str, str]
) -> None:
    user, password = role
    aura.env["DB_PASSWORD"] = password
    aura.write_config(
        base_config(
            {
                "db": {
                    "type": "postgres",
                    "dsn": f"postgresql://{user}@127.0.0.1:{pg.port}/{database}",
                    "password_env": "DB_PASSWORD",
                }
            }
        )
    )
    book = _book(
        aura,
        [
            # the first step resolves no connection: the secret must be known before it runs
            {
                "name": "echo",
                "action": "command",
                "with": {"argv": ["sh", "-c", 'echo "pw $DB_PASSWORD; Zqueue stays"']},
            },
            {"name": "query", "action": "sql", "with": {"component": "db", "sql": "SELECT current_user"}},
            {
                "name": "fails",
                "action": "command",
                "with": {"argv": ["sh", "-c", 'echo "bad $DB_PASSWORD" >&2; exit 3']},
            },
        ],
    )
    run = aura("run", str(book), "--json", "-v", check=1)
    outcome = json.loads(run.stdout)
    steps = {s["name"]: s for s in outcome["steps"]}
    assert steps["echo"]["status"] == "compensated"
    assert steps["echo"]["outputs"]["stdout"] == "pw ***; Zqueue stays"
    assert steps["query"]["outputs"]["rows"] == [[user]]
    assert steps["fails"]["error"].endswith("exited 3: bad ***")
    run_id = outcome["run"]["id"]
    texts = {
        "run --json": run.stdout,
        "run stderr": run.stderr,
        "runs show": aura("runs", "show", run_id).stdout,
        "runs show --json": aura("runs", "show", run_id, "--json").stdout,
        "runs list --json": aura("runs", "list", "--json").stdout,
        "log files": aura.log_text(),
        "journal": journal_text(aura),
    }
    for where, text in texts.items():
        assert not leaks(password, text), where
    assert "bad ***" in run.stderr


def test_secret_playbook_parameters_are_masked_and_never_stored(pg: PostgresCluster, database: str, aura: Aura) -> None:
    token = "tok-9f8e7d6c"
    aura.env["AURA_DB_DSN"] = pg.dsn(database)
    aura.write_config(base_config({"db": {"type": "postgres", "dsn_env": "AURA_DB_DSN"}}))
    conf = aura.root / "app.conf"
    steps = [
        {"name": "config", "action": "file", "with": {"path": str(conf), "content": "token={{ params.token }}\n"}},
        {"name": "echo", "action": "command", "with": {"argv": ["echo", "using {{ params.token }}"]}},
        {"name": "query", "action": "sql", "with": {"component": "db", "sql": "SELECT '{{ params.token }}' AS t"}},
        {"name": "cast", "action": "sql", "with": {"component": "db", "sql": "SELECT '{{ params.token }}'::int"}},
    ]
    book = _book(aura, steps, params={"token": None, "where": "here"}, secrets=["token"])
    failed = aura("run", str(book), "-e", f"token={token}", "--json", check=1)
    outcome = json.loads(failed.stdout)
    found = {s["name"]: s for s in outcome["steps"]}
    assert found["echo"]["outputs"]["stdout"] == "using ***"
    assert found["query"]["outputs"]["rows"] == [["***"]]
    assert "invalid input syntax for type integer" in found["cast"]["error"] and "***" in found["cast"]["error"]
    assert outcome["run"]["params"] == {"token": "***", "where": "here"}
    assert not conf.exists()

    # crash, then resume: the secret is not in the journal, so it must be given again
    book = _book(aura, steps[:3], params={"token": None, "where": "here"}, secrets=["token"])
    aura("run", str(book), "-e", f"token={token}", check=137, env={"AURA_FAULT": "echo:after"})
    run_id = aura.json("runs", "list")["runs"][0]["id"]
    refused = aura("runs", "resume", run_id, check=2)
    assert "token" in refused.stderr and "-e token=" in refused.stderr
    resumed = aura("runs", "resume", run_id, "-e", f"token={token}", "--json")
    assert json.loads(resumed.stdout)["run"]["status"] == "succeeded"
    assert conf.read_text() == f"token={token}\n"  # the real value reaches the step itself

    texts = [failed.stdout, failed.stderr, refused.stderr, resumed.stdout, resumed.stderr]
    texts += [aura.log_text(), journal_text(aura), aura("runs", "show", run_id, "--json").stdout]
    for text in texts:
        assert token not in text
    raw = b"".join(p.read_bytes() for p in (aura.root / "state").glob("journal.db*"))
    assert token.encode() not in raw


def test_a_secret_parameter_must_be_declared_and_cannot_have_a_default(aura: Aura, tmp_path: Path) -> None:
    aura.write_config(base_config({}))
    step = {"name": "echo", "action": "command", "with": {"argv": ["echo", "{{ params.token }}"]}}
    book = _book(aura, [step], params={"token": "in-the-file"}, secrets=["token", "other"])
    result = aura("run", str(book), check=2)
    assert "secrets: 'other' is not a declared parameter" in result.stderr
    assert "secrets: 'token' must not have a default" in result.stderr
    assert "in-the-file" not in result.stderr


def test_a_parameter_written_as_secret_true_is_refused_before_its_value_can_leak(aura: Aura) -> None:
    """``params: {pw: {secret: true}}`` looks like a declaration but is a default value: the
    -e value would run unmasked. Refused (exit 2) before anything runs, pointing to ``secrets:``."""
    aura.write_config(base_config({}))
    made = aura.root / "made"
    steps = [
        {"name": "echo", "action": "command", "with": {"argv": ["sh", "-c", f"echo {{{{ params.pw }}}}; touch {made}"]}}
    ]
    book = _book(aura, steps, params={"pw": {"secret": True}})
    for command in ("run", "plan"):
        result = aura(command, str(book), "-e", "pw=zebra-horse-7", "--json", check=2)
        assert "secrets: [pw]" in result.stderr, result.stderr
        assert "zebra-horse-7" not in result.stdout + result.stderr + aura.log_text()
    assert not made.exists()
    assert aura.json("runs", "list")["runs"] == []
