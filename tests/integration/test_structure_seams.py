"""Library exceptions are translated at the seam where they arise (issue 10, "one error root"):
what the operating system refuses becomes one line and a documented exit code, never
'unexpected ... traceback saved'. Found by trying the CLI as a new user would (closing audit)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Aura


def _files_config(aura: Aura, repository: str = "repo") -> Path:
    source = aura.root / "data"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "a.txt").write_text("alpha\n")
    components = {"up": {"type": "files", "path": str(source)}}
    aura.write_config({"repository": {"path": repository}, "components": components})
    return source


def test_a_repository_path_that_is_a_file_is_exit_2_in_one_line(aura: Aura) -> None:
    (aura.root / "repo").write_text("not a folder\n")
    _files_config(aura)
    done = aura("backup", check=2)
    errors = [line for line in done.stderr.splitlines() if line.startswith("aura-ops: error:")]
    assert errors == [f"aura-ops: error: repository {aura.root / 'repo'} cannot be used: File exists"], done.stderr
    assert "unexpected" not in done.stderr and "Traceback" not in done.stderr
    assert (aura.root / "repo").read_text() == "not a folder\n"
    doctor = aura.json("doctor", check=None)  # doctor reports it as a failed check, not a crash
    assert any(c["check"] == f"repository {aura.root / 'repo'}" and not c["ok"] for c in doctor["checks"])


def test_a_restore_to_a_path_below_a_file_is_refused_in_one_line_and_restores_nothing(aura: Aura) -> None:
    _files_config(aura)
    snapshot = aura.json("backup")["id"]
    (aura.root / "plain").write_text("a file\n")
    target = aura.root / "plain" / "restored"
    done = aura("restore", snapshot, "--to-path", str(target), "--yes", check=2)
    assert "unexpected" not in done.stderr and "Traceback" not in done.stderr
    assert f"aura-ops: error: cannot make the folder {target.parent} for {target}" in done.stderr
    assert "nothing was restored" in done.stderr
    assert (aura.root / "plain").read_text() == "a file\n"
    assert aura.json("doctor", check=None)["checks"]  # no temporary object left behind to settle
    assert not any("dir_swap" in c["check"] for c in aura.json("doctor", check=None)["checks"])
