"""`aura-ops restore` reads the snapshot once, then asks on the terminal: a snapshot deleted while
the question waits is refused as unknown (exit 2, nothing changed), as when the restore read it
a second time after the answer."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time

from tests.conftest import Aura, base_config


def test_a_snapshot_deleted_while_the_restore_asks_is_refused_as_unknown(aura: Aura) -> None:
    source = aura.root / "src"
    source.mkdir()
    (source / "a").write_text("old\n")
    aura.write_config(base_config({"up": {"type": "files", "path": str(source)}}))
    snapshot = aura.json("backup")["id"]
    (source / "a").write_text("new\n")
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "aura_ops", "--config", str(aura.config_path), "restore", snapshot],
        env=aura.env,
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    try:
        assert process.stderr is not None
        os.set_blocking(process.stderr.fileno(), False)
        asked, deadline = b"", time.monotonic() + 120
        while b"[y/N]" not in asked and process.poll() is None and time.monotonic() < deadline:
            asked += process.stderr.read() or b""
            time.sleep(0.05)
        assert b"[y/N]" in asked, asked
        aura("snapshots", "delete", snapshot, "--yes")
        os.write(master, b"y\n")
        os.set_blocking(process.stderr.fileno(), True)
        _, rest = process.communicate(timeout=120)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 2, rest
    assert f"unknown snapshot '{snapshot}'".encode() in rest
    assert (source / "a").read_text() == "new\n"
