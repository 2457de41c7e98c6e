"""File hygiene shared by every writer: owner-tagged temporary names, cleaning of the leftovers
of dead processes, and the mode that ordinary files get under the umask.

A temporary file or folder (an atomic write's ``.NAME.<pid>@<host>.XXXXXXXX.tmp``, a data
unpack folder ``NAME.tmp<pid>@<host>``) names its owner, so that a later start can remove the
ones whose owner died (kill -9, power loss) without touching those of a live process, here or
on another host sharing the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

#: a leftover without an owner tag (written by older code) is removed once untouched this long
UNTAGGED_AGE_S = 3600

_TAGGED = re.compile(r"\.(\d+)@([A-Za-z0-9-]+)\.[a-z0-9_]+\.tmp$|\.tmp(\d+)@([A-Za-z0-9-]+)$")
_UNTAGGED = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$|\.tmp(\d+)$")


@lru_cache(maxsize=1)
def host() -> str:
    """This host's name, reduced to letters, digits and ``-`` (a name part that parses back)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "localhost"


def owner_tag(pid: int | None = None, hostname: str | None = None) -> str:
    """``<pid>@<host>``, the owner part of a temporary name (this process by default)."""
    return f"{os.getpid() if pid is None else pid}@{hostname or host()}"


def file_mode() -> int:
    """The mode ``open()`` would give a new file: ``0o666 & ~umask`` (``mkstemp`` gives 0600,
    which collaborators on a shared results folder cannot read)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read the umask by setting it (and back at once)
    os.umask(mask)
    return 0o666 & ~mask


def temp_file(path: Path) -> tuple[int, str]:
    """``mkstemp`` beside ``path`` for an atomic write: named for its owner (so that a start
    after a crash can clean it) and given the umask's mode before the first byte is written."""
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{owner_tag()}.", suffix=".tmp"
    )
    try:
        os.fchmod(fd, file_mode())
    except OSError as exc:  # a file system without modes (some network mounts): keep 0600
        log.debug("could not chmod %s: %s", tmp, exc)
    return fd, tmp


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _stale(entry: os.DirEntry, now: float) -> bool:
    m = _TAGGED.search(entry.name)
    if m:
        pid, owner_host = int(m.group(1) or m.group(3)), m.group(2) or m.group(4)
        return owner_host == host() and pid != os.getpid() and not pid_alive(pid)
    m = _UNTAGGED.search(entry.name)
    if not m:
        return False
    if m.group(1) and (int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1)))):
        return False
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime > UNTAGGED_AGE_S
    except OSError:
        return False


def clean_stale(folders: Iterable[Path]) -> list[Path]:
    """Remove the temporary files and unpack folders directly inside ``folders`` whose owner
    process is dead (tagged with this host and a pid that no longer runs), and untagged ones
    older than :data:`UNTAGGED_AGE_S`. Cheap: one directory listing per folder."""
    removed: list[Path] = []
    now = time.time()
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if ".tmp" not in entry.name or not _stale(entry, now):
                continue
            path = Path(entry.path)
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("could not remove the leftover %s: %s", path, exc)
                continue
            removed.append(path)
    if removed:
        log.info("removed %d leftover(s) of dead processes", len(removed))
    return removed


def leftover_folders(out: Path, cache: Path) -> list[Path]:
    """Where the harness writes temporary files: the output root, the cache and their first
    level of subfolders (records, models, oracle, data, plan), and each run's artifacts."""
    folders: list[Path] = []
    for root in (Path(out), Path(cache)):
        folders.append(root)
        try:
            folders += [Path(e.path) for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
    with contextlib.suppress(OSError):
        artifacts = os.scandir(Path(out) / "artifacts")
        folders += [Path(e.path) for e in artifacts if e.is_dir(follow_symlinks=False)]
    return folders


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock, so that concurrent processes never build the same model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
