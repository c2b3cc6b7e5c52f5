"""The typed manifest sections of the postgres and docker components: what a backup writes is
read back and written again unchanged, an old section still loads, a damaged one is a
verification error naming the component; and what the components say without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aura_ops.components import component_class
from aura_ops.components.base import RestoreRequest
from aura_ops.components.containers import DockerComponent, DockerManifest
from aura_ops.components.postgres import PostgresComponent, PostgresManifest, compare_facts
from aura_ops.config import DockerConfig, PostgresConfig
from aura_ops.errors import VerificationError
from aura_ops.hosts import LocalHost
from aura_ops.repository import Snapshot

# a section as PostgresComponent.snapshot writes it (values shortened)
WRITTEN: dict[str, Any] = {
    "type": "postgres",
    "server_version": "15.8 (Debian 15.8-0+deb12u1)",
    "server_major": 15,
    "database_size": 7_812_643,
    "encoding": "UTF8",
    "collate": "C.UTF-8",
    "ctype": "C.UTF-8",
    "database": "shop",
    "database_properties": {"owner": "app", "connection_limit": -1, "comment": None, "acl": None, "settings": []},
    "row_counts": {"public.orders": 120, "public.items": 0},
    "sequences": {"public.orders_id_seq": 120, "public.unused_seq": None},
    "large_objects": 0,
    "materialized_views": [],
    "table_checksums": {"public.orders": "-12345", "public.items": "0"},
    "checksum_method": "columns-by-name-v2",
    "large_object_checksum": "0",
    "where": "127.0.0.1:5432",
    "pg_dump_version": "pg_dump (PostgreSQL) 15.8",
    "jobs": 2,
    "compression": "zstd:2",
    "uncompressed_bytes": 4096,
    "globals": None,
    "artifacts": {
        "dump/toc.dat": {"size": 2048, "hash": "a" * 64},
        "dump/3401.dat.zst": {"size": 100, "hash": "b" * 64, "raw_size": 2048},
    },
    "seconds": 0.42,
}


def test_a_written_postgres_section_is_read_and_written_back_unchanged() -> None:
    recorded = PostgresManifest.model_validate(WRITTEN)
    assert recorded.section() == WRITTEN
    assert recorded.artifacts["dump/3401.dat.zst"].sha256 == "b" * 64
    assert recorded.sequences == {"public.orders_id_seq": 120, "public.unused_seq": None}


def test_an_old_section_loads_without_gaining_keys_and_unknown_keys_are_kept() -> None:
    old = {"type": "postgres", "database": "shop", "artifacts": {}, "written_by_a_newer_version": [1, 2]}
    recorded = PostgresManifest.model_validate(old)
    assert recorded.row_counts is None and recorded.checksum_method is None and recorded.globals is None
    assert recorded.section() == old


def _snapshot(tmp_path: Path, entry: dict[str, Any]) -> Snapshot:
    return Snapshot("s1", tmp_path, {"checksum_algorithm": "sha256", "components": {"db": entry}})


def test_a_section_whose_artifact_has_no_checksum_is_a_verification_error_naming_it(tmp_path: Path) -> None:
    damaged = {**WRITTEN, "artifacts": {"dump/toc.dat": {"size": 2048}}}
    component = PostgresComponent("db", None, LocalHost())
    with pytest.raises(
        VerificationError, match=r"^db: its manifest section is damaged: artifacts\.dump/toc\.dat\.hash"
    ):
        component.recorded(_snapshot(tmp_path, damaged))


def test_facts_the_manifest_lacks_are_not_compared_and_a_differing_count_names_its_table() -> None:
    old = PostgresManifest.model_validate({"type": "postgres", "database": "shop", "row_counts": {"public.t": 3}})
    compare_facts("db", old, {"row_counts": {"public.t": 3}, "sequences": {"s": 9}, "large_objects": 4})
    with pytest.raises(VerificationError, match=r"^db: row count of public.t is 2, the snapshot recorded 3$"):
        compare_facts("db", old, {"row_counts": {"public.t": 2}})
    recorded = PostgresManifest.model_validate(WRITTEN)
    with pytest.raises(VerificationError, match="sequences differ"):
        compare_facts("db", recorded, {"row_counts": WRITTEN["row_counts"], "sequences": {}})


def test_a_docker_section_round_trips_and_a_restore_changes_nothing(tmp_path: Path) -> None:
    written = {
        "type": "docker",
        "containers": [{"name": "web", "status": "running", "image": "sha256:" + "c" * 64}],
        "artifacts": {"containers.json": {"size": 300, "hash": "d" * 64}},
        "seconds": 0.1,
    }
    assert DockerManifest.model_validate(written).section() == written
    component = DockerComponent("web", None, LocalHost())
    snapshot = Snapshot("s1", tmp_path, {"components": {"web": written}})
    assert component.restore_target(snapshot, RestoreRequest()) is None
    assert component.restore(snapshot, RestoreRequest())["containers"] == written["containers"]
    assert component.verify(snapshot, deep=False) == {"containers": 1}


def test_components_describe_what_they_name_without_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = PostgresConfig(type="postgres", dsn_env="SHOP_DSN")
    monkeypatch.setenv("SHOP_DSN", "postgresql://app@127.0.0.1:6543/shop")
    assert PostgresComponent("db", cfg, LocalHost()).describe() == "database shop on 127.0.0.1:6543"
    assert PostgresComponent("db", cfg, LocalHost()).describe("copy") == "database copy on 127.0.0.1:6543"
    monkeypatch.delenv("SHOP_DSN")
    unread = PostgresComponent("db", cfg, LocalHost()).describe()
    assert unread == "database ? (from $SHOP_DSN, which cannot be read)"
    docker = DockerConfig(type="docker", label="app=shop")
    assert DockerComponent("web", docker, LocalHost()).describe() == "containers app=shop"


def test_the_registry_names_both_classes() -> None:
    assert component_class("postgres") is PostgresComponent
    assert component_class("docker") is DockerComponent
    assert PostgresComponent.manifest_model is PostgresManifest
