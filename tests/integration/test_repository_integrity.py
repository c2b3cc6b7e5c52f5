"""Nothing unverified is ever restored: stored trees, indexes and manifests are checked as they
are used; a damaged snapshot is reported and the others go on; a files restore is all or nothing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Aura, base_config, require, require_tool
from tests.integration.test_files import describe, make_tree


@pytest.fixture(name="tree")
def _tree(tmp_path: Path, aura: Aura) -> Path:
    """test_files' tree (content, modes, links, xattrs, an ACL, excluded entries) as a component."""
    require_tool("rsync")
    require_tool("setfacl")
    root = tmp_path / "site"
    root.mkdir()
    make_tree(root)
    aura.write_config(base_config({"site": {"type": "files", "path": str(root), "exclude": ["cache/", "*.tmp"]}}))
    return root


def _stored(aura: Aura, snapshot: str) -> Path:
    return aura.repo / "snapshots" / snapshot / "site" / "tree"


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    mode = path.stat().st_mode
    os.chmod(path, 0o600)
    path.write_bytes(bytes(data))
    os.chmod(path, mode)


@pytest.mark.parametrize("damage", ["changed", "missing", "symlink-to-outside"])
def test_a_bad_file_in_the_stored_tree_stops_the_restore_before_the_target_is_touched(
    tree: Path, aura: Aura, tmp_path: Path, damage: str
) -> None:
    snapshot = aura.json("backup")["id"]
    victim = _stored(aura, snapshot) / "docs" / "deep" / "b.bin"
    if damage == "changed":
        _flip(victim)
    elif damage == "missing":
        victim.unlink()
    else:
        secret = tmp_path / "secret"
        secret.write_bytes(b"s" * victim.stat().st_size)
        victim.unlink()
        victim.symlink_to(secret)
    (tree / "docs" / "deep" / "b.bin").write_bytes(b"the restore needs the snapshot's copy of this file")
    (tree / "script.sh").write_text("written after the snapshot")
    (tree / "added-later").write_text("also")
    before = describe(tree)

    result = aura("restore", snapshot, "--yes", check=3)
    assert "docs/deep/b.bin" in result.stderr
    assert describe(tree) == before
    result = aura("restore", snapshot, "--to-path", str(tmp_path / "copy"), check=3)
    assert not (tmp_path / "copy").exists()
    assert [p.name for p in tmp_path.iterdir() if ".aura-" in p.name] == []  # no staging left


def test_a_file_slipped_into_the_stored_tree_is_reported_and_never_restored(
    tree: Path, aura: Aura, tmp_path: Path
) -> None:
    snapshot = aura.json("backup")["id"]
    (_stored(aura, snapshot) / "docs" / "evil.sh").write_text("#!/bin/sh\nrm -rf /\n")
    (_stored(aura, snapshot) / "evil-dir").mkdir()
    report = aura.json("restore", snapshot, "--to-path", str(tmp_path / "copy"))
    assert not (tmp_path / "copy" / "docs" / "evil.sh").exists()
    assert not (tmp_path / "copy" / "evil-dir").exists()
    assert describe(tmp_path / "copy") == describe(tree)
    assert set(report["components"]["site"]["not_in_index"]) == {"docs/evil.sh", "evil-dir"}

    result = aura("restore", snapshot, "--yes")
    assert "evil.sh" in result.stderr
    assert not (tree / "docs" / "evil.sh").exists()


def test_an_edited_manifest_fails_verify_and_restore_with_exit_3(tree: Path, aura: Aura, tmp_path: Path) -> None:
    snapshot = aura.json("backup")["id"]
    manifest_path = aura.repo / "snapshots" / snapshot / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["tags"] = ["edited"]
    manifest_path.write_text(json.dumps(manifest))
    for args in (("snapshots", "verify", snapshot), ("restore", snapshot, "--to-path", str(tmp_path / "c"))):
        result = aura(*args, check=3)
        assert f"manifest of snapshot {snapshot} changed" in result.stderr
    assert not (tmp_path / "c").exists()


def test_verify_reports_every_problem_at_once(tree: Path, aura: Aura) -> None:
    snapshot = aura.json("backup")["id"]
    stored = _stored(aura, snapshot)
    _flip(stored / "docs" / "deep" / "b.bin")
    (stored / "script.sh").unlink()
    (stored / "slipped-in.txt").write_text("x")
    os.chmod(stored / "docs" / "deep" / "deeper" / "c.txt", 0o666)
    (stored / "link-to-a").unlink()
    (stored / "link-to-a").symlink_to("/etc/shadow")
    (stored / "docs" / "new-link").symlink_to("/etc/passwd")

    result = aura("snapshots", "verify", snapshot, "--json", check=3)
    report = json.loads(result.stdout)
    assert report["ok"] is False
    problems = "\n".join(report["problems"])
    for expected in (
        "docs/deep/b.bin: content changed",
        "script.sh: missing",
        "slipped-in.txt: not in the index",
        "docs/deep/deeper/c.txt: mode",
        "link-to-a: symlink changed",
        "docs/new-link: not in the index",
    ):
        assert expected in problems, problems
    assert "6 problems" in result.stderr

    # an index entry removed (its file stays): the index's checksum fails and the file is unlisted
    index = aura.repo / "snapshots" / snapshot / "site" / "index.jsonl"
    lines = index.read_bytes().splitlines(keepends=True)
    index.write_bytes(
        b"".join(line for line in lines if b'"p":"script.sh"' not in line and b'"p":"dangling"' not in line)
    )
    report = json.loads(aura("snapshots", "verify", snapshot, "--json", check=3).stdout)
    problems = "\n".join(report["problems"])
    assert "index.jsonl: checksum mismatch" in problems
    assert "dangling: not in the index" in problems
    assert "script.sh" not in problems  # no longer listed, and not in the tree either


def test_a_damaged_snapshot_is_listed_as_such_and_the_others_back_up_list_and_restore(
    tree: Path, aura: Aura, tmp_path: Path
) -> None:
    first = aura.json("backup")["id"]
    second = aura.json("backup")["id"]
    third = aura.json("backup")["id"]
    (aura.repo / "snapshots" / third / "manifest.json").write_text('{"id": "broken')
    index = aura.repo / "snapshots" / second / "site" / "index.jsonl"
    lines = index.read_bytes().splitlines(keepends=True)
    index.write_bytes(b"".join(lines[:2]) + b"{not json\n" + b"".join(lines[3:]))

    listed = {s["id"]: s for s in aura.json("snapshots", "list")["snapshots"]}
    assert set(listed) == {first, second, third}
    assert listed[first]["damaged"] is None
    assert "manifest" in listed[third]["damaged"]
    assert "index" in listed[second]["damaged"]
    assert "DAMAGED" in aura("snapshots", "list").stdout
    aura("snapshots", "verify", third, check=3)
    aura("snapshots", "verify", second, check=3)

    (tree / "docs" / "a.txt").write_text("after the damage")
    fourth = aura.json("backup")
    assert fourth["components"]["site"]["previous"] == first  # the damaged ones are skipped
    aura("snapshots", "verify", fourth["id"])
    aura("restore", first, "--to-path", str(tmp_path / "copy"))
    aura("doctor", check=None)  # runs; a damaged snapshot does not break it
    assert "unexpected" not in aura("doctor", check=None).stderr


def _view(root: Path) -> dict[str, object]:
    """The tree as describe() sees it, without the folder kept only for an excluded file."""
    return {k: v for k, v in describe(root).items() if k != "later"}


FAULT_POINTS = ["staged", "excluded-moved", "swapped", "old-partly-removed"]


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_a_restore_killed_at_any_point_of_the_swap_leaves_the_old_or_the_new_tree_and_the_next_command_finishes(
    tree: Path, aura: Aura, point: str
) -> None:
    new = _view(tree)
    snapshot = aura.json("backup")["id"]
    (tree / "docs" / "a.txt").write_text("edited after the snapshot")
    (tree / "later").mkdir()
    (tree / "later" / "keep.tmp").write_text("excluded, under a folder the snapshot lacks")
    (tree / "later" / "gone.txt").write_text("not excluded")
    old = _view(tree)

    result = aura("restore", snapshot, "--yes", env={"AURA_FAULT": f"files-restore:{point}"}, check=None)
    assert result.returncode == 137, result.stderr[-2000:]
    parent = tree.parent
    state = _view(tree)
    assert state in (old, new), point
    if state == new:
        assert point in ("swapped", "old-partly-removed")
    doctor = aura.json("doctor", check=None)
    assert any("dir_swap" in check["check"] for check in doctor["checks"])

    aura("snapshots", "delete", snapshot, "--yes")  # any command that takes the lock finishes or reverts it
    assert _view(tree) == (new if point in ("swapped", "old-partly-removed") else old)
    assert (tree / "cache" / "junk.tmp").read_text() == "excluded"
    assert (tree / "later" / "keep.tmp").read_text() == "excluded, under a folder the snapshot lacks"
    assert [p.name for p in parent.iterdir() if ".aura-" in p.name] == []
    assert not any("dir_swap" in c["check"] for c in aura.json("doctor", check=None)["checks"])


def test_a_restore_that_runs_out_of_space_leaves_the_target_as_it_was(aura: Aura, tmp_path: Path) -> None:
    require(os.geteuid() == 0, "root (to mount a small tmpfs)")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        site = small / "site"
        site.mkdir()
        for index in range(3):
            (site / f"big{index}.bin").write_bytes(os.urandom(200_000))
        aura.write_config(base_config({"site": {"type": "files", "path": str(site)}}))
        snapshot = aura.json("backup")["id"]
        for index in range(3):
            (site / f"big{index}.bin").write_bytes(os.urandom(200_000))  # every file changed
        before = describe(site)
        result = aura("restore", snapshot, "--yes", check=1)
        assert "no space left" in result.stderr.lower()
        assert describe(site) == before
        assert sorted(p.name for p in small.iterdir()) == ["site"]
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_a_restore_into_a_mount_point_is_verified_first_then_applied_in_place(
    tree: Path, aura: Aura, tmp_path: Path
) -> None:
    require(os.geteuid() == 0, "root (to mount a tmpfs)")
    snapshot = aura.json("backup")["id"]
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mounted)], check=True)
    try:
        (mounted / "old.txt").write_text("replaced")
        report = aura.json("restore", snapshot, "--to-path", str(mounted), "--yes")["components"]["site"]
        assert report["method"] == "in_place"
        assert "mount point" in report["note"]
        assert describe(mounted) == describe(tree)
        _flip(_stored(aura, snapshot) / "docs" / "deep" / "b.bin")
        (mounted / "docs" / "a.txt").write_text("edited")
        before = describe(mounted)
        aura("restore", snapshot, "--to-path", str(mounted), "--yes", check=3)
        assert describe(mounted) == before
    finally:
        subprocess.run(["umount", str(mounted)], check=True)


def test_verify_reports_what_lies_in_a_snapshot_folder_without_being_in_its_manifest(
    tmp_path: Path, aura: Aura
) -> None:
    """A file beside a files component's tree and index, and a folder beside the components, are
    in no manifest: verify names both (exit 3)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.txt").write_text("a")
    aura.write_config(base_config({"site": {"type": "files", "path": str(site)}}))
    snapshot = aura.json("backup")["id"]
    assert aura.json("snapshots", "verify", snapshot)["ok"]
    folder = aura.repo / "snapshots" / snapshot
    (folder / "site" / "notes.txt").write_text("slipped in")
    (folder / "other").mkdir()

    result = aura("snapshots", "verify", snapshot, check=3)

    assert "site: notes.txt: in the component folder but not in the manifest" in result.stdout
    assert "other: in the snapshot folder but not in the manifest" in result.stdout


@pytest.mark.parametrize("bad", ["files", "db"])
def test_a_bad_artifact_of_any_component_stops_a_restore_of_several_before_any_target_is_touched(
    pg: Any, database: str, aura: Aura, tmp_path: Path, bad: str
) -> None:
    """A snapshot of a database and a tree, restored together: each component checked its own
    artifacts as it used them, so a changed stored file of the tree was found only once the
    database (restored first) had been replaced: the database from the snapshot, the files from
    now. Every component after the first is checked in full before any target is touched."""
    import psycopg

    from tests.conftest import db_component
    from tests.pgdata import fingerprint

    site = tmp_path / "site"
    site.mkdir()
    (site / "a.txt").write_text("as in the snapshot\n")
    (site / "b.txt").write_text("unchanged\n")
    dsn = pg.dsn(database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 1000)")
    aura.env["AURA_DB_DSN"] = dsn
    # components are restored in the order of their names: the damaged one comes second
    db_name = "db" if bad == "files" else "warehouse"
    aura.write_config(base_config({db_name: db_component(), "site": {"type": "files", "path": str(site)}}))
    snapshot = aura.json("backup")["id"]
    order = list(json.loads((aura.repo / "snapshots" / snapshot / "manifest.json").read_text())["components"])
    assert order == ([db_name, "site"] if bad == "files" else ["site", db_name])
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM t WHERE n > 500")
    (site / "a.txt").write_text("written after the snapshot\n")
    database_now, files_now = fingerprint(dsn), describe(site)
    if bad == "files":
        _flip(_stored(aura, snapshot) / "a.txt")
        named = "a.txt"
    else:
        dump = aura.repo / "snapshots" / snapshot / db_name / "dump"
        data = max(dump.glob("*.dat.zst"), key=lambda p: p.stat().st_size)
        _flip(data)
        named = f"dump/{data.name}"

    result = aura("restore", snapshot, "--yes", check=3)
    assert named in result.stderr
    assert fingerprint(dsn) == database_now
    assert describe(site) == files_now


@pytest.mark.skipif(os.geteuid() != 0, reason="chattr +i needs root")
def test_a_later_component_failing_after_an_earlier_one_was_restored_says_what_is_where(
    pg: Any, database: str, aura: Aura, tmp_path: Path
) -> None:
    """What the checks before the first target cannot foresee (here: the tree made immutable, so
    the swap's rename of it is refused) fails the second
    component after the first was restored. Each stays whole, and the one error line says which
    was restored, which was not and why, and the command that finishes the restore."""
    import psycopg

    from tests.conftest import db_component
    from tests.pgdata import fingerprint

    require_tool("chattr")
    parent = tmp_path / "www"
    site = parent / "site"
    site.mkdir(parents=True)
    (site / "a.txt").write_text("as in the snapshot\n")
    dsn = pg.dsn(database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 1000)")
    aura.env["AURA_DB_DSN"] = dsn
    aura.write_config(base_config({"db": db_component(), "site": {"type": "files", "path": str(site)}}))
    snapshot = aura.json("backup")["id"]
    database_then = fingerprint(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM t WHERE n > 500")
    (site / "a.txt").write_text("written after the snapshot\n")
    files_now = describe(site)

    subprocess.run(["chattr", "+i", str(site)], check=True)
    try:
        result = aura("restore", snapshot, "--yes", check=1)
        assert describe(site) == files_now  # the tree is whole, as it was
        assert sorted(p.name for p in parent.iterdir()) == ["site"]  # no staging folder left
    finally:
        subprocess.run(["chattr", "-i", str(site)], check=True)
    line = result.stderr.strip().splitlines()[-1]
    assert "site was not restored" in line and "db already was restored" in line, result.stderr
    assert f"aura-ops restore {snapshot} --component site" in line
    assert fingerprint(dsn) == database_then  # the database is whole, from the snapshot
    aura("restore", snapshot, "--component", "site", "--yes")
    assert (site / "a.txt").read_text() == "as in the snapshot\n"


def test_to_database_without_component_restores_only_the_database_and_leaves_the_tree_alone(
    pg: Any, database: str, aura: Aura, tmp_path: Path
) -> None:
    """`restore ID --to-database scratch --yes` on a snapshot of a database and a tree: the user
    asked for a copy of the database to look at; the tree (changed since) is not restored in
    place by the same command. `--to-path` alike for the tree; `--component` still names exactly."""
    import psycopg

    from tests.conftest import db_component
    from tests.pgdata import fingerprint

    site = tmp_path / "site"
    site.mkdir()
    (site / "a.txt").write_text("as in the snapshot\n")
    dsn = pg.dsn(database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 100)")
    aura.env["AURA_DB_DSN"] = dsn
    aura.write_config(base_config({"db": db_component(), "site": {"type": "files", "path": str(site)}}))
    snapshot = aura.json("backup")["id"]
    database_then = fingerprint(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM t WHERE n > 50")
    (site / "a.txt").write_text("written after the snapshot\n")
    database_now, files_now = fingerprint(dsn), describe(site)
    scratch = f"{database}_scratch"

    report = aura.json("restore", snapshot, "--to-database", scratch, "--yes")
    assert list(report["components"]) == ["db"]
    assert describe(site) == files_now and fingerprint(dsn) == database_now
    assert fingerprint(pg.dsn(scratch)) == database_then

    copy = tmp_path / "copy"
    report = aura.json("restore", snapshot, "--to-path", str(copy), "--yes")
    assert list(report["components"]) == ["site"]
    assert (copy / "a.txt").read_text() == "as in the snapshot\n"
    assert describe(site) == files_now and fingerprint(dsn) == database_now

    report = aura.json(
        "restore", snapshot, "--to-path", str(tmp_path / "copy2"), "--component", "site", "--component", "db", "--yes"
    )
    assert sorted(report["components"]) == ["db", "site"]
    assert fingerprint(dsn) == database_then and describe(site) == files_now
