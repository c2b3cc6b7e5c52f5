"""The Host contract: every check runs against LocalHost (real files in tmp_path) and FakeHost
(in memory), so that the fake cannot drift from the system calls it stands for.

The fake runs as the same user with the same umasks as this process, at the same path as
tmp_path, so errors, modes, owners and resolved paths compare as they are. Program checks run
real ``sh`` on LocalHost and a script of the same answer on FakeHost: what is compared is what
the host makes of an answer (captured output, the stderr tail, CommandFailed, ToolMissing).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from aura_ops.errors import AuraError, CommandFailed, ToolMissing
from aura_ops.hosts import Command, Host, LocalHost, Result, user_umask
from aura_ops.hosts.base import FOLDER_BATCH, NOT_REGULAR, PutFile, PutResult, StatResult, compile_excludes
from aura_ops.hosts.fake import FakeHost


def _process_umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


@dataclass
class Site:
    """A host and a folder on it to work in."""

    host: Host
    root: str

    def p(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def script(self, argv: Sequence[str], reply: Result) -> None:
        """What the command answers: scripted on the fake, the real program's answer locally."""
        if isinstance(self.host, FakeHost):
            self.host.on(argv, reply)

    def write(self, relative: str, data: bytes = b"x", mode: int = 0o644) -> str:
        path = self.p(relative)
        self.host.write_atomic(path, data, mode=mode)
        return path


@pytest.fixture(params=["local", "fake"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    root = str(tmp_path)
    if request.param == "local":
        yield Site(LocalHost(), root)
        return
    fake = FakeHost(
        uid=os.geteuid(),
        gid=os.getegid(),
        groups=os.getgroups(),
        umask=_process_umask(),
        user_umask=user_umask(),
    )
    fake.add_dir(root, mode=stat.S_IMODE(tmp_path.stat().st_mode))
    yield Site(fake, root)


def _snapshot(host: Host, root: str) -> dict[str, tuple[str, int, bytes | str | None]]:
    """Everything under ``root`` as seen through the protocol alone."""
    found: dict[str, tuple[str, int, bytes | str | None]] = {}
    for name in host.listdir(root):
        path = os.path.join(root, name)
        st = host.stat(path, follow_symlinks=False)
        assert st is not None
        if st.is_symlink:
            found[name] = ("symlink", stat.S_IMODE(st.mode), host.readlink(path))
        elif st.is_dir:
            found[name] = ("dir", stat.S_IMODE(st.mode), None)
            found.update({f"{name}/{k}": v for k, v in _snapshot(host, path).items()})
        else:
            found[name] = ("file", stat.S_IMODE(st.mode), host.read_bytes(path))
    return found


def _errno(info: pytest.ExceptionInfo[OSError]) -> int | None:
    return info.value.errno


# -- the protocol --------------------------------------------------------------------------------


def test_both_hosts_implement_the_protocol(site: Site) -> None:
    assert isinstance(site.host, Host)


def test_rsync_path_is_the_path_and_the_tunnel_the_same_address(site: Site) -> None:
    assert site.host.rsync_path(site.p("a")) == site.p("a")
    with site.host.tunnel("127.0.0.1", 5432) as pair:
        assert pair == ("127.0.0.1", 5432)


# -- programs ------------------------------------------------------------------------------------


def test_run_captures_stdout_and_the_stderr_tail(site: Site) -> None:
    argv = ["sh", "-c", "printf 'hello'; printf 'one\\ntwo\\n' >&2"]
    site.script(argv, Result(0, b"hello", "one\ntwo\n", 0.0))
    done = site.host.run(Command(tuple(argv)))
    assert (done.returncode, done.stdout, done.stderr) == (0, b"hello", "one\ntwo")


def test_run_of_a_failing_command_raises_command_failed_naming_host_code_and_last_line(site: Site) -> None:
    argv = ["sh", "-c", "echo first >&2; echo last words >&2; exit 3"]
    site.script(argv, Result(3, b"", "first\nlast words\n", 0.0))
    with pytest.raises(CommandFailed) as info:
        site.host.run(Command(tuple(argv)))
    assert info.value.returncode == 3
    assert info.value.host == site.host.name
    assert str(info.value).endswith("exited 3: last words")
    done = site.host.run(Command(tuple(argv)), check=False)
    assert (done.returncode, done.stderr) == (3, "first\nlast words")


def test_run_writes_stdout_into_a_given_file_and_captures_nothing(site: Site) -> None:
    argv = ["sh", "-c", "printf data"]
    site.script(argv, Result(0, b"data", "", 0.0))
    with open(os.path.join(site.root, "out"), "w+b") as handle:
        done = site.host.run(Command(tuple(argv)), stdout=handle)
        handle.seek(0)
        assert (done.stdout, handle.read()) == (b"", b"data")


def test_run_feeds_stdin_bytes(site: Site) -> None:
    argv = ["cat"]
    if isinstance(site.host, FakeHost):
        site.host.on(argv, lambda call: Result(0, call.stdin, "", 0.0))
    done = site.host.run(Command(tuple(argv)), stdin=b"abc")
    assert done.stdout == b"abc"


def test_start_streams_stdout_and_wait_reports_the_exit(site: Site) -> None:
    argv = ["sh", "-c", "printf 'streamed'; echo bad >&2; exit 5"]
    site.script(argv, Result(5, b"streamed", "bad\n", 0.0))
    process = site.host.start(Command(tuple(argv)))
    assert process.stdout is not None
    assert process.stdout.read() == b"streamed"
    lines: list[str] = []
    process.drain_in_background(lines.append)
    with pytest.raises(CommandFailed, match="exited 5: bad$"):
        process.wait()
    assert lines == ["bad"]


def test_start_writes_stdout_into_a_given_file(site: Site) -> None:
    argv = ["sh", "-c", "printf dumped"]
    site.script(argv, Result(0, b"dumped", "", 0.0))
    with open(os.path.join(site.root, "dump"), "w+b") as handle:
        process = site.host.start(Command(tuple(argv)), stdout=handle)
        assert process.stdout is None
        assert process.wait().returncode == 0
        handle.seek(0)
        assert handle.read() == b"dumped"


def test_a_missing_program_is_tool_missing_and_which_finds_nothing(site: Site) -> None:
    with pytest.raises(ToolMissing, match="^aura-no-such-program: not (found|executable) on "):
        site.host.run(Command(("aura-no-such-program", "--version")))
    assert site.host.which("aura-no-such-program") is None


# -- reading -------------------------------------------------------------------------------------


def test_write_atomic_then_read_gives_the_content_mode_owner_and_one_link(site: Site) -> None:
    path = site.write("f", b"caf\xc3\xa9\n", mode=0o640)
    assert site.host.read_bytes(path) == b"caf\xc3\xa9\n"
    assert site.host.read_text(path) == "café\n"
    st = site.host.stat(path)
    assert st is not None and st.is_file and not st.is_dir and not st.is_symlink
    assert (stat.S_IMODE(st.mode), st.size, st.uid, st.gid, st.nlink) == (0o640, 6, os.geteuid(), os.getegid(), 1)


def test_write_atomic_sets_the_mode_exactly_whatever_the_umask(site: Site) -> None:
    path = site.write("f", b"x", mode=0o777)
    st = site.host.stat(path)
    assert st is not None and stat.S_IMODE(st.mode) == 0o777


def test_write_atomic_replaces_the_whole_content_and_leaves_no_temporary(site: Site) -> None:
    path = site.write("f", b"a long first version\n" * 100)
    site.host.write_atomic(path, b"short", mode=0o600)
    assert site.host.read_bytes(path) == b"short"
    assert site.host.listdir(site.root) == ["f"]
    st = site.host.stat(path)
    assert st is not None and stat.S_IMODE(st.mode) == 0o600


def test_write_atomic_makes_a_new_inode_so_a_hard_link_keeps_the_old_content(site: Site) -> None:
    path = site.write("f", b"old")
    site.host.link(path, site.p("g"))
    site.host.write_atomic(path, b"new")
    assert (site.host.read_bytes(path), site.host.read_bytes(site.p("g"))) == (b"new", b"old")
    old, new = site.host.stat(site.p("g")), site.host.stat(path)
    assert old is not None and new is not None
    assert (old.nlink, new.nlink) == (1, 1) and old.ino != new.ino


def test_write_atomic_sets_the_mode_last_so_setuid_asked_for_is_kept(site: Site) -> None:
    site.host.write_atomic(site.p("plain"), b"x", mode=0o4755)
    site.host.write_atomic(site.p("owned"), b"x", mode=0o4755, owner=(os.geteuid(), os.getegid()))
    plain, owned = site.host.stat(site.p("plain")), site.host.stat(site.p("owned"))
    assert plain is not None and owned is not None
    # the data and the owner first (each clears setuid), the mode asked for last: a file step
    # that puts a setuid program back gets its mode whole
    assert stat.S_IMODE(plain.mode) == 0o4755
    assert stat.S_IMODE(owned.mode) == 0o4755
    assert (owned.uid, owned.gid) == (os.geteuid(), os.getegid())


def test_write_atomic_as_root_gives_the_file_away(site: Site) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root gives a file to another user")
    site.host.write_atomic(site.p("f"), b"x", owner=(1234, 1235))
    st = site.host.stat(site.p("f"))
    assert st is not None and (st.uid, st.gid) == (1234, 1235)


def test_write_atomic_replaces_a_symlink_not_its_target(site: Site) -> None:
    target = site.write("target", b"keep")
    site.host.symlink("target", site.p("link"))
    site.host.write_atomic(site.p("link"), b"mine")
    assert site.host.read_bytes(target) == b"keep"
    assert site.host.stat(site.p("link"), follow_symlinks=False) is not None
    assert not site.host.is_dir(site.p("link")) and site.host.read_bytes(site.p("link")) == b"mine"
    st = site.host.stat(site.p("link"), follow_symlinks=False)
    assert st is not None and st.is_file


def test_write_atomic_into_a_missing_folder_or_onto_a_folder_fails_and_leaves_nothing(site: Site) -> None:
    with pytest.raises(FileNotFoundError):
        site.host.write_atomic(site.p("missing", "f"), b"x")
    site.host.mkdir(site.p("d"))
    with pytest.raises(IsADirectoryError):
        site.host.write_atomic(site.p("d"), b"x")
    assert site.host.listdir(site.root) == ["d"] and site.host.listdir(site.p("d")) == []


def test_open_write_makes_a_new_file_with_its_mode_exactly_and_open_read_reads_it(site: Site) -> None:
    with site.host.open_write(site.p("f")) as out:
        out.write(b"first ")
        out.write(b"second\n" * 1000)
    with site.host.open_write(site.p("g"), mode=0o666) as out:
        out.write(b"")
    with site.host.open_read(site.p("f")) as reader:
        chunks = []
        while chunk := reader.read(4096):
            chunks.append(chunk)
    assert b"".join(chunks) == b"first " + b"second\n" * 1000
    f, g = site.host.stat(site.p("f")), site.host.stat(site.p("g"))
    assert f is not None and g is not None and f.is_file and g.is_file
    assert (stat.S_IMODE(f.mode), f.size, f.uid, f.nlink) == (0o600, 7006, os.geteuid(), 1)
    assert (stat.S_IMODE(g.mode), g.size) == (0o666, 0)  # whatever the umask


def test_open_write_exclusive_refuses_a_file_or_a_symlink_there_and_changes_nothing(site: Site) -> None:
    path = site.write("f", b"kept", mode=0o640)
    site.host.symlink("nowhere", site.p("dangling"))
    for taken in (path, site.p("dangling")):
        with pytest.raises(FileExistsError) as refused:
            site.host.open_write(taken)
        assert _errno(refused) == errno.EEXIST
    assert site.host.read_bytes(path) == b"kept" and not site.host.exists(site.p("nowhere"))
    assert site.host.listdir(site.root) == ["dangling", "f"]


def test_open_write_not_exclusive_empties_the_file_there_keeping_its_inode_giving_it_the_mode(site: Site) -> None:
    path = site.write("f", b"a long first version\n" * 10, mode=0o640)
    before = site.host.stat(path)
    with site.host.open_write(path, exclusive=False) as out:
        out.write(b"short")
    after = site.host.stat(path)
    assert site.host.read_bytes(path) == b"short"
    assert before is not None and after is not None
    assert (after.ino, stat.S_IMODE(after.mode)) == (before.ino, 0o600)


def test_open_read_and_open_write_fail_as_the_system_does(site: Site) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        site.host.open_read(site.p("missing"))
    assert _errno(missing) == errno.ENOENT
    with pytest.raises(IsADirectoryError):
        site.host.open_read(site.root)
    with pytest.raises(FileNotFoundError):
        site.host.open_write(site.p("missing", "f"))
    site.host.mkdir(site.p("d"))
    with pytest.raises(FileExistsError):
        site.host.open_write(site.p("d"))
    with pytest.raises(IsADirectoryError):
        site.host.open_write(site.p("d"), exclusive=False)
    assert site.host.listdir(site.root) == ["d"] and site.host.listdir(site.p("d")) == []


def test_a_reader_reads_on_as_the_file_grows_and_sees_what_was_flushed(site: Site) -> None:
    """The dump compressor follows a data file pg_dump is still writing."""
    out = site.host.open_write(site.p("growing"))
    try:
        reader = site.host.open_read(site.p("growing"))
        with reader:
            assert reader.read(1 << 20) == b""
            out.write(b"one\n")
            out.flush()
            assert reader.read(1 << 20) == b"one\n"
            out.write(b"two\n" * 5000)
            out.flush()
            got = b""
            while chunk := reader.read(1 << 20):
                got += chunk
            assert got == b"two\n" * 5000
    finally:
        out.close()


def test_cpu_count_is_a_positive_number(site: Site) -> None:
    count = site.host.cpu_count()
    assert isinstance(count, int) and count >= 1


def test_reading_a_missing_file_or_a_folder_fails_as_the_system_does(site: Site) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        site.host.read_bytes(site.p("missing"))
    assert _errno(missing) == errno.ENOENT and missing.value.filename == site.p("missing")
    with pytest.raises(IsADirectoryError):
        site.host.read_bytes(site.root)
    path = site.write("f")
    with pytest.raises(NotADirectoryError):
        site.host.read_bytes(os.path.join(path, "below"))
    with pytest.raises(UnicodeDecodeError):
        site.host.read_text(site.write("latin", b"caf\xe9"))


def test_listdir_is_sorted_and_fails_on_a_file_or_nothing(site: Site) -> None:
    for name in ("b", "a", "C", ".hidden"):
        site.write(name)
    assert site.host.listdir(site.root) == [".hidden", "C", "a", "b"]
    with pytest.raises(NotADirectoryError):
        site.host.listdir(site.p("a"))
    with pytest.raises(FileNotFoundError):
        site.host.listdir(site.p("missing"))


def test_stat_is_none_for_nothing_and_follows_symlinks_only_when_asked(site: Site) -> None:
    path = site.write("f", b"12345")
    site.host.symlink("f", site.p("link"))
    assert site.host.stat(site.p("missing")) is None
    assert site.host.stat(os.path.join(path, "below")) is None
    followed, itself = site.host.stat(site.p("link")), site.host.stat(site.p("link"), follow_symlinks=False)
    direct = site.host.stat(path)
    assert followed is not None and itself is not None and direct is not None
    assert followed.ino == direct.ino and followed.size == 5
    assert itself.is_symlink and itself.size == len("f") and itself.ino != direct.ino
    assert stat.S_IMODE(itself.mode) == 0o777


def test_exists_is_dir_and_is_file_on_files_folders_and_dangling_links(site: Site) -> None:
    site.write("f")
    site.host.mkdir(site.p("d"))
    site.host.symlink("nowhere", site.p("dangling"))
    site.host.symlink("d", site.p("to-dir"))
    facts = {
        name: (site.host.exists(site.p(name)), site.host.is_dir(site.p(name)), site.host.is_file(site.p(name)))
        for name in ("f", "d", "dangling", "to-dir", "missing")
    }
    assert facts == {
        "f": (True, False, True),
        "d": (True, True, False),
        "dangling": (True, False, False),
        "to-dir": (True, True, False),
        "missing": (False, False, False),
    }


def test_a_symlink_loop_is_eloop_for_stat_and_read(site: Site) -> None:
    site.host.symlink("b", site.p("a"))
    site.host.symlink("a", site.p("b"))
    with pytest.raises(OSError) as info:
        site.host.stat(site.p("a"))
    assert _errno(info) == errno.ELOOP
    with pytest.raises(OSError) as read:
        site.host.read_bytes(site.p("a"))
    assert _errno(read) == errno.ELOOP
    assert site.host.exists(site.p("a")) and not site.host.is_file(site.p("a"))


def test_access_follows_the_mode_bits(site: Site) -> None:
    plain = site.write("plain", mode=0o644)
    program = site.write("program", mode=0o755)
    assert site.host.access(plain, os.R_OK) and site.host.access(plain, os.W_OK)
    assert not site.host.access(plain, os.X_OK)
    assert site.host.access(program, os.X_OK) and site.host.access(site.root, os.X_OK | os.W_OK)
    assert not site.host.access(site.p("missing"), os.F_OK)


def test_root_reads_and_writes_whatever_the_mode_others_do_not(site: Site) -> None:
    locked = site.write("locked", b"secret", mode=0o000)
    is_root = os.geteuid() == 0
    assert site.host.access(locked, os.R_OK) is is_root and site.host.access(locked, os.W_OK) is is_root
    assert not site.host.access(locked, os.X_OK)
    if is_root:
        assert site.host.read_bytes(locked) == b"secret"
    else:
        with pytest.raises(PermissionError):
            site.host.read_bytes(locked)


def test_a_read_only_folder_refuses_changes_to_all_but_root(site: Site) -> None:
    site.host.mkdir(site.p("ro"))
    site.write("ro/kept")
    site.write("ro/doomed")
    site.host.chmod(site.p("ro"), 0o555)
    changes: dict[str, Callable[[], object]] = {
        "write_atomic": lambda: site.write("ro/new"),
        "mkdir": lambda: site.host.mkdir(site.p("ro", "d")),
        "symlink": lambda: site.host.symlink("x", site.p("ro", "l")),
        "link": lambda: site.host.link(site.p("ro", "kept"), site.p("ro", "k2")),
        "rename": lambda: site.host.rename(site.p("ro", "kept"), site.p("moved")),
        "remove": lambda: site.host.remove(site.p("ro", "doomed")),
    }
    try:
        for name, change in changes.items():
            if os.geteuid() == 0:
                change()
            else:
                with pytest.raises(PermissionError):
                    change()
                    pytest.fail(name)
        expected = ["d", "k2", "l", "new"] if os.geteuid() == 0 else ["doomed", "kept"]
        assert site.host.listdir(site.p("ro")) == expected
    finally:
        site.host.chmod(site.p("ro"), 0o755)


def test_a_folder_without_search_permission_hides_its_entries_from_all_but_root(site: Site) -> None:
    site.host.mkdir(site.p("closed"))
    site.write("closed/f", b"in")
    site.host.chmod(site.p("closed"), 0o600)
    try:
        if os.geteuid() == 0:
            assert site.host.read_bytes(site.p("closed", "f")) == b"in"
            assert site.host.stat(site.p("closed", "f")) is not None
        else:
            with pytest.raises(PermissionError):
                site.host.stat(site.p("closed", "f"))
            assert not site.host.exists(site.p("closed", "f"))
            assert site.host.listdir(site.p("closed")) == ["f"]  # reading names needs r only
    finally:
        site.host.chmod(site.p("closed"), 0o755)


# -- folders -------------------------------------------------------------------------------------


def test_mkdir_applies_the_umask_and_refuses_what_exists(site: Site) -> None:
    site.host.mkdir(site.p("d"), mode=0o777)
    st = site.host.stat(site.p("d"))
    assert st is not None and st.is_dir and stat.S_IMODE(st.mode) == 0o777 & ~_process_umask()
    with pytest.raises(FileExistsError) as info:
        site.host.mkdir(site.p("d"))
    assert _errno(info) == errno.EEXIST
    site.host.mkdir(site.p("d"), exist_ok=True)
    site.write("f")
    with pytest.raises(FileExistsError):
        site.host.mkdir(site.p("f"), exist_ok=True)
    with pytest.raises(FileNotFoundError):
        site.host.mkdir(site.p("missing", "d"))


def test_mkdir_exist_ok_accepts_a_symlink_to_a_folder_but_not_a_dangling_one(site: Site) -> None:
    site.host.mkdir(site.p("d"))
    site.host.symlink("d", site.p("link"))
    site.host.mkdir(site.p("link"), exist_ok=True)
    site.host.symlink("nowhere", site.p("dangling"))
    with pytest.raises(FileExistsError):
        site.host.mkdir(site.p("dangling"), exist_ok=True)
    with pytest.raises(FileExistsError):
        site.host.mkdir(site.p("dangling"), parents=True, exist_ok=True)


def test_mkdir_with_parents_makes_the_chain_and_stops_at_a_file(site: Site) -> None:
    site.host.mkdir(site.p("a", "b", "c"), mode=0o700, parents=True)
    assert site.host.is_dir(site.p("a", "b", "c"))
    leaf, middle = site.host.stat(site.p("a", "b", "c")), site.host.stat(site.p("a", "b"))
    assert leaf is not None and middle is not None
    assert stat.S_IMODE(leaf.mode) == 0o700 & ~_process_umask()
    assert stat.S_IMODE(middle.mode) == 0o777 & ~_process_umask()
    with pytest.raises(FileExistsError):
        site.host.mkdir(site.p("a", "b"), parents=True)
    site.host.mkdir(site.p("a", "b"), parents=True, exist_ok=True)
    site.host.mkdir(site.p("x", "y") + "/", parents=True)
    assert site.host.is_dir(site.p("x", "y"))
    site.write("file")
    with pytest.raises(NotADirectoryError):
        site.host.mkdir(site.p("file", "x", "y"), parents=True, exist_ok=True)


def test_make_user_dirs_gives_every_new_folder_the_user_umask(site: Site) -> None:
    site.host.make_user_dirs(site.p("x", "y"))
    for path in (site.p("x"), site.p("x", "y")):
        st = site.host.stat(path)
        assert st is not None and stat.S_IMODE(st.mode) == 0o777 & ~user_umask()
    site.host.chmod(site.p("x"), 0o700)
    site.host.make_user_dirs(site.p("x", "y"))
    st = site.host.stat(site.p("x"))
    assert st is not None and stat.S_IMODE(st.mode) == 0o700


def test_adding_or_removing_an_entry_moves_the_folder_mtime(site: Site) -> None:
    changes: dict[str, Callable[[], object]] = {
        "mkdir": lambda: site.host.mkdir(site.p("d")),
        "rmdir": lambda: site.host.rmdir(site.p("d")),
        "make_fifo": lambda: site.host.make_fifo(site.p("pipe")),
        "remove": lambda: site.host.remove(site.p("pipe")),
        "symlink": lambda: site.host.symlink("x", site.p("link")),
        "write_atomic": lambda: site.write("f"),
        "link": lambda: site.host.link(site.p("f"), site.p("g")),
    }
    for name, change in changes.items():
        site.host.utime(site.root, 1_000_000_000)
        change()
        st = site.host.stat(site.root)
        assert st is not None and st.mtime_ns > 1_000_000_000, name


# -- rename, exchange, remove --------------------------------------------------------------------


def test_rename_replaces_a_file_and_keeps_the_inode(site: Site) -> None:
    source = site.write("new", b"new")
    site.write("old", b"old")
    before = site.host.stat(source)
    site.host.rename(source, site.p("old"))
    after = site.host.stat(site.p("old"))
    assert before is not None and after is not None and before.ino == after.ino
    assert site.host.read_bytes(site.p("old")) == b"new" and site.host.listdir(site.root) == ["old"]


def test_rename_of_a_folder_onto_an_empty_folder_replaces_it(site: Site) -> None:
    site.host.mkdir(site.p("a"))
    site.write("a/inside", b"1")
    site.host.mkdir(site.p("empty"))
    site.host.rename(site.p("a"), site.p("empty"))
    assert site.host.listdir(site.root) == ["empty"]
    assert site.host.read_bytes(site.p("empty", "inside")) == b"1"


def test_rename_of_a_folder_onto_a_non_empty_folder_fails_with_enotempty(site: Site) -> None:
    site.host.mkdir(site.p("a"))
    site.host.mkdir(site.p("b"))
    site.write("b/keep")
    with pytest.raises(OSError) as info:
        site.host.rename(site.p("a"), site.p("b"))
    assert _errno(info) == errno.ENOTEMPTY
    assert (info.value.filename, info.value.filename2) == (site.p("a"), site.p("b"))
    assert site.host.listdir(site.p("b")) == ["keep"] and site.host.is_dir(site.p("a"))


def test_rename_across_kinds_and_into_itself_fails_as_the_system_does(site: Site) -> None:
    site.host.mkdir(site.p("d"))
    site.write("f")
    with pytest.raises(IsADirectoryError):
        site.host.rename(site.p("f"), site.p("d"))
    with pytest.raises(NotADirectoryError):
        site.host.rename(site.p("d"), site.p("f"))
    with pytest.raises(OSError) as inside:
        site.host.rename(site.p("d"), site.p("d", "sub"))
    assert _errno(inside) == errno.EINVAL
    with pytest.raises(FileNotFoundError):
        site.host.rename(site.p("missing"), site.p("x"))
    with pytest.raises(FileNotFoundError):
        site.host.rename(site.p("f"), site.p("missing", "x"))
    folder = ("dir", 0o777 & ~_process_umask(), None)
    assert _snapshot(site.host, site.root) == {"d": folder, "f": ("file", 0o644, b"x")}


def test_rename_between_two_links_of_one_file_changes_nothing(site: Site) -> None:
    path = site.write("f")
    site.host.link(path, site.p("g"))
    site.host.rename(path, site.p("g"))
    assert site.host.listdir(site.root) == ["f", "g"]


def test_rename_moves_a_symlink_itself(site: Site) -> None:
    site.write("target", b"t")
    site.host.symlink("target", site.p("link"))
    site.host.mkdir(site.p("d"))
    site.host.rename(site.p("link"), site.p("moved"))
    assert site.host.readlink(site.p("moved")) == "target" and site.host.read_bytes(site.p("moved")) == b"t"


def test_exchange_swaps_a_file_and_a_folder(site: Site) -> None:
    site.write("a", b"file")
    site.host.mkdir(site.p("b"))
    site.write("b/inside", b"1")
    site.host.exchange(site.p("a"), site.p("b"))
    assert site.host.is_dir(site.p("a")) and site.host.read_bytes(site.p("b")) == b"file"
    assert site.host.read_bytes(site.p("a", "inside")) == b"1"


def test_exchange_with_a_missing_path_fails_and_changes_nothing(site: Site) -> None:
    site.write("a", b"a")
    with pytest.raises(FileNotFoundError) as info:
        site.host.exchange(site.p("a"), site.p("missing"))
    assert _errno(info) == errno.ENOENT
    with pytest.raises(FileNotFoundError):
        site.host.exchange(site.p("missing"), site.p("a"))
    assert site.host.listdir(site.root) == ["a"] and site.host.read_bytes(site.p("a")) == b"a"


def test_exchange_of_a_folder_with_its_own_child_is_einval(site: Site) -> None:
    site.host.mkdir(site.p("a", "b"), parents=True)
    for first, second in ((site.p("a"), site.p("a", "b")), (site.p("a", "b"), site.p("a"))):
        with pytest.raises(OSError) as info:
            site.host.exchange(first, second)
        assert _errno(info) == errno.EINVAL


def test_remove_unlinks_a_file_or_a_symlink_never_a_folder(site: Site) -> None:
    target = site.write("target")
    site.host.symlink("target", site.p("link"))
    site.host.remove(site.p("link"))
    assert site.host.exists(target) and not site.host.exists(site.p("link"))
    site.host.remove(target)
    assert site.host.listdir(site.root) == []
    site.host.mkdir(site.p("d"))
    with pytest.raises(IsADirectoryError) as info:
        site.host.remove(site.p("d"))
    assert _errno(info) == errno.EISDIR and site.host.is_dir(site.p("d"))


def test_remove_of_nothing_fails_unless_missing_is_ok(site: Site) -> None:
    with pytest.raises(FileNotFoundError):
        site.host.remove(site.p("missing"))
    site.host.remove(site.p("missing"), missing_ok=True)
    site.host.remove(site.p("no-folder", "missing"), missing_ok=True)
    path = site.write("f")
    with pytest.raises(NotADirectoryError):
        site.host.remove(os.path.join(path, "below"), missing_ok=True)


def test_rmdir_removes_only_an_empty_folder(site: Site) -> None:
    site.host.mkdir(site.p("d"))
    site.write("d/f")
    with pytest.raises(OSError) as full:
        site.host.rmdir(site.p("d"))
    assert _errno(full) == errno.ENOTEMPTY
    site.host.symlink("d", site.p("link"))
    with pytest.raises(NotADirectoryError):
        site.host.rmdir(site.p("link"))
    with pytest.raises(NotADirectoryError):
        site.host.rmdir(site.p("d", "f"))
    with pytest.raises(FileNotFoundError):
        site.host.rmdir(site.p("missing"))
    site.host.remove(site.p("d", "f"))
    site.host.rmdir(site.p("d"))
    assert site.host.listdir(site.root) == ["link"]


def test_remove_tree_removes_everything_below_but_never_follows_a_link(site: Site) -> None:
    outside = site.write("outside", b"keep")
    site.host.mkdir(site.p("t", "a", "b"), parents=True)
    site.write("t/a/b/deep", b"1")
    site.write("t/top", b"2", mode=0o400)
    site.host.symlink(outside, site.p("t", "a", "link"))
    site.host.symlink(site.p("t"), site.p("to-tree"))
    site.host.remove_tree(site.p("to-tree"))
    assert site.host.is_dir(site.p("t"))
    site.host.remove_tree(site.p("t"))
    site.host.remove_tree(site.p("missing"))
    assert site.host.listdir(site.root) == ["outside"] and site.host.read_bytes(outside) == b"keep"
    site.host.remove_tree(outside)
    assert site.host.listdir(site.root) == []


# -- symlinks, metadata, links, FIFOs ------------------------------------------------------------


def test_symlink_and_readlink_keep_the_target_as_written(site: Site) -> None:
    site.host.symlink("../somewhere/else", site.p("link"))
    assert site.host.readlink(site.p("link")) == "../somewhere/else"
    with pytest.raises(FileExistsError):
        site.host.symlink("other", site.p("link"))
    with pytest.raises(FileNotFoundError):
        site.host.symlink("x", site.p("missing", "link"))
    with pytest.raises(FileNotFoundError):
        site.host.readlink(site.p("missing"))
    with pytest.raises(OSError) as info:
        site.host.readlink(site.write("f"))
    assert _errno(info) == errno.EINVAL


def test_replace_symlink_repoints_in_one_step_and_leaves_no_temporary(site: Site) -> None:
    site.host.mkdir(site.p("v1"))
    site.host.mkdir(site.p("v2"))
    site.host.replace_symlink("v1", site.p("current"))
    site.host.replace_symlink("v2", site.p("current"))
    assert site.host.readlink(site.p("current")) == "v2"
    assert site.host.listdir(site.root) == ["current", "v1", "v2"]
    with pytest.raises(IsADirectoryError):
        site.host.replace_symlink("v2", site.p("v1"))
    assert site.host.listdir(site.root) == ["current", "v1", "v2"]


def test_realpath_resolves_symlinks_and_keeps_what_is_missing(site: Site) -> None:
    site.host.mkdir(site.p("real", "sub"), parents=True)
    site.host.symlink("real/sub", site.p("rel"))
    site.host.symlink(site.p("rel"), site.p("abs"))
    site.host.symlink("..", site.p("real", "sub", "up"))
    site.host.symlink("a", site.p("loop-b"))
    site.host.symlink("loop-b", site.p("a"))
    cases = {
        "abs": "real/sub",
        "abs/up": "real",
        "abs/up/sub/../sub/missing/x": "real/sub/missing/x",
        "rel/../sub": "real/sub",
        "a/x": "a/x",
    }
    for given, expected in cases.items():
        assert site.host.realpath(site.p(given)) == site.p(expected), given


def test_chmod_sets_the_bits_of_the_target_and_refuses_not_following(site: Site) -> None:
    path = site.write("f", mode=0o600)
    site.host.symlink("f", site.p("link"))
    site.host.chmod(site.p("link"), 0o4751)
    st = site.host.stat(path)
    assert st is not None and stat.S_IMODE(st.mode) == 0o4751
    with pytest.raises(NotImplementedError):
        site.host.chmod(site.p("link"), 0o600, follow_symlinks=False)


def test_chown_keeps_the_owner_and_clears_setuid_on_a_file(site: Site) -> None:
    path = site.write("f", mode=0o4755)
    site.host.chown(path, os.geteuid(), os.getegid())
    st = site.host.stat(path)
    assert st is not None and (st.uid, st.gid, stat.S_IMODE(st.mode)) == (os.geteuid(), os.getegid(), 0o755)
    site.host.chmod(path, 0o2745)  # setgid without group execute: a mandatory-locking mark, kept
    site.host.chown(path, -1, -1)
    st = site.host.stat(path)
    assert st is not None and stat.S_IMODE(st.mode) == 0o2745
    site.host.mkdir(site.p("d"))
    site.host.chmod(site.p("d"), 0o2775)
    site.host.chown(site.p("d"), -1, os.getegid())
    st = site.host.stat(site.p("d"))
    assert st is not None and stat.S_IMODE(st.mode) == 0o2775


def test_utime_sets_mtime_of_the_target_or_of_the_link(site: Site) -> None:
    path = site.write("f")
    site.host.symlink("f", site.p("link"))
    site.host.utime(site.p("link"), 1_500_000_000_123_456_789)
    site.host.utime(site.p("link"), 1_000_000_000_000_000_000, follow_symlinks=False)
    target, link = site.host.stat(path), site.host.stat(site.p("link"), follow_symlinks=False)
    assert target is not None and link is not None
    assert (target.mtime_ns, link.mtime_ns) == (1_500_000_000_123_456_789, 1_000_000_000_000_000_000)
    with pytest.raises(FileNotFoundError):
        site.host.utime(site.p("missing"), 0)


def test_link_makes_hard_links_that_count(site: Site) -> None:
    first, second = site.write("a", b"A"), site.write("b", b"B")
    site.host.symlink("a", site.p("sym"))
    for existing, new in [(first, site.p("a2")), (second, site.p("b2")), (site.p("sym"), site.p("sym2"))]:
        site.host.link(existing, new)
    a, a2 = site.host.stat(first), site.host.stat(site.p("a2"))
    assert a is not None and a2 is not None and (a.ino, a.nlink) == (a2.ino, 2)
    assert site.host.readlink(site.p("sym2")) == "a"
    sym = site.host.stat(site.p("sym"), follow_symlinks=False)
    assert sym is not None and sym.nlink == 2
    site.host.remove(site.p("a2"))
    a = site.host.stat(first)
    assert a is not None and a.nlink == 1


def test_link_refuses_a_taken_name_a_folder_and_nothing(site: Site) -> None:
    path = site.write("a")
    site.write("taken")
    site.host.mkdir(site.p("d"))
    with pytest.raises(FileExistsError):
        site.host.link(path, site.p("taken"))
    with pytest.raises(PermissionError) as info:
        site.host.link(site.p("d"), site.p("d2"))
    assert _errno(info) == errno.EPERM
    with pytest.raises(FileNotFoundError):
        site.host.link(site.p("missing"), site.p("x"))
    site.host.link(path, site.p("made"))
    with pytest.raises(FileExistsError):
        site.host.link(path, site.p("made"))
    assert site.host.listdir(site.root) == ["a", "d", "made", "taken"]


def test_a_fifo_writer_is_none_until_a_reader_opens_the_pipe(site: Site) -> None:
    site.host.make_fifo(site.p("pipe"))
    assert site.host.open_fifo_writer(site.p("pipe")) is None  # nobody reads it: never blocks
    with pytest.raises(FileNotFoundError):
        site.host.open_fifo_writer(site.p("missing"))
    site.host.mkdir(site.p("folder"))
    with pytest.raises(IsADirectoryError):
        site.host.open_fifo_writer(site.p("folder"))


def test_make_fifo_makes_a_private_fifo_once(site: Site) -> None:
    site.host.make_fifo(site.p("pipe"))
    st = site.host.stat(site.p("pipe"))
    assert st is not None and stat.S_ISFIFO(st.mode) and not st.is_file
    assert stat.S_IMODE(st.mode) == 0o600 & ~_process_umask()
    with pytest.raises(FileExistsError):
        site.host.make_fifo(site.p("pipe"))


def test_disk_usage_answers_for_a_path_and_fails_for_nothing(site: Site) -> None:
    free, total = site.host.disk_usage(site.root)
    assert 0 < free <= total
    with pytest.raises(FileNotFoundError):
        site.host.disk_usage(site.p("missing"))


def test_trailing_slash_means_a_folder(site: Site) -> None:
    path = site.write("f")
    site.host.mkdir(site.p("d"))
    site.host.symlink("d", site.p("link"))
    assert site.host.stat(path + "/") is None
    assert site.host.is_dir(site.p("link") + "/")
    through = site.host.stat(site.p("link") + "/", follow_symlinks=False)
    assert through is not None and through.is_dir
    with pytest.raises(NotADirectoryError):
        site.host.remove(path + "/")
    with pytest.raises(NotADirectoryError):
        site.host.rmdir(site.p("link") + "/")


def test_a_sequence_of_operations_leaves_the_same_tree(site: Site) -> None:
    host = site.host
    host.make_user_dirs(site.p("app", "releases", "1.0"))
    host.write_atomic(site.p("app", "releases", "1.0", "app.py"), b"print(1)\n", mode=0o755)
    host.replace_symlink("releases/1.0", site.p("app", "current"))
    staging = site.p("app", ".staging-1")
    host.mkdir(staging, mode=0o700)
    host.write_atomic(os.path.join(staging, "app.py"), b"print(2)\n", mode=0o755)
    host.link(os.path.join(staging, "app.py"), os.path.join(staging, "copy.py"))
    host.rename(staging, site.p("app", "releases", "2.0"))
    host.replace_symlink("releases/2.0", site.p("app", "current"))
    host.remove_tree(site.p("app", "releases", "1.0"))
    user = 0o777 & ~user_umask()
    assert _snapshot(host, site.root) == {
        "app": ("dir", user, None),
        "app/current": ("symlink", 0o777, "releases/2.0"),
        "app/releases": ("dir", user, None),
        "app/releases/2.0": ("dir", 0o700 & ~_process_umask(), None),
        "app/releases/2.0/app.py": ("file", 0o755, b"print(2)\n"),
        "app/releases/2.0/copy.py": ("file", 0o755, b"print(2)\n"),
    }
    assert host.read_bytes(site.p("app", "current", "app.py")) == b"print(2)\n"


# -- bulk operations for file trees --------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _listed(site: Site, relative: str) -> StatResult:
    """The status ``walk`` gives for one entry below the site's root."""
    return dict(site.host.walk(site.root))[relative]


def test_walk_lists_each_folder_in_name_order_before_what_is_below_and_skips_the_excluded(site: Site) -> None:
    for folder in ("a", "a/sub", "b"):
        site.host.mkdir(site.p(folder))
    for relative in ("a/x", "a/sub/y", "a/sub/also.log", "b/z", "c", "skip.log"):
        site.write(relative, relative.encode())
    site.host.symlink("a", site.p("l"))
    excluded: list[str] = []
    walked = list(site.host.walk(site.root, compile_excludes(["*.log", "b/", "a/x"]), on_excluded=excluded.append))
    assert [relative for relative, _ in walked] == ["a", "c", "l", "a/sub", "a/sub/y"]
    assert excluded == ["b", "skip.log", "a/x", "a/sub/also.log"]
    found = dict(walked)
    assert stat.S_ISLNK(found["l"].st_mode) and found["l"].st_size == 1  # the link itself, never followed
    assert stat.S_ISDIR(found["a"].st_mode) and stat.S_ISREG(found["c"].st_mode) and found["c"].st_size == 1
    c = site.host.stat(site.p("c"))
    assert c is not None
    st = found["c"]
    assert (st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns) == (
        c.ino,
        c.dev,
        c.nlink,
        c.uid,
        c.gid,
        c.mtime_ns,
        c.ctime_ns,
    )


def test_walk_reports_what_vanishes_while_it_reads_and_goes_on(site: Site) -> None:
    for folder in ("a", "c"):
        site.host.mkdir(site.p(folder))
    site.write("a/inner")
    site.write("b")
    site.write("c/deep")
    vanished: list[str] = []
    seen = []
    for relative, _ in site.host.walk(site.root, on_vanished=vanished.append):
        seen.append(relative)
        if relative == "a":  # its entries are not read yet, the root's next one not looked at
            site.host.remove_tree(site.p("a"))
            site.host.remove(site.p("b"))
    assert seen == ["a", "c", "c/deep"]
    assert vanished == [site.p("b"), site.p("a")]
    missing: list[str] = []
    assert list(site.host.walk(site.p("missing"), on_vanished=missing.append)) == []
    assert missing == [site.p("missing")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_walk_of_an_unreadable_folder_is_an_error_naming_it(site: Site) -> None:
    site.host.mkdir(site.p("closed"))
    site.host.chmod(site.p("closed"), 0o000)
    try:
        with pytest.raises(AuraError, match="closed"):
            list(site.host.walk(site.root))
    finally:
        site.host.chmod(site.p("closed"), 0o700)


def test_xattrs_are_set_and_read_back_on_files_and_folders_but_a_symlink_takes_none(site: Site) -> None:
    path = site.write("f")
    site.host.mkdir(site.p("d"))
    site.host.symlink("f", site.p("l"))
    for target in (path, site.p("d"), site.p("l")):
        site.host.set_metadata(target, xattrs={"user.origin": b"aura", "user.empty": b""})
    assert site.host.read_xattrs(path) == {"user.origin": b"aura", "user.empty": b""}
    assert site.host.read_xattrs(site.p("d")) == {"user.origin": b"aura", "user.empty": b""}
    assert site.host.read_xattrs(site.p("l")) == {}
    assert site.host.read_xattrs(site.p("missing")) == {}
    assert site.host.read_xattrs(site.write("plain")) == {}


def test_set_metadata_sets_the_mode_and_the_times_of_a_symlink_itself(site: Site) -> None:
    path = site.write("f")
    site.host.symlink("f", site.p("l"))
    before = site.host.stat(path)
    site.host.set_metadata(path, owner=(os.geteuid(), os.getegid()), mode=0o640, times_ns=(1_000, 2_000_000_000))
    site.host.set_metadata(site.p("l"), times_ns=(5_000, 7_000_000_000))
    st, link = site.host.stat(path), site.host.stat(site.p("l"), follow_symlinks=False)
    assert st is not None and link is not None and before is not None
    assert (stat.S_IMODE(st.mode), st.atime_ns, st.mtime_ns, st.uid) == (0o640, 1_000, 2_000_000_000, os.geteuid())
    assert (link.atime_ns, link.mtime_ns) == (5_000, 7_000_000_000)
    assert st.ino == before.ino


def test_hash_file_hashes_a_file_and_is_none_for_nothing_or_a_symlink(site: Site) -> None:
    path = site.write("f", b"hash me")
    site.host.symlink("f", site.p("l"))
    assert site.host.hash_file(path, "sha256") == _sha256(b"hash me")
    assert site.host.hash_file(path, "md5") == hashlib.md5(b"hash me").hexdigest()  # noqa: S324
    assert site.host.hash_file(site.p("missing"), "sha256") is None
    assert site.host.hash_file(site.p("l"), "sha256") is None


def test_link_if_unchanged_links_the_file_the_walk_listed(site: Site) -> None:
    path = site.write("f", b"same")
    site.host.set_metadata(path, xattrs={"user.k": b"v"})
    listed = _listed(site, "f")
    assert site.host.link_if_unchanged(
        path, site.p("linked"), listed=listed, digest=_sha256(b"same"), xattrs={"user.k": b"v"}, algorithm="sha256"
    )
    st, linked = site.host.stat(path), site.host.stat(site.p("linked"))
    assert st is not None and linked is not None and (linked.ino, linked.nlink) == (st.ino, 2)


def test_link_if_unchanged_links_nothing_when_anything_changed(site: Site) -> None:
    path = site.write("f", b"same")
    listed = _listed(site, "f")
    digest = _sha256(b"same")

    def links(**changes: object) -> bool:
        given: dict[str, object] = {"listed": listed, "digest": digest, "xattrs": {}, "algorithm": "sha256"}
        given.update(changes)
        return site.host.link_if_unchanged(path, site.p("new"), **given)  # type: ignore[arg-type]

    assert not links(digest=_sha256(b"other"))
    assert not links(xattrs={"user.k": b"v"})
    site.host.set_metadata(path, times_ns=(1, 1_000_000_000))  # written (or touched) since it was listed
    assert not links()
    assert links(listed=_listed(site, "f"))
    site.host.remove(site.p("new"))
    site.write("f", b"same")  # replaced: another inode, same content
    assert not links(listed=listed)
    site.host.remove(path)
    assert not links(listed=listed)
    site.host.symlink("elsewhere", path)
    assert not links(listed=listed)
    assert site.host.listdir(site.root) == ["f"]  # nothing left behind


def test_link_links_a_symlink_itself_and_refuses_a_taken_name(site: Site) -> None:
    path = site.write("f")
    site.host.symlink("f", site.p("l"))
    site.host.link(site.p("l"), site.p("l2"))
    l2 = site.host.stat(site.p("l2"), follow_symlinks=False)
    assert l2 is not None and l2.is_symlink and l2.nlink == 2
    with pytest.raises(FileExistsError):
        site.host.link(path, site.p("l2"))
    with pytest.raises(FileNotFoundError):
        site.host.link(site.p("missing"), site.p("m"))


def test_rename_noreplace_renames_onto_a_free_name_and_refuses_a_taken_one(site: Site) -> None:
    site.host.mkdir(site.p("staging"))
    site.write("staging/f", b"new")
    site.write("taken", b"old")
    site.host.mkdir(site.p("empty"))
    before = site.host.stat(site.p("staging"))
    for taken in ("taken", "empty"):
        with pytest.raises(FileExistsError):
            site.host.rename_noreplace(site.p("staging"), site.p(taken))
    assert site.host.read_bytes(site.p("taken")) == b"old"
    site.host.rename_noreplace(site.p("staging"), site.p("restored"))
    after = site.host.stat(site.p("restored"))
    assert before is not None and after is not None and after.ino == before.ino
    assert site.host.read_bytes(site.p("restored", "f")) == b"new"
    with pytest.raises(FileNotFoundError):
        site.host.rename_noreplace(site.p("staging"), site.p("other"))
    assert site.host.listdir(site.root) == ["empty", "restored", "taken"]


def test_syncfs_takes_a_folder_and_fails_for_a_file_or_nothing(site: Site) -> None:
    site.host.syncfs(site.root)
    with pytest.raises(NotADirectoryError):
        site.host.syncfs(site.write("f"))
    with pytest.raises(FileNotFoundError):
        site.host.syncfs(site.p("missing"))


def test_is_root_is_whether_the_user_is_root(site: Site) -> None:
    assert site.host.is_root() == (os.geteuid() == 0)


# -- files store additions: lstat, scandir, open_regular, open_read, open_write ------------------


def test_lstat_gives_the_raw_fields_of_the_entry_itself_and_fails_for_nothing(site: Site) -> None:
    path = site.write("f", b"four", mode=0o640)
    site.host.symlink("f", site.p("l"))
    st, listed = site.host.lstat(path), _listed(site, "f")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640 and st.st_size == 4
    assert (st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns) == (
        listed.st_ino,
        listed.st_dev,
        listed.st_nlink,
        listed.st_uid,
        listed.st_gid,
        listed.st_mtime_ns,
        listed.st_ctime_ns,
    )
    link = site.host.lstat(site.p("l"))
    assert stat.S_ISLNK(link.st_mode) and link.st_size == 1 and link.st_ino != st.st_ino  # never followed
    with pytest.raises(FileNotFoundError):
        site.host.lstat(site.p("missing"))
    with pytest.raises(NotADirectoryError):
        site.host.lstat(site.p("f", "below"))


def test_scandir_lists_every_entry_with_its_type_and_status_never_following_a_link(site: Site) -> None:
    site.host.mkdir(site.p("d"))
    site.write("d/inner")
    site.write("f", b"abc")
    site.host.symlink("d", site.p("l"))
    entries = {entry.name: entry for entry in site.host.scandir(site.root)}
    assert sorted(entries) == ["d", "f", "l"]
    assert entries["d"].path == site.p("d") and entries["f"].path == site.p("f")
    assert [entries[name].is_dir(follow_symlinks=False) for name in ("d", "f", "l")] == [True, False, False]
    assert entries["l"].is_dir()  # followed only when asked
    assert stat.S_ISLNK(entries["l"].stat(follow_symlinks=False).st_mode)
    assert entries["f"].stat(follow_symlinks=False).st_size == 3
    assert entries["f"].stat(follow_symlinks=False).st_ino == site.host.lstat(site.p("f")).st_ino
    assert [entry.name for entry in site.host.scandir(site.p("d"))] == ["inner"]
    with pytest.raises(FileNotFoundError):
        site.host.scandir(site.p("missing"))
    with pytest.raises(NotADirectoryError):
        site.host.scandir(site.p("f"))


def test_open_regular_reads_a_file_and_refuses_a_symlink_a_fifo_a_folder_and_nothing(site: Site) -> None:
    path = site.write("f", b"stored content")
    reader = site.host.open_regular(path)
    assert reader is not None
    with reader:
        assert reader.read() == b"stored content"
    site.host.symlink("f", site.p("l"))
    with pytest.raises(OSError) as info:
        site.host.open_regular(site.p("l"))  # never followed
    assert _errno(info) == errno.ELOOP
    site.host.make_fifo(site.p("fifo"))
    assert site.host.open_regular(site.p("fifo")) is None  # opened without waiting for a writer
    site.host.mkdir(site.p("d"))
    assert site.host.open_regular(site.p("d")) is None
    with pytest.raises(FileNotFoundError):
        site.host.open_regular(site.p("missing"))


def test_open_read_streams_a_file_following_a_link_and_fails_for_nothing(site: Site) -> None:
    site.write("f", b"line one\nline two\n")
    site.host.symlink("f", site.p("l"))
    with site.host.open_read(site.p("f")) as reader:
        assert list(reader) == [b"line one\n", b"line two\n"]
    with site.host.open_read(site.p("l")) as reader:
        assert reader.read() == b"line one\nline two\n"
    with pytest.raises(FileNotFoundError):
        site.host.open_read(site.p("missing"))
    site.host.mkdir(site.p("d"))
    with pytest.raises(IsADirectoryError):
        site.host.open_read(site.p("d"))


def test_open_write_makes_a_new_file_with_its_mode_exactly_and_refuses_a_taken_name(site: Site) -> None:
    path = site.p("index")
    with site.host.open_write(path, mode=0o640) as writer:
        writer.write(b"first ")
        writer.write(b"second")
    assert site.host.read_bytes(path) == b"first second"
    st = site.host.stat(path)
    assert st is not None and stat.S_IMODE(st.mode) == 0o640 and st.is_file
    with pytest.raises(FileExistsError):
        site.host.open_write(path)
    assert site.host.read_bytes(path) == b"first second"  # untouched
    with site.host.open_write(path, mode=0o600, exclusive=False) as writer:
        writer.write(b"new")
    assert site.host.read_bytes(path) == b"new"
    st = site.host.stat(path)
    assert st is not None and stat.S_IMODE(st.mode) == 0o600
    with pytest.raises(FileNotFoundError):
        site.host.open_write(site.p("missing", "index"))


def test_open_read_refuses_a_fifo_at_once_instead_of_waiting_for_a_writer(site: Site) -> None:
    # a FIFO planted in a repository where an index or a dump file should be: verify, list and
    # restore read those files through open_read, and must report them, not wait forever
    site.host.make_fifo(site.p("fifo"))
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            site.host.open_read(site.p("fifo")).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # blocked in open(2): give it a writer so the thread ends
        os.close(os.open(site.p("fifo"), os.O_WRONLY))
        reader.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], OSError), "open_read of a FIFO blocked or succeeded"
    assert outcome[0].errno == errno.EAGAIN


# -- files restores: put_files, a folder at a time --------------------------------------------------


def _put(name: str, mode: int = 0o640, mtime_ns: int = 1_600_000_000_123_456_789, **more: object) -> PutFile:
    owner = more.get("owner")
    xattrs = more.get("xattrs", {})
    return PutFile(name, mode, owner, xattrs, (1_700_000_000_000_000_000, mtime_ns))  # type: ignore[arg-type]


def test_put_files_copies_each_local_file_into_a_new_host_file_with_its_metadata_and_hash(
    site: Site, tmp_path_factory: pytest.TempPathFactory
) -> None:
    control = tmp_path_factory.mktemp("control")
    contents = {"small": b"small", "empty": b"", "large": os.urandom((3 << 20) + 5)}  # more than one chunk
    for name, data in contents.items():
        (control / name).write_bytes(data)
    site.host.mkdir(site.p("new"))
    owner = (4321, 4322) if site.host.is_root() else None
    files = [
        _put("small", 0o4750, owner=owner, xattrs={"user.k": b"v"}),
        _put("empty", 0o600, mtime_ns=5),
        _put("large", 0o644),
    ]
    results = site.host.put_files(str(control), site.p("new"), files, "sha256")
    assert results == [PutResult(_sha256(data), len(data)) for data in contents.values()]
    for item in files:
        path = site.p("new", item.name)
        st = site.host.lstat(path)  # (before it is read: reading may move its atime)
        assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_atime_ns) == (item.mode, *item.times_ns[::-1])
        assert site.host.read_bytes(path) == contents[item.name]
        assert st.st_nlink == 1 and st.st_ino != os.stat(control / item.name).st_ino  # a copy, never a link
        if item.owner is not None:
            assert (st.st_uid, st.st_gid) == item.owner  # given before the mode: setuid kept
    assert site.host.read_xattrs(site.p("new", "small")) == {"user.k": b"v"}
    with pytest.raises(FileExistsError):
        site.host.put_files(str(control), site.p("new"), [_put("small")], "sha256")
    assert site.host.read_bytes(site.p("new", "small")) == b"small"


def test_put_files_reports_a_source_it_cannot_copy_and_makes_nothing_for_it(
    site: Site, tmp_path_factory: pytest.TempPathFactory
) -> None:
    control = tmp_path_factory.mktemp("control")
    (control / "file").write_bytes(b"file")
    (control / "folder").mkdir()
    os.mkfifo(control / "fifo")
    os.symlink("file", control / "link")
    site.host.mkdir(site.p("new"))
    names = ["missing", "folder", "fifo", "link", "file"]
    results = site.host.put_files(str(control), site.p("new"), [_put(name) for name in names], "sha256")
    assert results == [
        PutResult("", 0, errno.ENOENT),
        PutResult("", 0, NOT_REGULAR),
        PutResult("", 0, NOT_REGULAR),  # never waited on for a writer
        PutResult("", 0, errno.ELOOP),  # a symlink is not followed
        PutResult(_sha256(b"file"), 4),
    ]
    assert site.host.listdir(site.p("new")) == ["file"]


def test_put_files_never_goes_through_a_symlink_in_place_of_a_folder(
    site: Site, tmp_path_factory: pytest.TempPathFactory
) -> None:
    control = tmp_path_factory.mktemp("control")
    (control / "real").mkdir()
    (control / "real" / "f").write_bytes(b"f")
    os.symlink("real", control / "source-link")
    site.host.mkdir(site.p("new"))
    assert site.host.put_files(str(control / "source-link"), site.p("new"), [_put("f")], "sha256") == [
        PutResult("", 0, errno.ENOTDIR)  # (O_DIRECTORY | O_NOFOLLOW on a symlink)
    ]
    assert site.host.put_files(str(control / "gone"), site.p("new"), [_put("f"), _put("g")], "sha256") == [
        PutResult("", 0, errno.ENOENT),
        PutResult("", 0, errno.ENOENT),
    ]
    site.host.symlink("new", site.p("new-link"))
    for target, code in ((site.p("new-link"), errno.ENOTDIR), (site.p("missing"), errno.ENOENT)):
        with pytest.raises(OSError) as info:
            site.host.put_files(str(control / "real"), target, [_put("f")], "sha256")
        assert _errno(info) == code
    assert site.host.listdir(site.p("new")) == []


def test_put_files_copies_a_local_file_as_it_was_opened_when_it_grows_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LocalHost reads a file only up to its size when opened (fstat), also when it grows
    between that and the first read: what it returns and writes is the file as opened, never
    more (the caller compares it with the index, as for any file)."""
    from aura_ops.hosts import local

    control, new = tmp_path / "control", tmp_path / "new"
    control.mkdir()
    new.mkdir()
    original = {"small": b"small", "large": os.urandom((1 << 20) + 7)}  # (within one read, and past one)
    for name, data in original.items():
        (control / name).write_bytes(data)
    real = local._copy_into

    def grown_once_opened(reader: int, writer: int, algorithm: str, expected: int) -> PutResult:
        with open(f"/proc/self/fd/{reader}", "ab") as appended:
            appended.write(b"appended after the open")
        return real(reader, writer, algorithm, expected)

    monkeypatch.setattr(local, "_copy_into", grown_once_opened)
    results = LocalHost().put_files(str(control), str(new), [_put(name) for name in original], "sha256")
    assert results == [PutResult(_sha256(data), len(data)) for data in original.values()]
    assert {name: (new / name).read_bytes() for name in original} == original


# -- incremental files snapshots: a folder at a time ------------------------------------------------


def test_walk_folders_gives_each_folder_with_its_entries_in_walk_order_and_skips_the_excluded(site: Site) -> None:
    for folder in ("a", "a/sub", "a-b", "b"):
        site.host.mkdir(site.p(folder))
    for relative in ("a/x", "a/sub/y", "a/sub/also.log", "a-b/w", "b/z", "c", "skip.log"):
        site.write(relative, relative.encode())
    site.host.symlink("a", site.p("l"))
    excluded: list[str] = []
    folders = list(
        site.host.walk_folders(site.root, compile_excludes(["*.log", "b/", "a/x"]), on_excluded=excluded.append)
    )
    assert [(folder, [name for name, _ in entries]) for folder, entries in folders] == [
        ("", ["a", "a-b", "c", "l"]),
        ("a", ["sub"]),
        ("a/sub", ["y"]),
        ("a-b", ["w"]),
    ]
    assert excluded == ["b", "skip.log", "a/x", "a/sub/also.log"]
    flat = [
        (f"{folder}/{name}" if folder else name, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        for folder, entries in folders
        for name, st in entries
    ]
    walked = [
        (relative, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        for relative, st in site.host.walk(site.root, compile_excludes(["*.log", "b/", "a/x"]))
    ]
    assert flat == walked  # the same entries, statuses and order as walk


def test_walk_folders_reports_a_folder_gone_or_replaced_by_a_symlink_as_vanished_never_following_it(
    site: Site,
) -> None:
    for folder in ("top", "top/a", "top/c", "top/outside"):
        site.host.mkdir(site.p(folder))
    site.write("top/a/inner")
    site.write("top/c/deep")
    site.write("top/outside/secret")
    site.host.symlink("top", site.p("via"))  # the root itself may be a symlink: it is followed
    vanished: list[str] = []
    seen = []
    for folder, entries in site.host.walk_folders(site.p("via"), on_vanished=vanished.append):
        seen.append((folder, [name for name, _ in entries]))
        if folder == "":  # listed, not yet descended into: one folder goes, one becomes a symlink
            site.host.remove_tree(site.p("top", "a"))
            site.host.remove_tree(site.p("top", "c"))
            site.host.symlink("outside", site.p("top", "c"))
    assert seen == [("", ["a", "c", "outside"]), ("outside", ["secret"])]
    assert vanished == [site.p("via", "a"), site.p("via", "c")]
    missing: list[str] = []
    assert list(site.host.walk_folders(site.p("missing"), on_vanished=missing.append)) == []
    assert missing == [site.p("missing")]


def test_walk_folders_never_follows_a_folder_above_the_one_it_opens_replaced_by_a_symlink(site: Site) -> None:
    """A folder listed, then replaced by a symlink before what is below it is read: what is
    below is vanished, never read through the symlink (O_NOFOLLOW covers only a path's last
    name: opening ``a/b`` would follow a symlink at ``a``)."""
    for folder in ("top", "top/a", "top/a/b", "elsewhere", "elsewhere/b"):
        site.host.mkdir(site.p(folder))
    site.write("top/a/b/inner")
    site.write("elsewhere/b/secret")
    vanished: list[str] = []
    seen = []
    for folder, entries in site.host.walk_folders(site.p("top"), on_vanished=vanished.append):
        seen.append((folder, [name for name, _ in entries]))
        if folder == "a":  # listed (b in it), b not yet read: a becomes a symlink to elsewhere
            site.host.remove_tree(site.p("top", "a"))
            site.host.symlink(site.p("elsewhere"), site.p("top", "a"))
    assert seen == [("", ["a"]), ("a", ["b"])]
    assert vanished == [site.p("top", "a", "b")]


def test_walk_folders_gives_a_large_folder_in_parts_of_at_most_batch_entries_then_what_is_below_it(
    site: Site,
) -> None:
    """A folder of more names than ``batch`` comes in consecutive parts of at most ``batch``
    entries, names ascending across them, its subfolders after its last part (issue 12: one
    folder of 100,000 files was handed over whole, 250 MB)."""
    names = [f"f{number:02d}" for number in range(30)]
    for name in names:
        site.write(name, name.encode())
    for folder in ("d05", "z", "z/inner"):
        site.host.mkdir(site.p(folder))
    site.write("d05/in", b"in")
    site.write("z/inner/deep", b"deep")
    site.write("f07.log", b"excluded, in the first part")
    excluded: list[str] = []
    parts = [
        (folder, [name for name, _ in entries])
        for folder, entries in site.host.walk_folders(
            site.root, compile_excludes(["*.log"]), on_excluded=excluded.append, batch=7
        )
    ]
    root_names = sorted([*names, "d05", "f07.log", "z"])  # 33 names: parts of 7, 7, 7, 7, 5 names
    assert [folder for folder, _ in parts] == ["", "", "", "", "", "d05", "z", "z/inner"]
    assert [len(entries) for _, entries in parts] == [7, 6, 7, 7, 5, 1, 1, 1]  # (f07.log excluded)
    assert [name for folder, entries in parts if folder == "" for name in entries] == [
        name for name in root_names if name != "f07.log"
    ]
    assert excluded == ["f07.log"]
    whole = [(folder, [name for name, _ in entries]) for folder, entries in site.host.walk_folders(site.root)]
    assert [name for folder, entries in parts if folder == "" for name in entries] == [
        name for name in whole[0][1] if name != "f07.log"
    ]  # the same entries, in the same order, as one part of the default size
    statuses = {
        name: st.st_ino for folder, entries in site.host.walk_folders(site.root, batch=4) for name, st in entries
    }
    assert statuses["f29"] == site.host.lstat(site.p("f29")).st_ino


def test_walk_folders_by_default_gives_a_folder_of_more_than_folder_batch_names_in_two_parts(site: Site) -> None:
    for number in range(FOLDER_BATCH + 1):
        site.write(f"f{number:05d}")
    parts = [(folder, len(entries)) for folder, entries in site.host.walk_folders(site.root)]
    assert parts == [("", FOLDER_BATCH), ("", 1)]
    site.host.mkdir(site.p("empty"))
    assert [(folder, list(entries)) for folder, entries in site.host.walk_folders(site.p("empty"))] == [("", [])]


def test_walk_folders_reports_a_name_gone_before_its_part_is_read_as_vanished(site: Site) -> None:
    for number in range(10):
        site.write(f"f{number}")
    vanished: list[str] = []
    parts = []
    for _, entries in site.host.walk_folders(site.root, on_vanished=vanished.append, batch=4):
        parts.append([name for name, _ in entries])
        if len(parts) == 1:  # the folder was listed whole: f6 goes before its part is read
            site.host.remove(site.p("f6"))
            site.write("f5", b"rewritten after the listing")
    assert parts == [["f0", "f1", "f2", "f3"], ["f4", "f5", "f7"], ["f8", "f9"]]
    assert vanished == [site.p("f6")]


def test_link_names_links_each_name_and_returns_those_it_could_not_with_their_errno(site: Site) -> None:
    site.host.mkdir(site.p("old"))
    site.host.mkdir(site.p("new"))
    for name in ("f", "g", "taken"):
        site.write(f"old/{name}", name.encode())
    site.host.symlink("f", site.p("old", "l"))
    site.write("new/taken", b"already there")
    failed = site.host.link_names(site.p("old"), site.p("new"), ["f", "missing", "taken", "g", "l"])
    assert failed == [("missing", errno.ENOENT), ("taken", errno.EEXIST)]
    for name in ("f", "g"):
        assert site.host.lstat(site.p("new", name)).st_ino == site.host.lstat(site.p("old", name)).st_ino
    assert site.host.lstat(site.p("new", "l")).st_ino == site.host.lstat(site.p("old", "l")).st_ino  # the link itself
    assert site.host.read_bytes(site.p("new", "taken")) == b"already there"


def test_link_names_never_goes_through_a_symlink_in_place_of_a_folder(site: Site) -> None:
    site.host.mkdir(site.p("real"))
    site.host.mkdir(site.p("new"))
    site.write("real/f", b"f")
    site.host.symlink("real", site.p("old"))
    assert site.host.link_names(site.p("old"), site.p("new"), ["f"]) == [("f", errno.ENOTDIR)]
    assert site.host.link_names(site.p("gone"), site.p("new"), ["f", "g"]) == [("f", errno.ENOENT), ("g", errno.ENOENT)]
    assert not site.host.exists(site.p("new", "f"))
    site.host.symlink("new", site.p("new-link"))
    with pytest.raises(OSError) as info:
        site.host.link_names(site.p("real"), site.p("new-link"), ["f"])
    assert _errno(info) == errno.ENOTDIR  # (O_DIRECTORY | O_NOFOLLOW on a symlink)
    assert not site.host.exists(site.p("new", "f"))


def _folder_listing(site: Site, relative_dir: str) -> dict[str, StatResult]:
    """The entries ``walk_folders`` gives for one folder below the site's root."""
    return dict(dict(site.host.walk_folders(site.root))[relative_dir])


def test_fetch_files_copies_a_folders_files_into_new_local_files_with_their_metadata(
    site: Site, tmp_path_factory: pytest.TempPathFactory
) -> None:
    control = tmp_path_factory.mktemp("control")
    site.host.mkdir(site.p("src"))
    contents = {"empty": b"", "small": b"tiny", "chunk": b"c" * (1 << 20), "above": os.urandom((1 << 20) + 1)}
    for name, data in contents.items():
        site.write(f"src/{name}", data, mode=0o640)
    site.host.set_metadata(site.p("src", "small"), mode=0o751, xattrs={"user.k": b"v"}, times_ns=(5_000, 7_000_000_000))
    listed = _folder_listing(site, "src")
    names = ["above", "chunk", "empty", "small"]
    found = site.host.fetch_files(
        site.p("src"), str(control), [(name, listed[name]) for name in names], "sha256", owners=True
    )
    for name, copied in zip(names, found, strict=True):
        assert not isinstance(copied, int)
        data, st, local = contents[name], listed[name], os.stat(control / name)
        assert (copied.digest, copied.size, copied.stat.st_ino) == (_sha256(data), len(data), st.st_ino)
        assert (control / name).read_bytes() == data  # whole, past one buffer and at its edge
        assert stat.S_IMODE(local.st_mode) == stat.S_IMODE(st.st_mode)
        assert (local.st_atime_ns, local.st_mtime_ns, local.st_uid) == (st.st_atime_ns, st.st_mtime_ns, st.st_uid)
    assert stat.S_IMODE(os.stat(control / "small").st_mode) == 0o751
    assert os.stat(control / "small").st_mtime_ns == 7_000_000_000
    assert found[3].xattrs == {"user.k": b"v"}  # type: ignore[union-attr]
    assert os.getxattr(control / "small", "user.k") == b"v"
    with pytest.raises(FileExistsError):
        site.host.fetch_files(site.p("src"), str(control), [("small", listed["small"])], "sha256", owners=False)


def test_fetch_files_reports_what_is_gone_or_no_longer_a_file_and_takes_a_replaced_file_as_it_is_now(
    site: Site, tmp_path_factory: pytest.TempPathFactory
) -> None:
    control = tmp_path_factory.mktemp("control")
    site.host.mkdir(site.p("src"))
    for name in ("f", "gone", "l", "pipe", "d", "swapped"):
        site.write(f"src/{name}", name.encode())
    listed = _folder_listing(site, "src")
    site.host.remove(site.p("src", "gone"))
    for name in ("l", "pipe", "d", "swapped"):
        site.host.remove(site.p("src", name))
    site.host.symlink("f", site.p("src", "l"))
    site.host.make_fifo(site.p("src", "pipe"))
    site.host.mkdir(site.p("src", "d"))
    site.write("src/swapped", b"another file", mode=0o604)  # a new inode since it was listed
    names = ["f", "gone", "l", "pipe", "d", "swapped"]
    found = site.host.fetch_files(
        site.p("src"), str(control), [(name, listed[name]) for name in names], "sha256", owners=False
    )
    assert found[1:5] == [errno.ENOENT, errno.EINVAL, errno.EINVAL, errno.EINVAL]
    assert sorted(os.listdir(control)) == ["f", "swapped"]
    swapped = found[5]
    assert not isinstance(swapped, int) and swapped.stat.st_ino != listed["swapped"].st_ino
    assert (control / "swapped").read_bytes() == b"another file"
    assert stat.S_IMODE(os.stat(control / "swapped").st_mode) == 0o604  # the metadata of the file copied
    site.host.symlink(site.p("src"), site.p("via"))
    for folder in ("via", "missing"):  # never through a symlink in the folder's place
        assert site.host.fetch_files(site.p(folder), str(control), [("f", listed["f"])], "sha256", owners=False) == [
            errno.ENOENT
        ]
    with pytest.raises(FileNotFoundError):
        site.host.fetch_files(site.p("src"), str(control / "nowhere"), [("f", listed["f"])], "sha256", owners=False)


def test_a_waiting_fifo_writer_opens_when_a_reader_comes_and_feeds_it(site: Site) -> None:
    site.host.make_fifo(site.p("pipe"))
    opened: list[object] = []
    writer = threading.Thread(target=lambda: opened.append(site.host.open_fifo_writer_waiting(site.p("pipe"))))
    writer.start()
    writer.join(0.2)
    assert writer.is_alive() and not opened  # no reader yet: it waits (in open, not polling)
    reader = site.host.open_fifo_reader(site.p("pipe"))  # never waits, and releases the writer
    writer.join(10)
    assert not writer.is_alive() and len(opened) == 1
    stream = opened[0]
    assert hasattr(stream, "write") and hasattr(stream, "close")
    stream.write(b"row 1\n")
    stream.flush()
    assert reader.read(100) == b"row 1\n"
    late = site.host.open_fifo_writer_waiting(site.p("pipe"))  # a reader is open: no wait
    reader.close()
    with pytest.raises(BrokenPipeError):
        late.write(b"x" * (1 << 17))
        late.flush()
    for end in (stream, late):
        with contextlib.suppress(BrokenPipeError):
            end.close()  # type: ignore[attr-defined]


def test_a_waiting_fifo_writer_is_released_by_a_reader_that_opened_and_closed(site: Site) -> None:
    site.host.make_fifo(site.p("pipe"))
    opened: list[object] = []
    writer = threading.Thread(target=lambda: opened.append(site.host.open_fifo_writer_waiting(site.p("pipe"))))
    writer.start()
    writer.join(0.2)
    assert writer.is_alive()
    site.host.open_fifo_reader(site.p("pipe")).close()
    writer.join(10)
    assert not writer.is_alive() and len(opened) == 1
    opened[0].close()  # type: ignore[attr-defined]


def test_fifo_opens_fail_as_the_system_call_does(site: Site) -> None:
    with pytest.raises(FileNotFoundError):
        site.host.open_fifo_writer_waiting(site.p("missing"))
    with pytest.raises(FileNotFoundError):
        site.host.open_fifo_reader(site.p("missing"))
    site.host.mkdir(site.p("folder"))
    with pytest.raises(IsADirectoryError):
        site.host.open_fifo_writer_waiting(site.p("folder"))


def test_fast_temp_root_is_a_writable_folder_and_the_temp_root_when_no_memory_file_system_has_room(
    site: Site,
) -> None:
    if isinstance(site.host, FakeHost):
        site.host.add_dir("/dev")
        site.host.add_dir("/dev/shm", mode=0o1777)
    fast = site.host.fast_temp_root(1 << 20)
    if fast != site.host.temp_root():
        assert site.host.is_dir(fast) and site.host.access(fast, os.W_OK | os.X_OK)
        folder = f"{fast}/aura-test-{os.getpid()}"
        site.host.mkdir(folder, mode=0o700)
        site.host.write_atomic(f"{folder}/x", b"x")
        assert site.host.read_bytes(f"{folder}/x") == b"x"
        site.host.remove_tree(folder)
    if isinstance(site.host, FakeHost):
        assert fast == "/dev/shm"
    assert site.host.fast_temp_root(1 << 62) == site.host.temp_root()  # no room anywhere: the usual place


def test_local_fast_temp_root_leaves_a_chosen_tmpdir_in_charge(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir reads TMPDIR again
    assert LocalHost().fast_temp_root(1) == str(tmp_path)


def test_fetch_files_takes_a_folder_reached_through_a_symlink_above_it_as_gone(
    site: Site, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A folder on the way to the one listed replaced by a symlink since (only the last name is
    opened without following one): with the identity the folder was listed with, nothing is read
    from where the symlink leads, though the names there are the ones listed."""
    control = tmp_path_factory.mktemp("control")
    for top in ("src/x", "outside"):
        site.host.mkdir(site.p(top), parents=True)
        site.host.mkdir(site.p(top, "sec"))
    site.write("src/x/sec/key", b"mine")
    site.write("outside/sec/key", b"someone else's secret", mode=0o600)
    listed = _folder_listing(site, "src/x/sec")
    sec = _folder_listing(site, "src/x")["sec"]
    folder_id = (sec.st_dev, sec.st_ino)
    site.host.rename(site.p("src", "x"), site.p("src", "x.old"))
    site.host.symlink(site.p("outside"), site.p("src", "x"))
    found = site.host.fetch_files(
        site.p("src", "x", "sec"), str(control), [("key", listed["key"])], "sha256", owners=False, folder_id=folder_id
    )
    assert found == [errno.ENOENT]
    assert os.listdir(control) == []
    site.host.rename(site.p("src", "x"), site.p("src", "x.link"))
    site.host.rename(site.p("src", "x.old"), site.p("src", "x"))  # the folder listed, where it was
    (copied,) = site.host.fetch_files(
        site.p("src", "x", "sec"), str(control), [("key", listed["key"])], "sha256", owners=False, folder_id=folder_id
    )
    assert not isinstance(copied, int) and (control / "key").read_bytes() == b"mine"


def test_fetch_files_given_the_folders_identity_follows_a_symlink_in_its_place_to_that_folder(
    site: Site, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A source root given as a symlink (/var/www -> /srv/www) is walked through it: its own
    files must be copied through it too (they were all reported gone, and left out); when it
    leads to another folder than the one listed, the root is read as it is now, as the walk does."""
    control = tmp_path_factory.mktemp("control")
    site.host.mkdir(site.p("real"))
    site.write("real/f", b"top-level file")
    site.host.symlink(site.p("real"), site.p("root-link"))
    listed = _folder_listing(site, "real")
    real = _folder_listing(site, "")["real"]
    (copied,) = site.host.fetch_files(
        site.p("root-link"),
        str(control),
        [("f", listed["f"])],
        "sha256",
        owners=False,
        folder_id=(real.st_dev, real.st_ino),
        root=site.p("root-link"),
    )
    assert not isinstance(copied, int) and (control / "f").read_bytes() == b"top-level file"
    site.host.mkdir(site.p("other"))
    site.write("other/f", b"another folder's")
    site.host.remove(site.p("root-link"))
    site.host.symlink(site.p("other"), site.p("root-link"))  # leads elsewhere now: read as it is now
    os.unlink(control / "f")
    (found,) = site.host.fetch_files(
        site.p("root-link"),
        str(control),
        [("f", listed["f"])],
        "sha256",
        owners=False,
        folder_id=(real.st_dev, real.st_ino),
        root=site.p("root-link"),
    )
    assert not isinstance(found, int) and (control / "f").read_bytes() == b"another folder's"


def test_fetch_files_below_a_root_reads_a_folder_replaced_since_and_never_one_reached_through_a_symlink(
    site: Site, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With ``root``, a folder that is not the one listed is opened again as ``walk_folders``
    does, a name at a time below the root: a folder on the way replaced by another real folder
    is read (the walk listed that one), one replaced by a symlink is gone."""
    control = tmp_path_factory.mktemp("control")
    for top in ("src/x/sec", "outside/sec"):
        site.host.mkdir(site.p(top), parents=True)
    site.write("outside/sec/key", b"someone else's secret")
    sec = _folder_listing(site, "src/x")["sec"]
    old_id = (sec.st_dev, sec.st_ino)
    site.host.rename(site.p("src", "x"), site.p("src", "x.old"))
    site.host.mkdir(site.p("src", "x", "sec"), parents=True)  # replaced: another folder, a new file
    site.write("src/x/sec/key", b"new file in a new folder")
    listed = _folder_listing(site, "src/x/sec")
    folder, root = site.p("src", "x", "sec"), site.p("src")
    (copied,) = site.host.fetch_files(
        folder, str(control), [("key", listed["key"])], "sha256", owners=False, folder_id=old_id, root=root
    )
    assert not isinstance(copied, int) and (control / "key").read_bytes() == b"new file in a new folder"
    os.unlink(control / "key")
    site.host.rename(site.p("src", "x"), site.p("src", "x.new"))
    site.host.symlink(site.p("outside"), site.p("src", "x"))
    found = site.host.fetch_files(
        folder, str(control), [("key", listed["key"])], "sha256", owners=False, folder_id=old_id, root=root
    )
    assert found == [errno.ENOENT] and os.listdir(control) == []
