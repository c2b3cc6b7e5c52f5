"""Every playbook action that touches a host, run against FakeHosts: the argv each one runs (a
tuple, never a shell string), the files it writes (atomically, with their mode and owner), and
what its compensation puts back (content, mode, owner, times, a symlink, or nothing).

The actions get their hosts from the Context's inventory, built here from FakeHosts only: the
control machine (``local``, where a file step keeps its saved copy) and ``app1``, where the
release lives. A real Journal in tmp_path carries state from a step's apply to its undo.

snapshot, restore, services_stop/start and preflight run on FakeHosts in
test_actions_fakehost_components.py. Not here (they need a real PostgreSQL, so they are covered
by the integration tests): sql, database_clone*, migrate's compensation, and checks of type
sql/container/http/tcp.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aura_ops import secrets
from aura_ops.config import Config, parse
from aura_ops.engine.actions import REGISTRY, Context
from aura_ops.engine.checks import CheckFailed
from aura_ops.errors import AuraError, CommandFailed, UsageError, VerificationError
from aura_ops.hosts import Command, Result
from aura_ops.hosts.fake import Call, Entry, FakeHost, result
from aura_ops.hosts.inventory import Inventory
from aura_ops.state.journal import Journal

APP = "/srv/app"
URL = "http://127.0.0.1:8080/health"
WORK = Path("/state/runs/r1")  # the run's folder, on the control machine
T_ATIME, T_MTIME = 1_500_000_000_000_000_000, 1_600_000_000_000_000_000


@pytest.fixture(autouse=True)
def _no_secrets() -> Iterator[None]:
    yield
    secrets.forget()


def _clock() -> Iterator[int]:
    now = 1_700_000_000_000_000_000
    while True:
        now += 1_000_000
        yield now


def _fake(name: str, **options: Any) -> FakeHost:
    ticks = _clock()
    return FakeHost(name, clock=lambda: next(ticks), **options)


@dataclass
class World:
    """A configuration, its hosts (all fakes), a journal, and a step's context."""

    config: Config
    control: FakeHost
    app: FakeHost
    journal: Journal

    def ctx(self, step: str, timeout: float | None = None) -> Context:
        hosts = Inventory(self.config, hosts={"local": self.control, "app1": self.app})
        return Context(self.config, "r1", step, WORK, timeout, hosts, self.journal)

    def saved(self, step: str) -> dict[str, Any] | None:
        return self.journal.step_state("r1", step)


STEPS = [
    ("cmd", "command"),
    ("conf", "file"),
    ("wait", "wait"),
    ("upload", "release_upload"),
    ("switch", "release_switch"),
    ("mark", "release_mark"),
    ("prune", "release_prune"),
    ("migrate", "migrate"),
    ("checks", "checks"),
]


def _world(
    tmp_path: Path, control: FakeHost | None = None, components: dict[str, Any] | None = None, **sections: Any
) -> World:
    """The release ``app`` on host ``app1`` (keep 2), ``components`` besides, and ``sections``."""
    data: dict[str, Any] = {
        "repository": {"path": str(tmp_path / "repo")},
        "hosts": {"app1": {"local": True}},
        "components": {"app": {"type": "release", "host": "app1", "path": APP, "keep": 2}, **(components or {})},
        **sections,
    }
    journal = Journal(tmp_path / "journal.db")
    journal.create_run("r1", "book", {}, None, "t", "cli", "h", STEPS, "{}")
    return World(parse(data), control or _fake("local"), _fake("app1"), journal)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return _world(tmp_path)


def _params(action: str, values: dict[str, Any]) -> Any:
    return REGISTRY[action].Params.model_validate(values)


def _release_tree(host: FakeHost, *versions: str, current: str | None = None) -> None:
    for version in versions:
        host.add_file(f"{APP}/releases/{version}/app.py", f"print({version!r})\n")
    if current:
        host.add_symlink(f"releases/{current}", f"{APP}/current")


def _states(host: FakeHost) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(host.read_text(f"{APP}/.aura/releases.json"))
    return loaded


# ------------------------------------------------------------------ command


def test_a_command_runs_its_argv_env_and_cwd_on_the_control_host(world: World) -> None:
    world.control.on("make", result("built\n"))
    p = _params("command", {"argv": ["make", "build; rm -rf /"], "env": {"MODE": "prod"}, "cwd": "/srv/build"})
    outputs = REGISTRY["command"].apply(p, world.ctx("cmd", timeout=12))
    assert outputs == {"stdout": "built", "returncode": 0}
    [command] = world.control.commands
    assert command == Command(("make", "build; rm -rf /"), {"MODE": "prod"}, "/srv/build")  # one argument, no shell
    assert world.app.commands == []


def test_a_command_passes_the_step_timeout_to_the_host(world: World) -> None:
    seen: list[float | None] = []

    def make(call: Call) -> Result:
        seen.append(call.timeout)
        return result()

    world.control.on("make", make)
    REGISTRY["command"].apply(_params("command", {"argv": ["make"]}), world.ctx("cmd", timeout=12))
    assert seen == [12]


def test_a_command_that_fails_raises_and_its_output_is_masked(world: World) -> None:
    secrets.register("hunter2-token")
    world.control.on(["deploy", "ok"], result("using hunter2-token\n" + "x" * 5000))
    world.control.on(["deploy", "bad"], result(returncode=3, stderr="refused hunter2-token\n"))
    out = REGISTRY["command"].apply(_params("command", {"argv": ["deploy", "ok"]}), world.ctx("cmd"))
    assert "hunter2" not in out["stdout"] and len(out["stdout"]) == 4000
    with pytest.raises(CommandFailed, match=r"^on local: `deploy bad` exited 3: refused \*\*\*$"):
        REGISTRY["command"].apply(_params("command", {"argv": ["deploy", "bad"]}), world.ctx("cmd"))


def test_a_command_check_is_its_exit_status_and_no_check_runs_nothing(world: World) -> None:
    action = REGISTRY["command"]
    world.control.on(["test", "-e", "/done"], result(returncode=1))
    world.control.on(["test", "-e", "/ready"])
    assert action.check(_params("command", {"argv": ["x"], "check": ["test", "-e", "/ready"]}), world.ctx("cmd"))
    assert not action.check(_params("command", {"argv": ["x"], "check": ["test", "-e", "/done"]}), world.ctx("cmd"))
    assert not action.check(_params("command", {"argv": ["x"]}), world.ctx("cmd"))
    assert world.control.argvs == [["test", "-e", "/ready"], ["test", "-e", "/done"]]


def test_a_command_is_undone_by_its_undo_argv_with_the_same_env(world: World) -> None:
    world.control.on("systemctl")
    p = _params(
        "command", {"argv": ["systemctl", "stop", "app"], "undo": ["systemctl", "start", "app"], "env": {"A": "1"}}
    )
    REGISTRY["command"].compensate(p, world.ctx("cmd"), {})
    assert world.control.commands == [Command(("systemctl", "start", "app"), {"A": "1"}, None)]
    REGISTRY["command"].compensate(_params("command", {"argv": ["systemctl", "stop", "app"]}), world.ctx("cmd"), {})
    assert len(world.control.commands) == 1  # no undo given: nothing run


def test_a_failing_undo_command_raises(world: World) -> None:
    world.control.on(["systemctl", "start"], result(returncode=5, stderr="Unit app.service not found.\n"))
    p = _params("command", {"argv": ["systemctl", "stop", "app"], "undo": ["systemctl", "start", "app"]})
    with pytest.raises(CommandFailed, match="exited 5: Unit app.service not found."):
        REGISTRY["command"].compensate(p, world.ctx("cmd"), {})


def test_a_command_is_described_masked(world: World) -> None:
    secrets.register("hunter2-token")
    p = _params("command", {"argv": ["curl", "-H", "X: hunter2-token"], "undo": ["rm", "a b"]})
    assert REGISTRY["command"].describe(p, world.ctx("cmd")) == ("curl -H 'X: ***'", "rm 'a b'")


# ------------------------------------------------------------------ wait


def test_wait_polls_its_argv_until_it_exits_zero(world: World) -> None:
    answers = iter([1, 1, 0])
    world.control.on("pg_isready", lambda call: result(returncode=next(answers)))
    p = _params("wait", {"argv": ["pg_isready", "-h", "127.0.0.1"], "timeout": 5, "interval": 0.01})
    assert REGISTRY["wait"].apply(p, world.ctx("wait")) == {"attempts": 3}
    assert world.control.argvs == [["pg_isready", "-h", "127.0.0.1"]] * 3


def test_wait_gives_up_at_its_timeout_naming_the_attempts(world: World) -> None:
    world.control.on("pg_isready", result(returncode=2))
    p = _params("wait", {"argv": ["pg_isready"], "timeout": 0.1, "interval": 0.02})
    with pytest.raises(AuraError, match=r"`pg_isready` did not succeed within 0.1s \((\d+) attempts\)") as failed:
        REGISTRY["wait"].apply(p, world.ctx("wait"))
    attempts = int(re.findall(r"\((\d+) attempts\)", str(failed.value))[0])
    assert attempts == len(world.control.commands) >= 2


# ------------------------------------------------------------------ file


def test_a_file_step_writes_a_new_file_atomically_and_its_undo_removes_it(world: World) -> None:
    world.control.add_dir("/etc/app")
    action, ctx = REGISTRY["file"], world.ctx("conf")
    p = _params("file", {"path": "/etc/app/app.conf", "content": "port = 8080\n"})
    assert not action.check(p, ctx)
    assert action.apply(p, ctx) == {"path": "/etc/app/app.conf", "bytes": 12}
    assert world.control.tree("/etc/app") == {"app.conf": Entry("file", 0o644, b"port = 8080\n")}  # no temporary left
    assert world.saved("conf") == {"kind": "absent"}
    assert action.check(p, ctx)
    action.verify(p, ctx, {})
    action.compensate(p, ctx, {})
    assert world.control.tree("/etc/app") == {}


def test_a_file_step_replaces_a_file_by_a_new_inode_keeping_owner_and_mode(world: World) -> None:
    host = world.control
    host.add_dir("/etc/app")
    host.write_atomic("/etc/app/app.conf", b"old\n", mode=0o640, owner=(33, 44), times=(T_ATIME, T_MTIME))
    host.link("/etc/app/app.conf", "/etc/app/app.conf.bak")  # a reader holding the old file
    before = host.stat("/etc/app/app.conf")
    assert before is not None
    REGISTRY["file"].apply(_params("file", {"path": "/etc/app/app.conf", "content": "new\n"}), world.ctx("conf"))
    after = host.stat("/etc/app/app.conf")
    assert after is not None and after.ino != before.ino  # renamed over, not written in place
    assert host.read_bytes("/etc/app/app.conf.bak") == b"old\n"
    assert (host.read_bytes("/etc/app/app.conf"), after.mode & 0o7777, after.uid, after.gid) == (
        b"new\n",
        0o640,
        33,
        44,
    )
    assert sorted(host.listdir("/etc/app")) == ["app.conf", "app.conf.bak"]


def test_a_file_step_puts_back_the_content_mode_owner_and_times_it_replaced(world: World) -> None:
    host, action, ctx = world.control, REGISTRY["file"], world.ctx("conf")
    host.add_dir("/etc/app")
    host.write_atomic("/etc/app/app.conf", b"old\n", mode=0o4750, owner=(33, 44), times=(T_ATIME, T_MTIME))
    p = _params("file", {"path": "/etc/app/app.conf", "content": "new\n", "mode": 0o600})
    outputs = action.apply(p, ctx)
    st = host.stat("/etc/app/app.conf")
    assert st is not None and (st.mode & 0o7777, st.uid) == (0o600, 33)
    saved = world.saved("conf")
    assert saved is not None
    assert {k: saved[k] for k in ("kind", "mode", "uid", "gid", "atime_ns", "mtime_ns", "size")} == {
        "kind": "file",
        "mode": 0o4750,
        "uid": 33,
        "gid": 44,
        "atime_ns": T_ATIME,
        "mtime_ns": T_MTIME,
        "size": 4,
    }
    assert host.tree(str(WORK)) == {"conf.content": Entry("file", 0o600, b"old\n")}  # the saved bytes, private
    action.apply(_params("file", {"path": "/etc/app/app.conf", "content": "newer\n"}), ctx)  # a resume re-applies
    assert world.saved("conf") == saved and host.read_bytes(f"{WORK}/conf.content") == b"old\n"
    action.compensate(p, ctx, outputs)
    back = host.stat("/etc/app/app.conf")
    assert back is not None
    assert (host.read_bytes("/etc/app/app.conf"), back.mode & 0o7777, back.uid, back.gid) == (b"old\n", 0o4750, 33, 44)
    assert (back.atime_ns, back.mtime_ns) == (T_ATIME, T_MTIME)


def test_a_file_step_replaces_a_symlink_and_its_undo_puts_the_link_back(world: World) -> None:
    host, action, ctx = world.control, REGISTRY["file"], world.ctx("conf")
    host.add_file("/etc/app/shared.conf", b"shared\n", mode=0o604)
    host.add_symlink("shared.conf", "/etc/app/app.conf")
    host.chown("/etc/app/app.conf", 33, 44, follow_symlinks=False)
    p = _params("file", {"path": "/etc/app/app.conf", "content": "own\n"})
    assert not action.check(p, ctx)  # a symlink is never "the file written"
    action.apply(p, ctx)
    assert host.tree("/etc/app") == {
        "app.conf": Entry("file", 0o604, b"own\n"),  # the mode of what the link pointed at
        "shared.conf": Entry("file", 0o604, b"shared\n"),  # never written through the link
    }
    assert world.saved("conf") == {"kind": "symlink", "link": "shared.conf", "uid": 33, "gid": 44}
    action.compensate(p, ctx, {})
    assert host.tree("/etc/app") == {
        "app.conf": Entry("symlink", 0o777, "shared.conf"),
        "shared.conf": Entry("file", 0o604, b"shared\n"),
    }
    link = host.stat("/etc/app/app.conf", follow_symlinks=False)
    assert link is not None and (link.uid, link.gid) == (33, 44)


def test_a_file_step_over_a_dangling_symlink_writes_mode_644(world: World) -> None:
    host = world.control
    host.add_symlink("gone.conf", "/etc/app/app.conf")
    REGISTRY["file"].apply(_params("file", {"path": "/etc/app/app.conf", "content": "x"}), world.ctx("conf"))
    assert host.tree("/etc/app") == {"app.conf": Entry("file", 0o644, b"x")}


def test_a_file_step_refuses_a_directory_and_remembers_nothing(world: World) -> None:
    world.control.add_dir("/etc/app/app.conf", 0o750)
    p = _params("file", {"path": "/etc/app/app.conf", "content": "x"})
    with pytest.raises(AuraError, match="is a directory: a file step writes regular files only"):
        REGISTRY["file"].apply(p, world.ctx("conf"))
    assert world.saved("conf") is None and not world.control.exists(str(WORK))
    assert world.control.tree("/etc/app") == {"app.conf": Entry("dir", 0o750)}


def test_a_file_step_refuses_a_fifo(world: World) -> None:
    world.control.add_dir("/etc/app")
    world.control.make_fifo("/etc/app/app.conf")
    with pytest.raises(AuraError, match="is not a regular file"):
        REGISTRY["file"].apply(_params("file", {"path": "/etc/app/app.conf", "content": "x"}), world.ctx("conf"))
    assert world.saved("conf") is None


def test_a_file_step_checks_content_and_mode(world: World) -> None:
    host, action, ctx = world.control, REGISTRY["file"], world.ctx("conf")
    host.add_file("/etc/app/app.conf", b"same\n", mode=0o640)
    assert action.check(_params("file", {"path": "/etc/app/app.conf", "content": "same\n"}), ctx)
    assert action.check(_params("file", {"path": "/etc/app/app.conf", "content": "same\n", "mode": 0o640}), ctx)
    assert not action.check(_params("file", {"path": "/etc/app/app.conf", "content": "same\n", "mode": 0o600}), ctx)
    assert not action.check(_params("file", {"path": "/etc/app/app.conf", "content": "other\n"}), ctx)
    assert not action.check(_params("file", {"path": "/etc/app/missing.conf", "content": "same\n"}), ctx)


def test_a_file_step_verify_fails_when_the_content_is_not_there(world: World) -> None:
    world.control.add_file("/etc/app/app.conf", b"changed behind our back\n")
    with pytest.raises(VerificationError, match="does not hold the content just written"):
        REGISTRY["file"].verify(_params("file", {"path": "/etc/app/app.conf", "content": "x"}), world.ctx("conf"), {})


def test_a_file_step_that_never_wrote_undoes_nothing(world: World) -> None:
    world.control.add_file("/etc/app/app.conf", b"someone else's\n", mode=0o600)
    REGISTRY["file"].compensate(_params("file", {"path": "/etc/app/app.conf", "content": "x"}), world.ctx("conf"), {})
    assert world.control.tree("/etc/app") == {"app.conf": Entry("file", 0o600, b"someone else's\n")}


def test_a_file_step_undoing_an_absent_file_leaves_a_directory_made_since(world: World) -> None:
    host, action, ctx = world.control, REGISTRY["file"], world.ctx("conf")
    host.add_dir("/etc/app")
    p = _params("file", {"path": "/etc/app/app.conf", "content": "x"})
    action.apply(p, ctx)
    host.remove("/etc/app/app.conf")
    host.add_dir("/etc/app/app.conf")
    action.compensate(p, ctx, {})
    assert host.tree("/etc/app") == {"app.conf": Entry("dir", 0o755)}


def test_a_file_step_refuses_to_put_back_a_damaged_copy(world: World) -> None:
    host, action, ctx = world.control, REGISTRY["file"], world.ctx("conf")
    host.add_file("/etc/app/app.conf", b"old\n")
    p = _params("file", {"path": "/etc/app/app.conf", "content": "new\n"})
    action.apply(p, ctx)
    host.write_atomic(f"{WORK}/conf.content", b"odd\n", mode=0o600)
    with pytest.raises(AuraError, match="is damaged; nothing was put back"):
        action.compensate(p, ctx, {})
    assert host.read_bytes("/etc/app/app.conf") == b"new\n"


def test_an_ordinary_user_puts_back_content_and_mode_of_a_file_it_may_not_give_away(tmp_path: Path) -> None:
    control = _fake("local", uid=1000, gid=1000)
    world = _world(tmp_path, control)
    control.add_dir("/state", owner=(1000, 1000))
    control.add_dir("/etc/app", owner=(1000, 1000))
    control.add_file("/etc/app/app.conf", b"old\n", mode=0o644, owner=(2000, 2000))
    action, ctx = REGISTRY["file"], world.ctx("conf")
    p = _params("file", {"path": "/etc/app/app.conf", "content": "new\n"})
    action.apply(p, ctx)
    action.compensate(p, ctx, {})
    st = control.stat("/etc/app/app.conf")
    assert st is not None
    assert (control.read_bytes("/etc/app/app.conf"), st.mode & 0o7777, st.uid) == (b"old\n", 0o644, 1000)


def test_a_file_step_begun_by_an_older_aura_ops_is_undone_from_its_legacy_files(world: World) -> None:
    host, action = world.control, REGISTRY["file"]
    host.add_file("/etc/app/app.conf", b"new\n")
    host.add_file(f"{WORK}/conf.orig", b"old\n", mode=0o604)
    p = _params("file", {"path": "/etc/app/app.conf", "content": "new\n"})
    action.compensate(p, world.ctx("conf"), {})
    assert host.tree("/etc/app") == {"app.conf": Entry("file", 0o604, b"old\n")}
    host.remove(f"{WORK}/conf.orig")
    host.add_file(f"{WORK}/conf.absent")
    action.compensate(p, world.ctx("conf"), {})
    assert host.tree("/etc/app") == {}


# ------------------------------------------------------------------ release actions


def _rsync(call: Call) -> Result:
    """rsync -a SOURCE/ TARGET/ on the fake: the tree copied, modes kept (what the upload needs)."""
    *_options, separator, source, target = call.argv
    assert separator == "--"
    host, source, target = call.host, source.rstrip("/"), target.rstrip("/")
    host.mkdir(target, exist_ok=True)
    for relative, entry in host.tree(source).items():
        path = f"{target}/{relative}"
        if entry.kind == "dir":
            host.mkdir(path)
        elif isinstance(entry.content, bytes):
            host.write_atomic(path, entry.content, mode=entry.mode)
    return result()


def test_release_upload_copies_the_source_by_rsync_on_the_release_host(world: World) -> None:
    app = world.app
    app.on("rsync", _rsync)
    app.add_file("/build/v2/app.py", b"print('v2')\n", mode=0o755)
    _release_tree(app, "v1", current="v1")
    p = _params("release_upload", {"version": "v2", "source": "/build/v2/"})
    outputs = REGISTRY["release_upload"].apply(p, world.ctx("upload"))
    assert outputs == {"version": "v2", "path": f"{APP}/releases/v2"}
    assert app.argvs == [
        ["rsync", "-a", "--no-times", "--delete", "--checksum", f"--link-dest={APP}/releases/v1", "--",
         "/build/v2/", f"{APP}/releases/v2.partial/"],
    ]  # fmt: skip
    assert app.files(f"{APP}/releases") == {"v1/app.py": b"print('v1')\n", "v2/app.py": b"print('v2')\n"}
    assert _states(app)["v2"]["state"] == "deployed"
    assert world.control.commands == [] and world.control.tree("/") == {}


def test_release_upload_undo_removes_the_release_but_never_the_current_one(world: World) -> None:
    app = world.app
    _release_tree(app, "v1", "v2", current="v1")
    app.add_file(f"{APP}/releases/v2.partial/app.py", b"half")
    action = REGISTRY["release_upload"]
    action.compensate(_params("release_upload", {"version": "v2", "source": "/build"}), world.ctx("upload"), {})
    assert sorted(app.listdir(f"{APP}/releases")) == ["v1"]
    action.compensate(_params("release_upload", {"version": "v1", "source": "/build"}), world.ctx("upload"), {})
    assert sorted(app.listdir(f"{APP}/releases")) == ["v1"] and app.readlink(f"{APP}/current") == "releases/v1"


def test_a_first_release_switch_is_described_as_removing_current_not_switching_back_to_none(world: World) -> None:
    _release_tree(world.app, "v1")
    p = _params("release_switch", {"version": "v1"})
    assert REGISTRY["release_switch"].describe(p, world.ctx("switch")) == (
        "switch current to v1",
        "remove current (no release was current)",
    )  # `deploy --dry-run` and `plan` printed "switch current back to None"


def test_release_switch_journals_the_previous_release_then_switches_and_undoes(world: World) -> None:
    app, action, ctx = world.app, REGISTRY["release_switch"], world.ctx("switch")
    _release_tree(app, "v1", "v2", current="v1")
    p = _params("release_switch", {"version": "v2"})
    assert not action.check(p, ctx)
    assert action.describe(p, ctx) == ("switch current to v2", "switch current back to v1")
    assert action.apply(p, ctx) == {"previous": "v1"}
    assert world.saved("switch") == {"previous": "v1"}
    assert app.readlink(f"{APP}/current") == "releases/v2" and action.check(p, ctx)
    assert sorted(app.listdir(APP)) == ["current", "releases"]  # the new link was renamed over: no temporary
    action.compensate(p, ctx, {})  # outputs lost (a crash right after the switch): the journal knows
    assert app.readlink(f"{APP}/current") == "releases/v1"
    assert _states(app)["v2"]["state"] == "rolled_back"


def test_release_switch_reapplied_on_resume_keeps_the_first_previous(world: World) -> None:
    app, action, ctx = world.app, REGISTRY["release_switch"], world.ctx("switch")
    _release_tree(app, "v1", "v2", current="v1")
    p = _params("release_switch", {"version": "v2"})
    action.apply(p, ctx)
    assert action.apply(p, ctx) == {"previous": "v2"}  # switched again: already there
    assert world.saved("switch") == {"previous": "v1"}
    action.compensate(p, ctx, {"previous": "v2"})
    assert app.readlink(f"{APP}/current") == "releases/v1"


def test_release_switch_undo_with_no_release_before_removes_current(world: World) -> None:
    app, action, ctx = world.app, REGISTRY["release_switch"], world.ctx("switch")
    _release_tree(app, "v1")
    p = _params("release_switch", {"version": "v1"})
    assert action.apply(p, ctx) == {"previous": None}
    assert app.readlink(f"{APP}/current") == "releases/v1"
    action.compensate(p, ctx, {})
    assert not app.exists(f"{APP}/current") and app.is_dir(f"{APP}/releases/v1")
    assert _states(app)["v1"]["state"] == "rolled_back"


def test_release_switch_undo_leaves_current_alone_when_it_never_switched(world: World) -> None:
    app, action, ctx = world.app, REGISTRY["release_switch"], world.ctx("switch")
    _release_tree(app, "v1", "v2", "v3", current="v3")
    world.journal.save_step_state("r1", "switch", {"previous": "v1"})  # a crash before the switch
    action.compensate(_params("release_switch", {"version": "v2"}), ctx, {})
    assert app.readlink(f"{APP}/current") == "releases/v3"


def test_release_switch_refuses_a_release_that_is_not_installed(world: World) -> None:
    app = world.app
    _release_tree(app, "v1", current="v1")
    with pytest.raises(UsageError, match="release v9 is not installed"):
        REGISTRY["release_switch"].apply(_params("release_switch", {"version": "v9"}), world.ctx("switch"))
    assert app.readlink(f"{APP}/current") == "releases/v1"


def test_release_switch_begun_by_an_older_aura_ops_is_undone_from_its_record_file(world: World) -> None:
    app = world.app
    _release_tree(app, "v1", "v2", current="v2")
    world.control.add_file(f"{WORK}/switch.previous", "v1")  # on the control machine, not the app host
    REGISTRY["release_switch"].compensate(_params("release_switch", {"version": "v2"}), world.ctx("switch"), {})
    assert app.readlink(f"{APP}/current") == "releases/v1"


def test_release_mark_records_the_state_privately(world: World) -> None:
    app = world.app
    _release_tree(app, "v1", current="v1")
    p = _params("release_mark", {"version": "v1", "state": "verified"})
    assert REGISTRY["release_mark"].apply(p, world.ctx("mark")) == {"state": "verified"}
    entry = _states(app)["v1"]
    assert entry["state"] == "verified" and "verified" in entry
    assert app.tree(APP)[".aura"] == Entry("dir", 0o700)
    assert app.tree(APP)[".aura/releases.json"].mode == 0o600
    with pytest.raises(UsageError, match="unknown release state 'great'"):
        REGISTRY["release_mark"].apply(_params("release_mark", {"version": "v1", "state": "great"}), world.ctx("mark"))


def test_release_prune_keeps_the_current_release_and_the_rollback_target(world: World) -> None:
    app = world.app
    _release_tree(app, "v1", "v2", "v3", "v4", "v5", current="v5")
    states = {f"v{i}": {"state": "deployed", "deployed": f"2024-01-0{i}T00:00:00+00:00"} for i in range(1, 6)}
    states["v2"]["state"] = "verified"  # the newest verified one that is not current
    app.add_file(f"{APP}/.aura/releases.json", json.dumps(states), mode=0o600)
    action = REGISTRY["release_prune"]
    assert action.describe(_params("release_prune", {}), world.ctx("prune"))[0] == "prune releases beyond keep=2"
    assert action.apply(_params("release_prune", {}), world.ctx("prune")) == {"pruned": ["v1", "v3", "v4"]}
    assert app.listdir(f"{APP}/releases") == ["v2", "v5"]


# ------------------------------------------------------------------ migrate


def _migrate_world(tmp_path: Path, migrate: list[str], monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("AURA_UNIT_DSN", "postgresql://shop:s3cret-pw@127.0.0.1:5433/shop")
    db = {"type": "postgres", "dsn_env": "AURA_UNIT_DSN"}
    return _world(tmp_path, components={"db": db}, deploy={"migrate": migrate})


def test_migrate_runs_in_the_new_release_with_credentials_in_env_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _migrate_world(tmp_path, ["./manage.py", "migrate", "--noinput"], monkeypatch)
    world.app.on("./manage.py", lambda call: result(f"applied 3 with {call.command.env['PGPASSWORD']}\n"))
    outputs = REGISTRY["migrate"].apply(_params("migrate", {"snapshot": "s1", "version": "v2"}), world.ctx("migrate"))
    [command] = world.app.commands
    assert command.argv == ("./manage.py", "migrate", "--noinput")
    assert command.cwd == f"{APP}/releases/v2"
    assert dict(command.env) == {
        "PGHOST": "127.0.0.1",
        "PGPORT": "5433",
        "PGUSER": "shop",
        "PGPASSWORD": "s3cret-pw",
        "PGDATABASE": "shop",
    }
    assert not any("s3cret" in arg for arg in command.argv)
    assert outputs == {"migrated": True, "stdout": "applied 3 with ***"}
    assert world.control.commands == []


def test_migrate_without_a_command_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = _migrate_world(tmp_path, [], monkeypatch)
    p = _params("migrate", {"snapshot": "s1", "version": "v2"})
    assert REGISTRY["migrate"].apply(p, world.ctx("migrate")) == {"migrated": False}
    assert REGISTRY["migrate"].describe(p, world.ctx("migrate"))[0] == "nothing (no deploy.migrate)"
    assert world.app.commands == [] and world.control.commands == []


def test_migrate_without_a_database_runs_with_no_credentials_and_undoes_nothing(tmp_path: Path) -> None:
    world = _world(tmp_path, deploy={"migrate": ["bin/migrate"]})
    world.app.on("bin/migrate")
    ctx, p = world.ctx("migrate"), _params("migrate", {"snapshot": "s1", "version": "v3"})
    REGISTRY["migrate"].apply(p, ctx)
    assert world.app.commands == [Command(("bin/migrate",), {}, f"{APP}/releases/v3")]
    REGISTRY["migrate"].compensate(p, ctx, {})
    [step] = [s for s in world.journal.steps("r1") if s.name == "migrate"]
    assert len(world.app.commands) == 1 and step.undo is None


def test_a_failed_migration_raises_with_its_masked_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = _migrate_world(tmp_path, ["./manage.py", "migrate"], monkeypatch)
    world.app.on("./manage.py", result(returncode=1, stderr="FATAL: password s3cret-pw refused\n"))
    with pytest.raises(CommandFailed) as failed:
        REGISTRY["migrate"].apply(_params("migrate", {"snapshot": "s1", "version": "v2"}), world.ctx("migrate"))
    assert "s3cret" not in str(failed.value) and "refused" in str(failed.value)
    assert REGISTRY["migrate"].undo_after_failure


# ------------------------------------------------------------------ checks of type command


def test_command_checks_run_on_the_control_host_until_they_pass(tmp_path: Path) -> None:
    world = _world(
        tmp_path,
        checks=[{"type": "command", "argv": ["curl", "-fsS", URL], "interval": 0.01, "timeout": 4, "name": "health"}],
    )
    answers = iter([7, 7, 0])
    timeouts: list[float | None] = []

    def curl(call: Call) -> Result:
        timeouts.append(call.timeout)
        return result(returncode=next(answers), stderr="curl: (7) refused\n")

    world.control.on("curl", curl)
    [report] = REGISTRY["checks"].apply(_params("checks", {}), world.ctx("checks"))["results"]
    assert (report["check"], report["ok"], report["attempts"], report["detail"]) == ("health", True, 3, "exit 0")
    assert world.control.argvs == [["curl", "-fsS", URL]] * 3
    assert timeouts == [4, 4, 4] and world.app.commands == []


def test_a_command_check_that_never_passes_fails_with_its_last_stderr_line(tmp_path: Path) -> None:
    world = _world(
        tmp_path,
        smoke_checks=[{"type": "command", "argv": ["smoke"], "deadline": 0.1, "interval": 0.01}],
    )
    world.control.on("smoke", result(returncode=2, stderr="first\nlast words\n"))
    with pytest.raises(CheckFailed, match=r"check command smoke failed after (\d+) attempts") as failed:
        REGISTRY["checks"].apply(_params("checks", {"kind": "smoke"}), world.ctx("checks"))
    assert str(failed.value).endswith("exited 2: last words")
    attempts = int(re.findall(r"after (\d+) attempts", str(failed.value))[0])
    assert attempts == len(world.control.commands) >= 2
    assert REGISTRY["checks"].apply(_params("checks", {}), world.ctx("checks")) == {"results": []}  # no health checks


def test_a_check_of_a_missing_program_fails_as_a_check(tmp_path: Path) -> None:
    world = _world(tmp_path, checks=[{"type": "command", "argv": ["nosuch"], "deadline": 0.05, "interval": 0.01}])
    with pytest.raises(CheckFailed, match="nosuch: not found on local"):
        REGISTRY["checks"].apply(_params("checks", {}), world.ctx("checks"))


# ------------------------------------------------------------------ the inventory


def test_the_inventory_hands_out_the_hosts_it_was_given(world: World) -> None:
    hosts = world.ctx("cmd").hosts
    assert hosts.local() is world.control and hosts.get("app1") is world.app
    assert hosts.for_component("app") is world.app


def test_release_steps_touch_only_the_release_host(world: World) -> None:
    _release_tree(world.app, "v1", "v2", current="v1")
    REGISTRY["release_switch"].apply(_params("release_switch", {"version": "v2"}), world.ctx("switch"))
    REGISTRY["release_mark"].apply(_params("release_mark", {"version": "v2", "state": "verified"}), world.ctx("mark"))
    assert world.control.tree("/") == {} and world.app.readlink(f"{APP}/current") == "releases/v2"
