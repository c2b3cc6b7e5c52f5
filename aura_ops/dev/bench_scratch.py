"""The work folder of ``make bench``: an ext4 file system of its own, in an image file beside
the work folder, on a loop device (direct I/O, so the page cache holds each block once).

Why: this machine's root file system is ext4 without a journal, mounted with online ``discard``:
deleting 20,000 small files takes about 40 s there (1.2 s on a fresh ext4), and for a minute or
more after a large deletion creating inodes is several times slower, for every tool alike. On
its own file system the bench can delete what it moved aside between tables (untimed, followed
by ``sync``), and at the end it unmounts and deletes one image file instead of millions of files.
``--on-host`` measures on the host's file system instead (nothing is deleted before the end).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType


class Scratch:
    """Context manager: ``folder`` is a fresh ext4 of up to ``size_gb`` GB (a sparse image) while
    inside. Requires root; raises SystemExit when the host lacks the space."""

    def __init__(self, folder: Path, size_gb: int) -> None:
        self.folder = folder
        self.image = folder.with_name(folder.name + ".img")
        self.size_gb = size_gb
        self.device = ""

    def __enter__(self) -> Scratch:
        free_gb = shutil.disk_usage(self.folder.parent).free // 10**9
        if free_gb < self.size_gb + 5:
            raise SystemExit(f"bench: needs {self.size_gb + 5} GB free beside {self.folder}, found {free_gb} GB")
        release(self.folder)  # a run killed before its cleanup
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.image, "wb") as image:
            image.truncate(self.size_gb * 10**9)
        self.device = _run("losetup", "--find", "--show", "--direct-io=on", str(self.image))
        try:
            # no lazy inode-table init: the kernel would zero the tables in the background, during the
            # timed runs; an inode per 8 KiB: 3 rounds of 4 restores of 200,000 files need 3 million
            init = "lazy_itable_init=0,lazy_journal_init=0"
            _run("mkfs.ext4", "-q", "-F", "-m", "0", "-i", "8192", "-E", init, self.device)
            _run("mount", self.device, str(self.folder))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        release(self.folder)
        if self.device:
            subprocess.run(["losetup", "-d", self.device], check=False, capture_output=True)
            self.device = ""
        self.image.unlink(missing_ok=True)


def release(folder: Path) -> None:
    """Unmount ``folder`` if a file system is mounted there, and detach its loop device."""
    if not os.path.ismount(folder):
        return
    device = _run("findmnt", "--noheadings", "--output", "SOURCE", "--target", str(folder))
    if subprocess.run(["umount", str(folder)], check=False, capture_output=True).returncode != 0:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)  # busy: detached when freed
    if device.startswith("/dev/loop"):
        subprocess.run(["losetup", "-d", device], check=False, capture_output=True)


def _run(*argv: str) -> str:
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return done.stdout.strip()
