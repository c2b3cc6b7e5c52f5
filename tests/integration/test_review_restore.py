"""Adversarial review of issue 9's restore and verify paths: reproductions of problems found.

Each test states the guarantee README's Safety section makes and fails on the merged code
(review1 branch, commit 05760ba). Real PostgreSQL, real files, the real CLI as a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from aura_ops.dev.sandbox import PostgresCluster
from tests.conftest import Aura, base_config, db_component, require


@pytest.fixture(name="site")
def _site(tmp_path: Path, aura: Aura) -> Path:
    root = tmp_path / "site"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("hello\n")
    (root / "sub" / "b.txt").write_text("world\n")
    aura.write_config(base_config({"site": {"type": "files", "path": str(root)}}))
    return root


def _only_snapshot(aura: Aura) -> str:
    return str(aura.json("snapshots", "list")["snapshots"][-1]["id"])


def _reseal(aura: Aura, snapshot: str, component: str) -> None:
    """Rewrite the manifest's index checksum and the manifest's own checksum file to match what
    the snapshot folder now holds (what anyone with write access to the repository can do)."""
    folder = aura.repo / "snapshots" / snapshot
    index = folder / component / "index.jsonl"
    manifest = json.loads((folder / "manifest.json").read_text())
    artifact = manifest["components"][component]["artifacts"]["index.jsonl"]
    artifact["hash"] = hashlib.sha256(index.read_bytes()).hexdigest()
    artifact["size"] = index.stat().st_size
    raw = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (folder / "manifest.json").write_bytes(raw)
    (aura.repo / "snapshots" / f"{snapshot}.sha256").write_text(hashlib.sha256(raw).hexdigest() + "  manifest.json\n")


# ---------------------------------------------------------------- files: never outside the target


def test_an_index_entry_below_a_symlink_entry_is_never_written_outside_the_target(
    site: Path, aura: Aura, tmp_path: Path
) -> None:
    """README: "A files restore writes only what the snapshot's index lists" and "A restore
    removes nothing outside its one target folder". An index (resealed consistently) holding a
    symlink `evil` -> an outside folder and a hard-link entry `evil/planted` makes the restore
    create /outside/planted: the stager writes `<staging>/evil/planted`, following the symlink it
    has just created. Every name's parents must be folders of the index, never symlinks."""
    aura("backup")
    snapshot = _only_snapshot(aura)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "own.txt").write_text("not the restore's")
    folder = aura.repo / "snapshots" / snapshot / "site"
    index = folder / "index.jsonl"
    first = json.loads(index.read_bytes().splitlines()[0])
    link = {"p": "evil", "m": 0o120777, "u": 0, "g": 0, "mt": first["mt"], "t": "l", "l": str(outside)}
    hard = {"p": "evil/planted", "m": first["m"], "u": 0, "g": 0, "mt": first["mt"], "t": "h", "l": first["p"]}
    with index.open("ab") as out:
        out.write((json.dumps(link) + "\n").encode() + (json.dumps(hard) + "\n").encode())
    os.symlink(outside, folder / "tree" / "evil")
    _reseal(aura, snapshot, "site")

    aura("restore", snapshot, "--to-path", str(tmp_path / "restored"), check=None)

    assert sorted(p.name for p in outside.iterdir()) == ["own.txt"], "the restore wrote outside its target"


def test_an_in_place_restore_through_a_source_that_became_a_symlink_is_not_sent_to_a_refused_folder(
    site: Path, aura: Aura, tmp_path: Path
) -> None:
    """README: `--to-path` is refused at your home folder (and `/etc`, `/usr`, ...). The same
    folder is replaced when the configured source has meanwhile become a symlink to it: the in-place
    restore resolves the source and skips the system-folder rules (targets.check(to_path=False)),
    while the first line still names the configured path. Here HOME stands for a refused folder."""
    aura("backup")
    snapshot = _only_snapshot(aura)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("precious")
    env = {"HOME": str(home)}

    refused = aura("restore", snapshot, "--to-path", str(home), "--yes", env=env, check=2)
    assert "system folder" in refused.stderr
    assert (home / ".bashrc").read_text() == "precious"

    shutil.rmtree(site)
    site.symlink_to(home)  # the configured source now leads to the refused folder
    aura("restore", snapshot, "--yes", env=env, check=None)

    assert (home / ".bashrc").exists(), "an in-place restore replaced a folder that --to-path refuses"


# ---------------------------------------------------------------- exit codes


def test_a_snapshot_whose_stored_tree_is_gone_fails_the_restore_with_exit_3_naming_it(
    site: Path, aura: Aura, tmp_path: Path
) -> None:
    """README: "A missing or changed file ... stops the restore before the target is touched:
    exit 3, naming the file". With the whole stored tree gone, `verify` says `tree: missing`
    (exit 3) but the restore (and its --dry-run) crash: files_restore.not_in_index scans a folder
    that does not exist (unexpected FileNotFoundError, exit 1, traceback)."""
    aura("backup")
    snapshot = _only_snapshot(aura)
    shutil.rmtree(aura.repo / "snapshots" / snapshot / "site" / "tree")

    assert "tree: missing" in aura("snapshots", "verify", snapshot, check=3).stdout
    dry = aura("restore", snapshot, "--to-path", str(tmp_path / "out"), "--dry-run", check=None)
    real = aura("restore", snapshot, "--to-path", str(tmp_path / "out"), check=None)

    for result in (dry, real):
        assert result.returncode == 3, result.stderr[-500:]
        assert "unexpected" not in result.stderr


def test_a_verified_files_cache_that_is_not_an_object_does_not_break_list_and_verify(site: Path, aura: Aura) -> None:
    """One damaged repository file must not stop lists and verifies of every snapshot:
    `<repo>/cache/verified-files.json` holding valid JSON that is not an object (`[]`, `null`)
    crashes `snapshots list` and `snapshots verify` (VerifiedCache.__init__ keeps any JSON)."""
    aura("backup")
    cache = aura.repo / "cache" / "verified-files.json"
    cache.parent.mkdir(exist_ok=True)
    for damaged in ("[]", "null"):
        cache.write_text(damaged)
        listed = aura("snapshots", "list", check=None)
        verified = aura("snapshots", "verify", "latest", check=None)
        assert listed.returncode == 0, listed.stderr[-500:]
        assert verified.returncode == 0, verified.stderr[-500:]


def test_a_folder_that_is_not_a_snapshot_does_not_become_latest(site: Path, aura: Aura) -> None:
    """`latest` is the last folder name in lexical order, so any folder in `<repo>/snapshots/`
    whose name sorts after the ids (letters sort after digits) is `latest` for ever, even after
    new backups: `restore latest` / `verify latest` exit 3 ("manifest of snapshot old-notes is
    missing"). Only names of the snapshot id format should be ids."""
    aura("backup")
    (aura.repo / "snapshots" / "old-notes").mkdir()
    aura("backup")
    assert aura("snapshots", "verify", "latest", check=None).returncode == 0


# ---------------------------------------------------------------- verify misses changed content


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


def test_verify_finds_content_that_changed_on_disk_without_a_metadata_change(
    site: Path, aura: Aura, tmp_path: Path
) -> None:
    """README's command table: `snapshots verify` "re-hash[es] every artifact and file". It does
    not: a file verified once is skipped while its (dev, inode, size, mtime, ctime) is unchanged,
    so bit rot on the disk (content changed, metadata not) is never found by a scheduled verify:
    exit 0 "verified" on a corrupt snapshot; only --deep finds it. Simulated with a byte flipped
    in the repository's ext4 image through its loop device while unmounted."""
    require(
        os.geteuid() == 0 and shutil.which("losetup") is not None and shutil.which("debugfs") is not None,
        "root with losetup and debugfs",
    )
    image = tmp_path / "repo.img"
    with image.open("wb") as out:
        out.truncate(64 << 20)
    _run("mkfs.ext4", "-q", "-F", "-b", "1024", str(image))
    loop = _run("losetup", "-f", "--show", str(image))
    repo = aura.repo
    repo.mkdir()
    try:
        _run("mount", loop, str(repo))
        (site / "a.txt").write_text("A" * 200)
        aura("backup")
        snapshot = _only_snapshot(aura)
        aura("snapshots", "verify", snapshot)  # hashes it, remembers it
        relative = f"/snapshots/{snapshot}/site/tree/a.txt"
        _run("umount", str(repo))
        block = int(_run("debugfs", "-R", f"bmap {relative} 0", loop).split()[-1])
        with open(loop, "r+b") as device:
            device.seek(block * 1024 + 7)
            device.write(b"B")
            device.flush()
            os.fsync(device.fileno())
        _run("mount", loop, str(repo))
        assert (repo / relative.lstrip("/")).read_text() != "A" * 200  # the stored copy is corrupt

        result = aura("snapshots", "verify", snapshot, check=None)
        assert result.returncode == 3, "verify reported a corrupt snapshot as verified:\n" + result.stdout
    finally:
        subprocess.run(["umount", str(repo)], capture_output=True)
        subprocess.run(["losetup", "-d", loop], capture_output=True)


# ---------------------------------------------------------------- database: nothing before verification


def test_a_restore_stopped_by_a_changed_data_file_creates_no_role(
    pg: PostgresCluster, database: str, aura: Aura
) -> None:
    """README: "Before a database restore touches anything (no database created, no role, no
    pg_restore) ..." and "A missing or changed artifact stops the restore with exit 3". With
    --globals, missing roles are created before the data files are hashed (they are only
    size-checked up front): a same-size corrupt data file ends the restore with exit 3 after the
    snapshot's roles were created, and nothing says so."""
    role = f"rv_role_{database}"
    pg.sql(f'CREATE ROLE "{role}" LOGIN')
    with psycopg.connect(pg.dsn(database), autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g")
    aura.env["AURA_DB_DSN"] = pg.dsn(database)
    aura.write_config(base_config({"db": db_component()}))
    aura("backup")
    snapshot = _only_snapshot(aura)
    pg.sql(f'DROP ROLE "{role}"')
    data = next((aura.repo / "snapshots" / snapshot / "db" / "dump").glob("*.dat.zst"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))

    try:
        result = aura("restore", snapshot, "--to-database", f"{database}_copy", "--globals", check=3)
        assert "checksum mismatch" in result.stderr
        assert pg.sql(f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'") == [], "the failed restore created a role"
    finally:
        pg.sql(f'DROP ROLE IF EXISTS "{role}"')


# ---------------------------------------------------------------- database: a killed swap put right


def test_a_live_name_recreated_after_a_kill_between_the_renames_never_hides_the_old_database(
    pg: PostgresCluster, database: str, aura: Aura
) -> None:
    """README: "The target name always holds either the complete old database or the complete
    restored one" and a killed swap "is put right ... by the next command that takes a lock".
    Killed between rename-away and rename-in, the live name is free; when something creates it
    again before the next command (an application's provisioning, a user's `createdb`),
    pgdatabase.settle sees the target present, drops the restored copy, forgets the record and
    leaves the real data renamed away (`<db>_aura_old_*`, connections refused), listed nowhere:
    the live name holds an empty database and nothing says so."""
    with psycopg.connect(pg.dsn(database), autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g")
    aura.env["AURA_DB_DSN"] = pg.dsn(database)
    aura.write_config(base_config({"db": db_component()}))
    aura("backup")
    snapshot = _only_snapshot(aura)
    aura("restore", snapshot, "--yes", env={"AURA_FAULT": "swap:after-rename-away"}, check=137)
    pg.create_database(database)  # the live name, made again (empty) before the next command

    aura("backup")  # takes the lock: puts the killed swap right

    left = pg.sql(f"SELECT datname FROM pg_database WHERE starts_with(datname, '{database}_aura_')")
    rows = pg.sql("SELECT count(*) FROM pg_tables WHERE tablename = 't'", dbname=database)
    assert left == [] and rows == [(1,)], f"live {database} holds {rows}; left aside: {left}"


def test_a_database_holding_only_a_publication_collation_or_search_configuration_is_not_replaced_silently(
    pg: PostgresCluster, database: str, aura: Aura
) -> None:
    """Issue 9: "an existing non-empty database" needs consent. pgdatabase.EMPTY_SQL counts
    relations, schemas, functions, types, extensions and large objects only, so a database that
    holds a publication, a collation, a text search configuration or default privileges is
    "empty": `--to-database` replaces it (swap) without asking, and they are gone."""
    with psycopg.connect(pg.dsn(database), autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g")
    aura.env["AURA_DB_DSN"] = pg.dsn(database)
    aura.write_config(base_config({"db": db_component()}))
    aura("backup")
    other = f"{database}_other"
    pg.create_database(other)
    with psycopg.connect(pg.dsn(other), autocommit=True) as conn:
        conn.execute("CREATE PUBLICATION everything FOR ALL TABLES")
        conn.execute('CREATE COLLATION mine FROM "C"')
        conn.execute("CREATE TEXT SEARCH CONFIGURATION my_search (COPY = english)")
        conn.execute("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC")

    result = aura("restore", "latest", "--to-database", other, check=None)

    kept = pg.sql(
        "SELECT (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_collation WHERE collname = 'mine')"
        " + (SELECT count(*) FROM pg_ts_config WHERE cfgname = 'my_search') + (SELECT count(*) FROM pg_default_acl)",
        dbname=other,
    )
    assert result.returncode == 2 or kept == [(4,)], f"replaced without consent (exit {result.returncode}): {kept}"


@pytest.mark.parametrize("sealed", ["resealed", "format-1-without-checksum"])
def test_a_manifest_with_a_malformed_component_marks_only_that_snapshot_damaged(
    site: Path, aura: Aura, sealed: str
) -> None:
    """Issue 9: "One corrupt manifest ... marks that one snapshot damaged; backups, lists and
    restores of the others go on." A manifest that is valid JSON but whose component entry is not
    an object (its checksum file rewritten, or the manifest saying `"format": 1` with the checksum
    file removed, which Repository._sum_problem accepts unchecked) crashes `snapshots list` and
    every `backup` (AttributeError, exit 1): Repository.load checks only that `components` is a
    dict."""
    aura("backup")
    aura("backup")
    damaged = _only_snapshot(aura)  # the newest: the next backup looks at it first
    folder = aura.repo / "snapshots" / damaged
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["components"]["site"] = "garbage"
    checksum_file = aura.repo / "snapshots" / f"{damaged}.sha256"
    if sealed == "resealed":
        raw = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        checksum_file.write_text(hashlib.sha256(raw).hexdigest() + "  manifest.json\n")
    else:
        manifest["format"] = 1
        raw = json.dumps(manifest).encode()
        checksum_file.unlink()
    (folder / "manifest.json").write_bytes(raw)

    listed = aura("snapshots", "list", check=None)
    backup = aura("backup", check=None)
    assert (listed.returncode, backup.returncode) == (0, 0), listed.stderr[-300:] + backup.stderr[-300:]


def test_what_appears_in_an_empty_to_path_during_the_restore_is_not_deleted_without_consent(
    aura: Aura, tmp_path: Path
) -> None:
    """Issue 9: a restore that would replace data needs consent; an empty folder needs none. The
    emptiness is judged once, before the tree is built: a file written into the folder while the
    restore builds its staging tree is removed with the "old" tree at the swap (exit 0, no
    question, no warning). files_restore._exchange should only put the new tree in place of what
    was judged (e.g. rmdir the empty folder, then RENAME_NOREPLACE) or ask again."""
    source = tmp_path / "site"
    for folder in range(20):
        (source / f"d{folder}").mkdir(parents=True)
        for number in range(150):
            (source / f"d{folder}" / f"f{number}").write_bytes(os.urandom(8192))
    aura.write_config(base_config({"site": {"type": "files", "path": str(source)}}))
    aura("backup")
    target = tmp_path / "target"
    target.mkdir()
    process = aura.popen("restore", "latest", "--to-path", str(target))
    staging = f"{target}.aura-staging-"
    deadline = time.monotonic() + 60
    while not any(p.startswith(staging) for p in map(str, tmp_path.iterdir())) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGSTOP)
    if not any(p.startswith(staging) for p in map(str, tmp_path.iterdir())):
        os.kill(process.pid, signal.SIGCONT)
        process.wait()
        pytest.skip("the restore finished before it could be stopped while building")
    (target / "report.pdf").write_text("written by someone else meanwhile")
    os.kill(process.pid, signal.SIGCONT)
    process.communicate(timeout=120)

    assert process.returncode == 2 or (target / "report.pdf").exists(), (
        f"exit {process.returncode}: a file written meanwhile was removed without consent"
    )
