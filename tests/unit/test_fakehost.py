"""FakeHost's own behaviour: scripted programs and recorded argv, capacity and ENOSPC, the
permission model of an ordinary user, link counts and the helpers tests build trees with.
What it shares with LocalHost is checked in test_hosts.py, against both."""

from __future__ import annotations

import errno
import io
import itertools
import stat
from pathlib import Path

import pytest

from aura_ops.errors import AuraError, CommandFailed, ToolMissing
from aura_ops.hosts import Command, Host, Result
from aura_ops.hosts.fake import Call, Entry, FakeHost, UnexpectedCommand, result


def _cmd(*argv: str) -> Command:
    return Command(argv)


# -- programs ------------------------------------------------------------------------------------


def test_every_command_is_recorded_in_order_with_its_argv_env_and_cwd() -> None:
    fake = FakeHost()
    fake.on("pg_dump")
    fake.run(Command(("pg_dump", "--version")))
    fake.start(Command(("pg_dump", "-Fd", "-f", "/out"), env={"PGPASSWORD": "x"}, cwd="/srv")).wait()
    assert fake.argvs == [["pg_dump", "--version"], ["pg_dump", "-Fd", "-f", "/out"]]
    assert fake.commands[1].env == {"PGPASSWORD": "x"} and fake.commands[1].cwd == "/srv"


def test_the_longest_registered_prefix_answers() -> None:
    fake = FakeHost()
    fake.on("psql", result("generic"))
    fake.on(["psql", "-At", "-c"], result("specific"))
    assert fake.run(_cmd("psql", "-At", "-c", "SELECT 1")).text == "specific"
    assert fake.run(_cmd("psql", "-At")).text == "generic"
    fake.on(["psql", "-At", "-c"], result("replaced"))
    assert fake.run(_cmd("psql", "-At", "-c", "SELECT 1")).text == "replaced"


def test_a_handler_sees_the_call_and_can_change_the_host_files() -> None:
    fake = FakeHost()
    seen: list[Call] = []

    def pg_dump(call: Call) -> Result:
        seen.append(call)
        target = call.argv[call.argv.index("-f") + 1]
        call.host.add_dir(target)
        call.host.add_file(f"{target}/toc.dat", b"PGDMP")
        return result(stderr="pg_dump: dumping contents\n")

    fake.on("pg_dump", pg_dump)
    fake.add_dir("/backup")
    done = fake.run(_cmd("pg_dump", "-Fd", "-f", "/backup/db"), stdin=b"input", timeout=30)
    assert fake.files("/backup") == {"db/toc.dat": b"PGDMP"}
    assert (seen[0].stdin, seen[0].timeout, seen[0].host) == (b"input", 30, fake)
    assert done.stderr == "pg_dump: dumping contents"


def test_stdin_from_a_file_reaches_the_handler() -> None:
    fake = FakeHost()
    fake.on("pg_restore", lambda call: result(stdout=call.stdin[::-1]))
    assert fake.run(_cmd("pg_restore"), stdin=io.BytesIO(b"abc")).stdout == b"cba"
    process = fake.start(_cmd("pg_restore"), stdin=io.BytesIO(b"xyz"))
    assert process.stdout is not None and process.stdout.read() == b"zyx"


def test_an_unregistered_program_is_tool_missing_and_still_recorded() -> None:
    fake = FakeHost("app1")
    with pytest.raises(ToolMissing, match="^rsync: not found on app1$"):
        fake.run(_cmd("rsync", "-a", "src/", "dst/"))
    with pytest.raises(ToolMissing):
        fake.start(_cmd("rsync"))
    assert fake.argvs == [["rsync", "-a", "src/", "dst/"], ["rsync"]]


def test_a_registered_program_with_unscripted_arguments_fails_the_test_not_the_code() -> None:
    fake = FakeHost()
    fake.on(["pg_dump", "--version"], result("pg_dump (PostgreSQL) 15.4\n"))
    with pytest.raises(UnexpectedCommand, match=r"no scripted reply for `pg_dump -Fd`") as info:
        fake.run(_cmd("pg_dump", "-Fd"))
    assert isinstance(info.value, AssertionError) and not isinstance(info.value, AuraError)


def test_a_scripted_failure_raises_command_failed_with_the_masked_tail() -> None:
    fake = FakeHost("db1")
    lines = "".join(f"line {n}\n" for n in range(30)) + "connection failed: password=hunter2\n"
    fake.on("psql", result(returncode=2, stderr=lines))
    with pytest.raises(CommandFailed) as info:
        fake.run(_cmd("psql", "-c", "SELECT 1"))
    assert str(info.value) == "on db1: `psql -c 'SELECT 1'` exited 2: connection failed: password=***"
    tail = info.value.stderr_tail.splitlines()
    assert len(tail) == 20 and tail[0] == "line 11" and "hunter2" not in info.value.stderr_tail
    done = fake.run(_cmd("psql"), check=False)
    assert done.returncode == 2 and done.stderr.endswith("password=***")


def test_stdout_goes_to_a_pipe_a_file_or_nowhere() -> None:
    fake = FakeHost()
    fake.on("cat", result(b"data"))
    sink = io.BytesIO()
    assert fake.run(_cmd("cat"), stdout=sink).stdout == b"" and sink.getvalue() == b"data"
    assert fake.run(_cmd("cat"), stdout=None).stdout == b""
    process = fake.start(_cmd("cat"), stdout=sink)
    assert process.stdout is None and sink.getvalue() == b"datadata"


def test_a_started_process_streams_stderr_and_a_kill_before_wait_ends_it_by_sigkill() -> None:
    fake = FakeHost()
    fake.on("pg_restore", result(returncode=1, stderr="warning: one\nerror: two\n"))
    process = fake.start(_cmd("pg_restore", "-d", "db"))
    assert list(process.stderr_lines()) == ["warning: one", "error: two"]
    with pytest.raises(CommandFailed, match="exited 1: error: two$"):
        process.wait()
    killed = fake.start(_cmd("pg_restore"))
    killed.kill()
    assert killed.wait(check=False).returncode == -9
    finished = fake.start(_cmd("pg_restore"))
    finished.wait(check=False)
    finished.kill()
    assert finished.wait(check=False).returncode == 1


def test_which_answers_from_the_registered_programs() -> None:
    fake = FakeHost()
    fake.on(["pg_dump", "--version"])
    fake.on("pg_restore", path="/usr/lib/postgresql/15/bin/pg_restore")
    assert fake.which("pg_dump") == "/usr/bin/pg_dump"
    assert fake.which("pg_restore") == "/usr/lib/postgresql/15/bin/pg_restore"
    assert fake.which("/usr/lib/postgresql/15/bin/pg_restore") == "/usr/lib/postgresql/15/bin/pg_restore"
    assert fake.which("psql") is None and fake.which("/usr/bin/psql") is None
    fake.run(_cmd("/usr/lib/postgresql/15/bin/pg_restore", "-l"))  # found by the path which gave
    assert fake.argvs == [["/usr/lib/postgresql/15/bin/pg_restore", "-l"]]


def test_tunnels_and_rsync_paths_are_the_given_ones() -> None:
    fake = FakeHost()
    with fake.tunnel("127.0.0.1", 5432) as pair:
        assert pair == ("127.0.0.1", 5432)
    assert fake.tunnels == [("127.0.0.1", 5432)] and fake.rsync_path("/srv/a") == "/srv/a"


def test_a_fake_host_is_a_host() -> None:
    assert isinstance(FakeHost(), Host)


# -- space ---------------------------------------------------------------------------------------


def test_a_write_beyond_the_capacity_is_enospc_and_changes_nothing() -> None:
    fake = FakeHost(capacity=1000)
    fake.add_dir("/data")
    fake.write_atomic("/data/a", b"x" * 600)
    with pytest.raises(OSError) as info:
        fake.write_atomic("/data/b", b"y" * 401)
    assert info.value.errno == errno.ENOSPC
    assert fake.files("/data") == {"a": b"x" * 600} and fake.disk_usage("/data") == (400, 1000)
    fake.write_atomic("/data/b", b"y" * 400)
    assert fake.disk_usage("/") == (0, 1000)


def test_replacing_a_file_needs_room_for_both_versions_until_the_rename() -> None:
    fake = FakeHost(capacity=1000)
    fake.add_file("/f", b"x" * 600)
    with pytest.raises(OSError, match="No space left on device"):
        fake.write_atomic("/f", b"y" * 500)
    assert fake.read_bytes("/f") == b"x" * 600 and fake.listdir("/") == ["f"]
    fake.write_atomic("/f", b"y" * 400)
    assert fake.disk_usage("/") == (600, 1000)


def test_content_counts_once_per_inode_and_is_freed_with_the_last_link() -> None:
    fake = FakeHost(capacity=10_000)
    fake.add_file("/a", b"z" * 1000)
    fake.link("/a", "/b")
    fake.link("/a", "/c")
    assert fake.disk_usage("/") == (9000, 10_000)
    fake.remove("/a")
    fake.rename("/b", "/moved")
    assert fake.disk_usage("/") == (9000, 10_000)
    fake.remove("/c")
    fake.remove_tree("/moved")
    assert fake.disk_usage("/") == (10_000, 10_000)


# -- permissions for an ordinary user -------------------------------------------------------------


def _user_host() -> FakeHost:
    fake = FakeHost(uid=1000, gid=1000, groups=[50])
    fake.add_dir("/home/me", mode=0o755)  # made by the helpers: the user's own
    fake.add_file("/etc/shadow", b"root:x", mode=0o640, owner=(0, 42))
    fake.add_dir("/srv/readonly", mode=0o555)
    fake.add_dir("/srv/private", mode=0o700, owner=(0, 0))
    fake.add_file("/srv/private/f", b"x")
    fake.add_file("/srv/group", b"g", mode=0o060, owner=(0, 50))
    return fake


def test_an_ordinary_user_meets_the_mode_bits() -> None:
    fake = _user_host()
    with pytest.raises(PermissionError) as info:
        fake.read_bytes("/etc/shadow")
    assert info.value.errno == errno.EACCES
    assert not fake.access("/etc/shadow", 4) and fake.access("/etc/shadow", 0)
    assert fake.read_bytes("/srv/group") == b"g" and fake.access("/srv/group", 2)
    with pytest.raises(PermissionError):
        fake.write_atomic("/srv/readonly/f", b"x")
    with pytest.raises(PermissionError):
        fake.read_bytes("/srv/private/f")
    fake.add_file("/srv/readonly/kept")
    for change in (
        lambda: fake.mkdir("/srv/readonly/d"),
        lambda: fake.symlink("x", "/srv/readonly/l"),
        lambda: fake.make_fifo("/srv/readonly/p"),
        lambda: fake.remove("/srv/readonly/kept"),
        lambda: fake.rename("/srv/readonly/kept", "/home/me/kept"),
        lambda: fake.link("/srv/readonly/kept", "/srv/readonly/k2"),
    ):
        with pytest.raises(PermissionError):
            change()
    assert fake.listdir("/srv/readonly") == ["kept"] and fake.listdir("/home/me") == []
    fake.write_atomic("/home/me/f", b"mine")
    st = fake.stat("/home/me/f")
    assert st is not None and (st.uid, st.gid) == (1000, 1000)


def test_an_ordinary_user_cannot_give_files_away_or_change_others_files() -> None:
    fake = _user_host()
    fake.write_atomic("/home/me/f", b"x")
    with pytest.raises(PermissionError) as info:
        fake.chown("/home/me/f", 0, -1)
    assert info.value.errno == errno.EPERM
    with pytest.raises(PermissionError):
        fake.chown("/home/me/f", -1, 42)  # not one of my groups
    fake.chown("/home/me/f", -1, 50)
    with pytest.raises(PermissionError):
        fake.chmod("/etc/shadow", 0o777)
    with pytest.raises(PermissionError):
        fake.utime("/etc/shadow", 0)
    with pytest.raises(PermissionError):
        fake.write_atomic("/home/me/g", b"x", owner=(0, 0))
    assert fake.listdir("/home/me") == ["f"]


def test_stat_through_a_folder_without_search_permission_is_refused() -> None:
    fake = _user_host()
    with pytest.raises(PermissionError):
        fake.stat("/srv/private/f")
    assert not fake.exists("/srv/private/f")


def test_an_ordinary_user_walks_fetches_and_tags_only_what_the_mode_bits_allow(tmp_path: Path) -> None:
    fake = _user_host()
    assert not fake.is_root() and FakeHost().is_root()
    with pytest.raises(AuraError, match="/srv/private"):
        list(fake.walk("/srv"))
    with pytest.raises(PermissionError):
        fake.read_bytes("/etc/shadow")
    assert fake.hash_file("/etc/shadow", "sha256") is None
    fake.set_metadata("/etc/shadow", xattrs={"user.k": b"v"})  # skipped (no write permission), as LocalHost logs
    fake.add_file("/home/me/f", b"x")
    fake.set_metadata("/home/me/f", xattrs={"user.k": b"v"})
    assert fake.read_xattrs("/etc/shadow") == {} and fake.read_xattrs("/home/me/f") == {"user.k": b"v"}
    with pytest.raises(PermissionError):
        fake.set_metadata("/etc/shadow", times_ns=(1, 1))


def test_rename_noreplace_where_the_file_system_cannot_is_einval_and_changes_nothing() -> None:
    fake = FakeHost(noreplace_supported=False)
    fake.add_dir("/srv/staging")
    with pytest.raises(OSError) as info:
        fake.rename_noreplace("/srv/staging", "/srv/restored")
    assert info.value.errno == errno.EINVAL
    assert fake.listdir("/srv") == ["staging"]


# -- the node model ------------------------------------------------------------------------------


def test_folders_count_their_links_as_ext4_does() -> None:
    fake = FakeHost()
    fake.add_dir("/a/b")
    fake.add_dir("/a/c")
    fake.add_file("/a/f")

    def links(path: str) -> int:
        st = fake.stat(path)
        assert st is not None
        return st.nlink

    assert (links("/a"), links("/a/b")) == (4, 2)
    fake.rename("/a/b", "/b")
    assert (links("/a"), links("/")) == (3, 4)
    fake.exchange("/b", "/a/f")
    assert (links("/a"), links("/")) == (4, 3)
    fake.remove_tree("/a")
    assert links("/") == 2


def test_inode_numbers_are_unique_and_the_device_is_the_host_one() -> None:
    fake = FakeHost(dev=7)
    for name in "abc":
        fake.add_file(f"/{name}")
    stats = [fake.stat(f"/{name}") for name in "abc"]
    assert len({st.ino for st in stats if st is not None}) == 3
    assert {st.dev for st in stats if st is not None} == {7}
    root = fake.stat("/")
    assert root is not None and root.ino == 2 and root.size == 4096


def test_a_setgid_folder_passes_its_group_on() -> None:
    fake = FakeHost(uid=1000, gid=1000, groups=[50])
    fake.add_dir("/shared", mode=0o2775)
    fake.chown("/shared", 1000, 50)  # the owner may pick one of its groups
    fake.mkdir("/shared/sub")
    fake.write_atomic("/shared/f", b"x")
    sub, f = fake.stat("/shared/sub"), fake.stat("/shared/f")
    assert sub is not None and f is not None
    assert (sub.gid, f.gid) == (50, 50) and sub.mode & stat.S_ISGID and not f.mode & stat.S_ISGID


def test_times_come_from_the_clock() -> None:
    ticks = itertools.count(1_000)
    fake = FakeHost(clock=lambda: next(ticks))
    fake.add_dir("/d")
    fake.write_atomic("/d/f", b"x")
    f, d = fake.stat("/d/f"), fake.stat("/d")
    assert f is not None and d is not None
    assert 1_000 < f.mtime_ns <= d.mtime_ns < 1_100
    fake.chmod("/d/f", 0o600)
    after = fake.stat("/d/f")
    assert after is not None and after.mtime_ns == f.mtime_ns and after.ctime_ns > f.ctime_ns


def test_exchange_where_the_file_system_cannot_is_einval() -> None:
    fake = FakeHost(exchange_supported=False)
    fake.add_file("/a")
    fake.add_file("/b")
    with pytest.raises(OSError) as info:
        fake.exchange("/a", "/b")
    assert info.value.errno == errno.EINVAL


def test_reading_a_fifo_is_refused_rather_than_waiting_forever() -> None:
    fake = FakeHost()
    fake.make_fifo("/pipe")
    with pytest.raises(OSError) as info:
        fake.read_bytes("/pipe")
    assert info.value.errno == errno.EAGAIN
    assert fake.tree() == {"pipe": ("fifo", 0o600, None)}


def test_more_than_forty_symlinks_in_one_path_is_eloop() -> None:
    fake = FakeHost()
    fake.add_file("/end", b"x")
    fake.add_symlink("/end", "/l0")
    for n in range(1, 41):
        fake.add_symlink(f"/l{n - 1}", f"/l{n}")
    assert fake.read_bytes("/l39") == b"x"
    with pytest.raises(OSError) as info:
        fake.read_bytes("/l40")
    assert info.value.errno == errno.ELOOP


def test_relative_paths_start_at_the_working_folder() -> None:
    fake = FakeHost()
    fake.add_dir("/work")
    fake.cwd = "/work"
    fake.write_atomic("f", b"x")
    assert fake.files("/") == {"work/f": b"x"} and fake.realpath("f") == "/work/f"


# -- helpers -------------------------------------------------------------------------------------


def test_add_file_add_dir_and_add_symlink_build_a_tree_whatever_the_umask() -> None:
    fake = FakeHost(umask=0o077)
    fake.add_file("/srv/app/run.sh", "#!/bin/sh\n", mode=0o755)
    fake.add_file("/srv/app/data.bin", b"\x00\x01", owner=(33, 33))
    fake.add_dir("/srv/app/empty", mode=0o700)
    fake.add_symlink("run.sh", "/srv/app/start")
    assert fake.tree("/srv") == {
        "app": Entry("dir", 0o755),
        "app/data.bin": ("file", 0o644, b"\x00\x01"),
        "app/empty": ("dir", 0o700, None),
        "app/run.sh": ("file", 0o755, b"#!/bin/sh\n"),
        "app/start": ("symlink", 0o777, "run.sh"),
    }
    assert fake.files("/srv/app") == {"data.bin": b"\x00\x01", "run.sh": b"#!/bin/sh\n"}
    owned = fake.stat("/srv/app/data.bin")
    assert owned is not None and (owned.uid, owned.gid) == (33, 33)


def test_helpers_work_for_an_ordinary_user_too() -> None:
    fake = FakeHost(uid=1000, gid=1000)
    fake.add_file("/root-only/secret", b"s", mode=0o600, owner=(0, 0))
    with pytest.raises(PermissionError):
        fake.read_bytes("/root-only/secret")
    assert fake.files("/") == {"root-only/secret": b"s"}
