"""``make demo``: the main job on embedded defaults, against real components it starts itself.

Starts a throwaway PostgreSQL cluster with a sample shop database and a sample uploads folder,
then runs the real CLI: doctor, backup, an incremental backup, snapshots list, verify --deep,
a restore into a new database and folder, and a comparison of before and after. Then deploys:
v1 and v2 (healthy) to a container on a Docker engine, and v3 (its release has no health page,
its migration changes the schema) with --rollback-on-fail: the automatic rollback leaves v2
serving and the database exactly as before v3. Stops what it started, whatever happens.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import psycopg

from aura_ops.dev.sandbox import PostgresCluster, unmount_under

SHOP = """
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id),
                     total numeric(10,2), placed timestamptz DEFAULT now());
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 900;
INSERT INTO customers (name, email)
  SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 5000) g;
INSERT INTO orders (customer_id, total)
  SELECT (g % 5000) + 1, (g % 1000) + 0.99 FROM generate_series(1, 100000) g;
"""


def _say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def _aura(workdir: Path, env: dict[str, str], *args: str) -> None:
    print("$ aura-ops " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "aura_ops", *args], cwd=workdir, env=env, check=True)


def _fingerprint(dsn: str) -> dict[str, tuple[int, str]]:
    result: dict[str, tuple[int, str]] = {}
    with psycopg.connect(dsn) as conn:
        for table in ("customers", "orders"):  # constants: no input reaches the SQL
            row = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "  # noqa: S608
                f"FROM {table} t"
            ).fetchone()
            assert row is not None
            result[table] = (int(row[0]), str(row[1]))
    return result


def _sample_files(root: Path) -> None:
    (root / "invoices" / "2026").mkdir(parents=True)
    (root / "avatars").mkdir()
    for number in range(200):
        (root / "invoices" / "2026" / f"inv-{number:04d}.txt").write_text(f"invoice {number}\n" * 50)
    for number in range(20):
        (root / "avatars" / f"user-{number}.bin").write_bytes(os.urandom(64_000))
    (root / "latest-invoice").symlink_to("invoices/2026/inv-0199.txt")


def run(workdir: Path) -> None:
    unmount_under(workdir)  # a dockerd of an earlier demo that was killed may have left one
    shutil.rmtree(workdir, ignore_errors=True)
    if workdir.exists():
        raise SystemExit(f"demo: cannot remove the previous demo's folder {workdir}; remove it and retry")
    workdir.mkdir(parents=True, mode=0o700)
    uploads = workdir / "uploads"
    _sample_files(uploads)
    cluster = PostgresCluster()
    try:
        _say("starting a throwaway PostgreSQL 15 cluster on 127.0.0.1")
        cluster.start()
        dsn = cluster.create_database("shop")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SHOP)
        (workdir / "aura.yaml").write_text(
            "repository: {path: repository}\n"
            "components:\n"
            "  shop: {type: postgres, dsn_env: AURA_DB_DSN, checksums: true}\n"
            "  uploads: {type: files, path: uploads, exclude: ['*.tmp']}\n"
        )
        env = {**os.environ, "AURA_DB_DSN": dsn, "AURA_CONFIG": str(workdir / "aura.yaml")}
        before = _fingerprint(dsn)

        _say("is everything in place?")
        _aura(workdir, env, "doctor")
        _say("first snapshot: database and files")
        _aura(workdir, env, "backup", "--tag", "demo")
        _say("a new upload arrives; the second snapshot hard-links every unchanged file")
        (uploads / "avatars" / "user-new.bin").write_bytes(os.urandom(64_000))
        _aura(workdir, env, "backup")
        _aura(workdir, env, "snapshots", "list")
        _say("deep verify: restore into a scratch database and compare with the manifest")
        _aura(workdir, env, "snapshots", "verify", "latest", "--deep")
        _say("restore into a new database and a new folder")
        _aura(workdir, env, "restore", "latest", "--component", "shop", "--to-database", "shop_restored")
        _aura(
            workdir, env, "restore", "latest", "--component", "uploads", "--to-path", str(workdir / "uploads-restored")
        )
        _compare(before, _fingerprint(cluster.dsn("shop_restored")), uploads, workdir / "uploads-restored")
        _deploys(workdir, env, dsn)
        print(f"\nThe demo's files are in {workdir} (repository/, logs/, aura.yaml).")
    finally:
        _say("stopping the cluster")
        cluster.remove()


def _release(workdir: Path, version: str, healthy: bool, migration: str) -> Path:
    folder = workdir / "releases-src" / version
    folder.mkdir(parents=True)
    (folder / "index.html").write_text(f"<h1>shop {version}</h1>\n")
    if healthy:
        (folder / "health").write_text(f"ok {version}\n")
    (folder / "migrate.sql").write_text(migration)
    return folder


def _deploys(workdir: Path, env: dict[str, str], dsn: str) -> None:
    import docker

    from aura_ops.dev.sandbox import DockerDaemon, free_port, import_busybox_image

    _say("deploys: a Docker engine (host networking, no bridge) and a container serving the release")
    daemon = DockerDaemon(workdir / "docker").start()
    client = docker.DockerClient(base_url=daemon.url)
    container = None
    try:
        import_busybox_image(client)
        app, port = workdir / "app", free_port()
        app.mkdir()
        container = client.containers.create(
            "aura-test/busybox",
            ["httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/app/current"],
            name=f"aura-demo-web-{port}",
            network_mode="host",
            init=True,
            labels={"aura-demo": "1"},
            volumes={str(app): {"bind": "/app", "mode": "ro"}},
        )
        with open(workdir / "aura.yaml", "a") as config:
            config.write(
                f"  app: {{type: release, path: app, keep: 3}}\n"
                f"  web: {{type: docker, url: '{daemon.url}', containers: [{container.name}], timeout: 20}}\n"
                "deploy: {migrate: [psql, -X, -q, -v, ON_ERROR_STOP=1, -f, migrate.sql]}\n"
                "checks:\n"
                "  - {type: container, component: web, deadline: 5}\n"
                f"  - {{type: http, url: 'http://127.0.0.1:{port}/health', deadline: 5}}\n"
            )
        deploy_env = {**env, "AURA_DB_DSN": dsn}
        for version, healthy, migration in (
            ("v1", True, "SELECT 1;\n"),
            ("v2", True, "ALTER TABLE orders ADD COLUMN IF NOT EXISTS note text;\n"),
        ):
            _say(f"deploy {version}")
            _aura(
                workdir,
                deploy_env,
                "deploy",
                "--version",
                version,
                "--source",
                str(_release(workdir, version, healthy, migration)),
            )
        before = _fingerprint(dsn)
        _say("deploy v3: its migration drops a column and its release has no /health: it fails, and rolls back")
        source = _release(
            workdir, "v3", False, "ALTER TABLE orders DROP COLUMN note; DELETE FROM orders WHERE id < 500;\n"
        )
        print("$ aura-ops deploy --version v3 --source ... --rollback-on-fail", flush=True)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "aura_ops",
                "deploy",
                "--version",
                "v3",
                "--source",
                str(source),
                "--rollback-on-fail",
            ],
            cwd=workdir,
            env=deploy_env,
        )
        print(f"(exit code {result.returncode}: failed and fully rolled back)")
        serving = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read().decode().strip()  # noqa: S310
        same = _fingerprint(dsn) == before
        print(f"now serving: {serving!r}; database {'exactly as before v3' if same else 'DIFFERENT'}")
        if result.returncode != 1 or serving != "ok v2" or not same:
            raise SystemExit("demo: the rollback did not bring v2 back exactly")
    finally:
        if container is not None:
            container.remove(force=True)
        client.close()
        daemon.stop()


def _compare(
    before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]], source: Path, restored: Path
) -> None:
    _say("before and after")
    print(f"{'table':<12} {'rows before':>12} {'rows after':>12}  content")
    for table, (rows, digest) in before.items():
        same = after[table] == (rows, digest)
        print(f"{table:<12} {rows:>12} {after[table][0]:>12}  {'identical' if same else 'DIFFERENT'}")
    comparison = filecmp.dircmp(source, restored)
    files_same = _trees_equal(comparison)
    print(f"uploads: {'identical' if files_same else 'DIFFERENT'} ({sum(1 for _ in source.rglob('*'))} entries)")
    if before != after or not files_same:
        raise SystemExit("demo: the restored copy differs from the original")


def _trees_equal(comparison: filecmp.dircmp[str]) -> bool:
    if comparison.left_only or comparison.right_only or comparison.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(comparison.left, comparison.right, comparison.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(_trees_equal(sub) for sub in comparison.subdirs.values())


if __name__ == "__main__":
    run(Path(os.environ.get("AURA_DEMO_DIR", ".demo")).absolute())
