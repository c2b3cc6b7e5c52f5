"""A restore of several components that fails at one after others were put in place says so."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from aura_ops.components import snapshotting
from aura_ops.errors import EXIT_FAILED, EXIT_VERIFY, AuraError, PartlyRestored, VerificationError


class _Component:
    def __init__(self, name: str, error: Exception | None = None) -> None:
        self.name = name
        self.host = SimpleNamespace(name="local")
        self.error = error
        self.restored = False

    def restore(self, snapshot: Any, request: Any) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        self.restored = True
        return {}


def _request(dry_run: bool = False) -> Any:
    return SimpleNamespace(dry_run=dry_run)


SNAPSHOT: Any = SimpleNamespace(id="20261201-120000-000")


def test_a_failure_after_a_restored_component_names_what_was_restored_and_how_to_finish() -> None:
    db, site, cache = _Component("db"), _Component("site", AuraError("no space left on device")), _Component("cache")
    with pytest.raises(PartlyRestored) as caught:
        snapshotting.restore(SNAPSHOT, [(db, _request()), (site, _request()), (cache, _request())])
    message = str(caught.value)
    assert db.restored and not cache.restored
    assert message.startswith("site was not restored: no space left on device; db already was restored")
    assert "site, cache are as before" in message
    assert f"aura-ops restore {SNAPSHOT.id} --component site --component cache" in message
    assert caught.value.exit_code == EXIT_FAILED
    assert "\n" not in message


def test_the_exit_code_is_the_failures_own_and_a_bug_is_exit_1() -> None:
    with pytest.raises(PartlyRestored) as caught:
        snapshotting.restore(
            SNAPSHOT, [(_Component("db"), _request()), (_Component("site", VerificationError("bad")), _request())]
        )
    assert caught.value.exit_code == EXIT_VERIFY
    with pytest.raises(PartlyRestored) as caught:
        snapshotting.restore(
            SNAPSHOT, [(_Component("db"), _request()), (_Component("site", KeyError("x")), _request())]
        )
    assert caught.value.exit_code == EXIT_FAILED


def test_a_failure_of_the_first_component_or_of_a_dry_run_is_raised_as_it_is() -> None:
    error = AuraError("refused")
    with pytest.raises(AuraError) as caught:
        snapshotting.restore(SNAPSHOT, [(_Component("db", error), _request()), (_Component("site"), _request())])
    assert caught.value is error
    with pytest.raises(AuraError) as caught:
        snapshotting.restore(
            SNAPSHOT, [(_Component("db"), _request(True)), (_Component("site", error), _request(True))]
        )
    assert caught.value is error


def test_an_os_error_of_a_restore_is_one_line_naming_the_component_and_paths_not_an_unexpected_error() -> None:
    refused = PermissionError(1, "Operation not permitted", "/srv/site.aura-staging-1", None, "/srv/site")
    with pytest.raises(AuraError) as caught:
        snapshotting.restore(SNAPSHOT, [(_Component("site", refused), _request())])
    assert type(caught.value) is AuraError and caught.value.__cause__ is refused
    assert str(caught.value) == "site: Operation not permitted: /srv/site.aura-staging-1 -> /srv/site"
    with pytest.raises(PartlyRestored) as partly:
        snapshotting.restore(SNAPSHOT, [(_Component("db"), _request()), (_Component("site", refused), _request())])
    assert str(partly.value).startswith(
        "site was not restored: site: Operation not permitted: /srv/site.aura-staging-1"
    )


def test_a_signal_after_a_restored_component_does_not_say_nothing_was_committed() -> None:
    """SIGTERM during the files restore after the database was swapped in said 'interrupted by
    SIGTERM; nothing was committed' (the database had been replaced); still an Interrupted."""
    from aura_ops.errors import Interrupted

    stopped = Interrupted("interrupted by SIGTERM; nothing was committed")
    with pytest.raises(Interrupted) as caught:
        snapshotting.restore(SNAPSHOT, [(_Component("db"), _request()), (_Component("site", stopped), _request())])
    message = str(caught.value)
    assert message.startswith("site was not restored: interrupted by SIGTERM; db already was restored")
    assert "nothing was committed" not in message and f"restore {SNAPSHOT.id} --component site" in message
    with pytest.raises(Interrupted) as caught:  # the first one: nothing was restored, said as before
        snapshotting.restore(SNAPSHOT, [(_Component("db", stopped), _request()), (_Component("site"), _request())])
    assert str(caught.value) == "interrupted by SIGTERM; nothing was committed"
