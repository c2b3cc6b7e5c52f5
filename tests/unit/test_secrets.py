"""Masking works on whole values of any length, and every secret the configuration names is
registered when it is loaded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aura_ops import config, secrets


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    saved = secrets.registered()
    secrets.forget()
    yield
    secrets.forget()
    for value in saved:
        secrets.register(value)


def test_a_short_secret_is_masked_but_never_inside_a_longer_word() -> None:
    secrets.register("abc")
    assert secrets.mask("abcdef abc xabc abc.") == "abcdef *** xabc ***."
    assert secrets.mask("user=app:abc@db") == "user=app:***@db"


def test_a_two_letter_and_a_one_letter_secret_are_masked_as_whole_words() -> None:
    secrets.register("pw")
    secrets.register("Q")
    assert secrets.mask("the pw is pw, not pwd; Q or QQ") == "the *** is ***, not pwd; *** or QQ"


def test_a_secret_with_symbols_at_its_edges_is_masked_wherever_it_stands() -> None:
    secrets.register("$ecret!")
    secrets.register("-x-")
    assert secrets.mask("a$ecret!b and a-x-b") == "a***b and a***b"


def test_the_longest_secret_wins_when_one_contains_another() -> None:
    secrets.register("pass")
    secrets.register("pass word")
    assert secrets.mask("pass word, pass") == "***, ***"


def test_credential_shapes_are_still_masked() -> None:
    text = "postgresql://app:urlsecret@db/app password=kv token: t0k PGPASSWORD=env"
    assert secrets.mask(text) == "postgresql://app:***@db/app password=*** token: *** PGPASSWORD=***"


def test_mask_values_masks_every_string_in_nested_data_and_keeps_the_rest() -> None:
    secrets.register("hunter2")
    data = {"a": ["x hunter2", 3, None], "b": {"c": "hunter2"}, "hunter2": True}
    assert secrets.mask_values(data) == {"a": ["x ***", 3, None], "b": {"c": "***"}, "***": True}


def _config(tmp_path: Path, component: dict[str, object]) -> config.Config:
    return config.parse({"repository": {"path": "repo"}, "components": {"db": component}}, tmp_path / "aura.yaml")


def test_secrets_named_by_the_configuration_are_registered_when_it_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-the-file\nsecond line\n")
    monkeypatch.setenv("T_DSN", "postgresql://app:url%2Fpass@127.0.0.1:5432/app")
    monkeypatch.setenv("T_PASSWORD", "from-the-env")
    _config(tmp_path, {"type": "postgres", "dsn_env": "T_DSN", "password_env": "T_PASSWORD"})
    _config(tmp_path, {"type": "postgres", "dsn": "postgresql://app@127.0.0.1/app", "password_file": str(secret_file)})
    text = "from-the-env from-the-file url/pass url%2Fpass second"
    assert secrets.mask(text) == "*** *** *** *** second"


def test_a_dsn_in_conninfo_form_registers_its_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_DSN", "host=127.0.0.1 dbname=app user=app password='pa ss'")
    _config(tmp_path, {"type": "postgres", "dsn_env": "T_DSN"})
    assert secrets.mask("it was pa ss") == "it was ***"


def test_a_missing_secret_at_load_time_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("T_MISSING", raising=False)
    loaded = _config(
        tmp_path,
        {"type": "postgres", "dsn_env": "T_MISSING", "password_file": str(tmp_path / "nowhere")},
    )
    assert loaded.components["db"].type == "postgres"
    assert secrets.registered() == set()
