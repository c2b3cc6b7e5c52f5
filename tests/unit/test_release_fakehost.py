"""ReleaseComponent against a FakeHost: upload (the rsync and tar commands it runs, with a
scripted rsync and tar that really make the files), switch, rollback target, prune, release
states, and its part of a snapshot (snapshot, verify, restore target, restore with and without
dry run). Everything happens on the component's host; the snapshot folder is on the control
machine (tmp_path). The same behaviour against real rsync and real files is in
tests/integration/test_release.py."""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aura_ops.components.base import RestoreRequest, SnapshotTarget
from aura_ops.components.release import ReleaseComponent, ReleaseManifest
from aura_ops.config import ReleaseConfig
from aura_ops.errors import AuraError, CommandFailed, UsageError
from aura_ops.hosts import Result
from aura_ops.hosts.fake import Call, Entry, FakeHost, result
from aura_ops.repository import Snapshot

APP = "/srv/app"
RELEASES = f"{APP}/releases"
RSYNC = ["rsync", "-a", "--no-times", "--delete", "--checksum"]
RSYNC_OPTIONS = {"-a", "--no-times", "--delete", "--checksum"}


def _clock() -> Iterator[int]:
    now = 1_700_000_000_000_000_000
    while True:
        now += 1_000_000
        yield now


def rsync(call: Call) -> Result:
    """``rsync -a --no-times --delete --checksum [--link-dest=D] -- SOURCE/ TARGET/`` on the fake:
    TARGET becomes a copy of SOURCE (folder modes, file modes and content, symlinks); a file
    whose content and mode equal those of the same path under D is a hard link to it."""
    *options, separator, source, target = call.argv[1:]
    link_dest = next((o.split("=", 1)[1] for o in options if o.startswith("--link-dest=")), None)
    assert separator == "--" and source.endswith("/") and target.endswith("/")
    assert set(options) - {f"--link-dest={link_dest}"} == RSYNC_OPTIONS
    host, source, target = call.host, source.rstrip("/"), target.rstrip("/")
    host.mkdir(target, exist_ok=True)
    host.chmod(target, _mode(host, source))
    for relative, entry in host.tree(source).items():
        path = f"{target}/{relative}"
        if entry.kind == "dir":
            host.mkdir(path)
            host.chmod(path, entry.mode)
        elif entry.kind == "symlink":
            host.symlink(str(entry.content), path)
        elif link_dest is not None and _same(host, f"{link_dest}/{relative}", entry):
            host.link(f"{link_dest}/{relative}", path)
        else:
            assert isinstance(entry.content, bytes)
            host.write_atomic(path, entry.content, mode=entry.mode)
    return result()


def _mode(host: FakeHost, path: str) -> int:
    st = host.stat(path)
    assert st is not None
    return st.mode & 0o7777


def _same(host: FakeHost, path: str, entry: Entry) -> bool:
    st = host.stat(path, follow_symlinks=False)
    return st is not None and st.is_file and st.mode & 0o7777 == entry.mode and host.read_bytes(path) == entry.content


def tar(archives: dict[str, dict[str, bytes]]) -> Any:
    """``tar -x -f ARCHIVE -C FOLDER``: the files ``archives`` holds for ARCHIVE, made in FOLDER."""

    def extract(call: Call) -> Result:
        _tar, x, f, archive, c, folder = call.argv
        assert (x, f, c) == ("-x", "-f", "-C") and call.host.is_dir(folder)
        for relative, data in archives[archive].items():
            call.host.mkdir(posixpath.dirname(f"{folder}/{relative}"), parents=True, exist_ok=True)
            call.host.write_atomic(f"{folder}/{relative}", data, mode=0o644)
        return result()

    return extract


@pytest.fixture
def host() -> FakeHost:
    ticks = _clock()
    fake = FakeHost("app1", user_umask=0o027, clock=lambda: next(ticks))
    fake.add_dir(APP)
    fake.on("rsync", rsync)
    return fake


def _component(host: FakeHost, keep: int = 3) -> ReleaseComponent:
    return ReleaseComponent("app", ReleaseConfig(type="release", path=Path(APP), keep=keep), host)


@pytest.fixture
def release(host: FakeHost) -> ReleaseComponent:
    return _component(host)


def _installed(host: FakeHost, *versions: str, current: str | None = None) -> None:
    """Releases made by hand (each with app.py), ``current`` pointing at one."""
    for version in versions:
        host.add_file(f"{RELEASES}/{version}/app.py", f"print({version!r})\n")
    if current is not None:
        host.add_symlink(f"releases/{current}", f"{APP}/current")


def _write_states(host: FakeHost, states: dict[str, dict[str, Any]]) -> None:
    host.add_dir(f"{APP}/.aura", 0o700)
    host.write_atomic(f"{APP}/.aura/releases.json", json.dumps(states).encode(), mode=0o600)


def _deployed(day: int, state: str = "deployed") -> dict[str, Any]:
    return {"state": state, "deployed": f"2024-01-{day:02d}T00:00:00+00:00"}


# ------------------------------------------------------------------ upload


def test_a_first_upload_copies_the_folder_into_a_partial_release_then_renames_it(
    host: FakeHost, release: ReleaseComponent
) -> None:
    host.add_file("/build/v1/app.py", b"print('v1')\n", mode=0o640)
    host.add_file("/build/v1/bin/run", b"#!/bin/sh\n", mode=0o755)
    assert release.upload("v1", "/build/v1") == {"version": "v1", "path": f"{RELEASES}/v1"}
    assert host.argvs == [[*RSYNC, "--", "/build/v1/", f"{RELEASES}/v1.partial/"]]  # nothing to link against
    assert host.tree(RELEASES) == {
        "v1": Entry("dir", 0o755),
        "v1/app.py": Entry("file", 0o640, b"print('v1')\n"),
        "v1/bin": Entry("dir", 0o755),
        "v1/bin/run": Entry("file", 0o755, b"#!/bin/sh\n"),
    }
    assert _mode(host, RELEASES) == 0o750  # made with the invoking user's umask
    assert release.states()["v1"]["state"] == "deployed" and release.installed() == ["v1"]
    assert release.current() is None  # an upload never switches


def test_an_upload_links_unchanged_files_to_the_current_release(host: FakeHost, release: ReleaseComponent) -> None:
    _installed(host, "v1", current="v1")
    host.add_file(f"{RELEASES}/v1/lib.py", b"same\n")
    host.add_file("/build/v2/app.py", b"print('v2')\n")
    host.add_file("/build/v2/lib.py", b"same\n")
    release.upload("v2", "/build/v2")
    assert host.argvs == [[*RSYNC, f"--link-dest={RELEASES}/v1", "--", "/build/v2/", f"{RELEASES}/v2.partial/"]]
    old, new = host.stat(f"{RELEASES}/v1/lib.py"), host.stat(f"{RELEASES}/v2/lib.py")
    assert old is not None and new is not None and (new.ino, new.nlink) == (old.ino, 2)
    assert host.files(f"{RELEASES}/v2") == {"app.py": b"print('v2')\n", "lib.py": b"same\n"}
    assert host.read_bytes(f"{RELEASES}/v1/app.py") == b"print('v1')\n"


def test_a_tarball_is_unpacked_beside_the_releases_then_copied_like_a_folder(
    host: FakeHost, release: ReleaseComponent
) -> None:
    _installed(host, "v1", current="v1")
    host.add_file("/build/v2.tar.gz", b"\x1f\x8b archive")
    host.on("tar", tar({"/build/v2.tar.gz": {"app.py": b"print('v2')\n", "static/site.css": b"body{}"}}))
    seen: list[int] = []

    def watched(call: Call) -> Result:
        seen.append(_mode(call.host, call.argv[-2].rstrip("/")))
        return rsync(call)

    host.on("rsync", watched)
    release.upload("v2", "/build/v2.tar.gz")
    unpack = f"{RELEASES}/v2.unpack"
    assert host.argvs == [
        ["tar", "-x", "-f", "/build/v2.tar.gz", "-C", unpack],
        [*RSYNC, f"--link-dest={RELEASES}/v1", "--", f"{unpack}/", f"{RELEASES}/v2.partial/"],
    ]
    assert seen == [0o750]  # the unpacked folder, so the release, gets the user's umask
    assert host.files(f"{RELEASES}/v2") == {"app.py": b"print('v2')\n", "static/site.css": b"body{}"}
    assert host.listdir(RELEASES) == ["v1", "v2"]  # neither .unpack nor .partial is left


@pytest.mark.parametrize(
    ("version", "source", "message"),
    [
        ("v1", "/build/v1", "release v1 is the current release; it cannot be uploaded again"),
        ("v2", "/build/missing", "release source /build/missing does not exist"),
        ("v2", "/build/v2.zip", r"release source /build/v2.zip is neither a folder nor a tarball"),
        ("../v2", "/build/v1", "invalid release version '../v2'"),
        ("v2.partial", "/build/v1", "invalid release version 'v2.partial'"),
    ],
)
def test_an_upload_that_cannot_be_made_is_refused_before_anything_runs(
    host: FakeHost, release: ReleaseComponent, version: str, source: str, message: str
) -> None:
    _installed(host, "v1", current="v1")
    host.add_file("/build/v1/app.py", b"x")
    host.add_file("/build/v2.zip", b"PK")
    before = host.tree(APP)
    with pytest.raises(UsageError, match=message):
        release.upload(version, source)
    assert host.commands == [] and host.tree(APP) == before


def test_a_failed_copy_installs_nothing_and_the_next_upload_starts_clean(
    host: FakeHost, release: ReleaseComponent
) -> None:
    _installed(host, "v1", current="v1")
    host.add_file("/build/v2/app.py", b"print('v2')\n")

    def broken(call: Call) -> Result:
        call.host.add_file(f"{RELEASES}/v2.partial/half-copied", b"...")
        return result(returncode=23, stderr="rsync error: some files could not be transferred (code 23)\n")

    host.on("rsync", broken)
    with pytest.raises(CommandFailed, match="exited 23: rsync error"):
        release.upload("v2", "/build/v2")
    assert release.installed() == ["v1"] and not release.is_installed("v2") and "v2" not in release.states()
    host.on("rsync", rsync)
    release.upload("v2", "/build/v2")
    assert host.files(f"{RELEASES}/v2") == {"app.py": b"print('v2')\n"}  # the half copy was discarded
    assert host.listdir(RELEASES) == ["v1", "v2"]


def test_a_failed_unpack_leaves_no_unpacked_folder(host: FakeHost, release: ReleaseComponent) -> None:
    host.add_file("/build/v2.tgz", b"broken")
    host.on("tar", result(returncode=2, stderr="tar: Unexpected EOF in archive\n"))
    with pytest.raises(CommandFailed, match="Unexpected EOF"):
        release.upload("v2", "/build/v2.tgz")
    assert host.listdir(RELEASES) == [] and host.argvs[0][0] == "tar" and len(host.argvs) == 1


def test_uploading_an_installed_release_that_is_not_current_replaces_it(
    host: FakeHost, release: ReleaseComponent
) -> None:
    _installed(host, "v1", "v2", current="v1")
    host.add_file(f"{RELEASES}/v2/stale.py", b"old")
    host.add_file("/build/v2/app.py", b"print('v2 again')\n")
    release.upload("v2", "/build/v2")
    assert host.files(f"{RELEASES}/v2") == {"app.py": b"print('v2 again')\n"}


# ------------------------------------------------------------------ switch, current, remove


def test_switch_points_current_at_a_release_by_a_relative_link_and_returns_the_one_before(
    host: FakeHost, release: ReleaseComponent
) -> None:
    _installed(host, "v1", "v2", current="v1")
    assert release.switch("v2") == "v1"
    assert host.tree(APP)["current"] == Entry("symlink", 0o777, "releases/v2")
    assert sorted(host.listdir(APP)) == ["current", "releases"]  # the temporary link was renamed over
    assert release.current() == "v2" and release.switch("v1") == "v2"


def test_switch_refuses_a_release_that_is_not_installed_or_not_a_version(
    host: FakeHost, release: ReleaseComponent
) -> None:
    _installed(host, "v1", current="v1")
    host.add_dir(f"{RELEASES}/v2.partial")
    with pytest.raises(UsageError, match="release v3 is not installed"):
        release.switch("v3")
    with pytest.raises(UsageError, match="invalid release version"):
        release.switch("v2.partial")
    assert host.readlink(f"{APP}/current") == "releases/v1"


def test_current_is_none_without_a_link_and_unlink_current_removes_only_the_link(
    host: FakeHost, release: ReleaseComponent
) -> None:
    assert release.current() is None
    _installed(host, "v1", current="v1")
    release.unlink_current()
    assert release.current() is None and release.installed() == ["v1"]
    release.unlink_current()  # nothing there: nothing to do
    host.add_dir(f"{APP}/current")  # a folder, not a link: no current release
    assert release.current() is None


def test_remove_deletes_a_release_and_its_work_folders_but_never_the_current_one(
    host: FakeHost, release: ReleaseComponent
) -> None:
    _installed(host, "v1", "v2", current="v1")
    host.add_dir(f"{RELEASES}/v2.partial")
    host.add_dir(f"{RELEASES}/v2.unpack")
    release.remove("v2")
    release.remove("v1")
    release.remove("v9")  # never there
    assert host.listdir(RELEASES) == ["v1"] and release.current() == "v1"


# ------------------------------------------------------------------ installed, states, rollback target, prune


def test_installed_lists_complete_releases_in_the_order_they_were_deployed(
    host: FakeHost, release: ReleaseComponent
) -> None:
    _installed(host, "v9", "v10", "v11")
    host.add_dir(f"{RELEASES}/v12.partial")
    host.add_dir(f"{RELEASES}/v12.unpack")
    host.add_file(f"{RELEASES}/notes.txt", b"not a release")
    _write_states(host, {"v9": _deployed(1), "v10": _deployed(2)})  # v11 has no record: first, by name
    assert release.installed() == ["v11", "v9", "v10"]


def test_mark_records_each_state_with_its_time_in_a_private_file(host: FakeHost, release: ReleaseComponent) -> None:
    release.mark("v1", "deployed")
    release.mark("v1", "verified")
    release.mark("v2", "failed")
    states = release.states()
    assert states["v1"]["state"] == "verified" and set(states["v1"]) == {"state", "deployed", "verified"}
    assert states["v2"]["state"] == "failed"
    assert json.loads(host.read_text(f"{APP}/.aura/releases.json")) == states
    assert (host.tree(APP)[".aura"].mode, host.tree(APP)[".aura/releases.json"].mode) == (0o700, 0o600)
    with pytest.raises(UsageError, match="unknown release state 'live'"):
        release.mark("v1", "live")
    assert release.states() == states


def test_damaged_or_missing_states_read_as_none_recorded(host: FakeHost, release: ReleaseComponent) -> None:
    assert release.states() == {}
    host.add_file(f"{APP}/.aura/releases.json", b"{not json")
    assert release.states() == {}
    release.mark("v1", "deployed")
    assert list(release.states()) == ["v1"]


def test_the_rollback_target_is_the_newest_verified_release_that_is_not_current(
    host: FakeHost, release: ReleaseComponent
) -> None:
    _installed(host, "v1", "v2", "v3", "v4", current="v4")
    states = {"v1": _deployed(1, "verified"), "v2": _deployed(2, "verified"), "v3": _deployed(3, "failed")}
    states["v4"] = _deployed(4, "verified")
    _write_states(host, states)
    assert release.rollback_target() == "v2"
    release.switch("v2")
    assert release.rollback_target() == "v4"
    _write_states(host, {"v2": _deployed(2, "verified")})
    assert release.rollback_target() is None


def test_prune_deletes_the_oldest_beyond_keep_but_never_current_or_the_rollback_target(
    host: FakeHost, release: ReleaseComponent
) -> None:
    _installed(host, "v1", "v2", "v3", "v4", "v5", "v6", current="v6")
    states = {f"v{i}": _deployed(i) for i in range(1, 7)}
    states["v1"]["state"] = "verified"  # the oldest, yet where a rollback goes
    _write_states(host, states)
    assert release.prune() == ["v2", "v3", "v4"]  # six releases, keep three: v1 and v6 stay
    assert host.listdir(RELEASES) == ["v1", "v5", "v6"]
    assert release.prune() == []


def test_prune_keeps_what_it_is_asked_to_protect(host: FakeHost) -> None:
    release = _component(host, keep=2)
    _installed(host, "v1", "v2", "v3", "v4", current="v4")
    _write_states(host, {f"v{i}": _deployed(i) for i in range(1, 5)})
    assert release.prune(protect={"v1"}) == ["v2", "v3"]
    assert host.listdir(RELEASES) == ["v1", "v4"]


# ------------------------------------------------------------------ as a snapshot component


def _snapshot(tmp_path: Path, release: ReleaseComponent) -> Snapshot:
    """A snapshot holding the release's part, as the backup workflow seals it."""
    folder = tmp_path / "snap" / "app"
    folder.mkdir(parents=True)
    section = release.snapshot(SnapshotTarget("s1", folder))
    manifest = {"components": {"app": section.model_dump(by_alias=True)}}
    return Snapshot("s1", tmp_path / "snap", manifest)


def test_the_snapshot_records_the_current_release_installed_ones_and_states(
    host: FakeHost, release: ReleaseComponent, tmp_path: Path
) -> None:
    _installed(host, "v1", "v2", current="v1")
    _write_states(host, {"v1": _deployed(1, "verified"), "v2": _deployed(2, "failed")})
    folder = tmp_path / "app"
    folder.mkdir()
    section = release.snapshot(SnapshotTarget("s1", folder))
    assert isinstance(section, ReleaseManifest)
    assert (section.type, section.path, section.current) == ("release", APP, "v1")
    data = (folder / "release.json").read_bytes()
    assert json.loads(data) == {"current": "v1", "installed": ["v1", "v2"], "states": release.states()}
    artifact = section.artifacts["release.json"]
    assert (artifact.size, artifact.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert section.model_dump(by_alias=True)["artifacts"]["release.json"]["hash"] == artifact.sha256
    assert host.commands == []


def test_verify_says_whether_the_recorded_release_is_still_installed(
    host: FakeHost, release: ReleaseComponent, tmp_path: Path
) -> None:
    _installed(host, "v1", "v2", current="v1")
    snapshot = _snapshot(tmp_path, release)
    assert release.verify(snapshot, deep=False) == {"current": "v1", "still_installed": True}
    release.switch("v2")
    release.remove("v1")
    assert release.verify(snapshot, deep=True) == {"current": "v1", "still_installed": False}


def test_restore_target_says_whether_current_would_change(
    host: FakeHost, release: ReleaseComponent, tmp_path: Path
) -> None:
    _installed(host, "v1", "v2", current="v1")
    snapshot = _snapshot(tmp_path, release)
    target = release.restore_target(snapshot, RestoreRequest())
    assert target is not None
    assert (target.component, target.replaces, target.in_place) == ("app", False, True)
    assert target.description == f"{APP}/current on app1"
    release.switch("v2")
    target = release.restore_target(snapshot, RestoreRequest())
    assert target is not None and target.replaces and target.details == {"current": "v2", "switch_to": "v1"}


def test_a_dry_run_restore_changes_nothing_and_a_restore_switches_back(
    host: FakeHost, release: ReleaseComponent, tmp_path: Path
) -> None:
    _installed(host, "v1", "v2", current="v1")
    snapshot = _snapshot(tmp_path, release)
    release.switch("v2")
    before = host.tree(APP)
    planned = release.restore(snapshot, RestoreRequest(dry_run=True))
    assert planned == {"dry_run": True, "changes": [f"switch {APP}/current to v1 (now v2)"]}
    assert host.tree(APP) == before
    assert release.restore(snapshot, RestoreRequest()) == {"release": "v1", "previous": "v2"}
    assert host.readlink(f"{APP}/current") == "releases/v1"


def test_restoring_a_snapshot_taken_with_no_current_release_is_refused(
    host: FakeHost, release: ReleaseComponent, tmp_path: Path
) -> None:
    _installed(host, "v1")
    snapshot = _snapshot(tmp_path, release)
    release.switch("v1")
    with pytest.raises(AuraError, match="app: the snapshot recorded no current release"):
        release.restore(snapshot, RestoreRequest())
    with pytest.raises(AuraError, match="recorded no current release"):
        release.restore_target(snapshot, RestoreRequest(dry_run=True))
    assert host.readlink(f"{APP}/current") == "releases/v1"


def test_a_restore_to_a_release_that_is_gone_is_refused_and_changes_nothing(
    host: FakeHost, release: ReleaseComponent, tmp_path: Path
) -> None:
    _installed(host, "v1", "v2", current="v1")
    snapshot = _snapshot(tmp_path, release)
    release.switch("v2")
    release.remove("v1")
    with pytest.raises(UsageError, match="release v1 is not installed"):
        release.restore(snapshot, RestoreRequest())
    assert host.readlink(f"{APP}/current") == "releases/v2"


# ------------------------------------------------------------------ doctor and describe


def test_doctor_reports_the_release_folder(host: FakeHost, release: ReleaseComponent) -> None:
    _installed(host, "v1", "v2", current="v2")
    [check] = release.doctor()
    assert (check["ok"], check["detail"]) == (True, "current v2, 2 releases")
    assert check["check"] == f"app: release path {APP}" and check["exit_code"] == 2
    assert release.describe() == f"releases in {APP} on app1"


def test_doctor_fails_on_a_missing_or_unwritable_folder() -> None:
    user = FakeHost("app1", uid=1000, gid=1000)
    release = _component(user)
    [missing] = release.doctor()
    assert (missing["ok"], missing["detail"]) == (False, "missing or not writable")
    user.add_dir(APP, 0o755, owner=(0, 0))  # root's
    assert release.doctor()[0]["ok"] is False
    user.add_dir(APP, 0o755, owner=(1000, 1000))  # now the user's own
    assert release.doctor()[0]["ok"] is True
