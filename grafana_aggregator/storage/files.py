# -*- test-case-name: tests.test_storage_hardening -*-
"""Durable file writes and private folders: a file is replaced whole or not at all, and neither a file nor a
folder ever exists with looser permissions than it ends up with.

Modes are given at creation (`os.open` and `os.mkdir` with the mode), never fixed afterwards, so there is no
moment in which another user could open a secret.  The umask can only take bits away: a folder whose owner
bits it took is given them back (that widens nothing for anyone else).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable

#: The longest file name (in bytes) of the file systems the daemon runs on (ext4, xfs, btrfs, tmpfs).
NAME_MAX = 255
#: What every temporary file's name holds; storage removes files with it (and a leading dot) at open.
TEMPORARY_MARK = ".tmp-"
#: Owner-only folders.
PRIVATE_FOLDER_MODE = 0o700
#: Owner-only files.
PRIVATE_FILE_MODE = 0o600
#: Hex digits of SHA-256 in a shortened temporary file name.
_TEMPORARY_DIGEST = 16


def shorten(name: str, budget: int) -> str:
    """The longest prefix of name that takes at most `budget` bytes of UTF-8 (never half a character)."""
    return name.encode("utf-8")[:budget].decode("utf-8", "ignore")


def temporary_path(path: str) -> str:
    """Where write_atomic writes before renaming over path: `.<name>.tmp-<pid>` in the same folder.

    When that would be longer than NAME_MAX, the name is shortened and a digest of the whole name added,
    so each target still has its own temporary file.
    """
    folder, name = os.path.split(path)
    suffix = f"{TEMPORARY_MARK}{os.getpid()}"
    temporary = f".{name}{suffix}"
    if len(temporary.encode("utf-8")) > NAME_MAX:
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:_TEMPORARY_DIGEST]
        budget = NAME_MAX - len(f".~{digest}{suffix}")
        temporary = f".{shorten(name, budget)}~{digest}{suffix}"
    return os.path.join(folder, temporary)


def _create_private(temporary: str) -> int:
    """Create temporary for writing, owner-only; a leftover (or anything planted) there is removed, not followed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(temporary, flags, PRIVATE_FILE_MODE)
    except FileExistsError:
        os.unlink(temporary)
        return os.open(temporary, flags, PRIVATE_FILE_MODE)


def write_atomic(path: str, data: bytes, mode: int = PRIVATE_FILE_MODE, *,
                 write_fd: Callable[[int, memoryview], int] = os.write) -> None:
    """Write data to path through a temporary file: fsync, rename over the old file, fsync the folder.

    The temporary file is created 0600 and given `mode` just before the rename.  When anything fails
    before the rename (a full disk, say), the temporary file is removed and path is left as it was.
    write_fd is `os.write`; tests replace it to fail like a full disk.
    """
    folder = os.path.dirname(path) or "."
    temporary = temporary_path(path)
    fd = _create_private(temporary)
    try:
        try:
            view = memoryview(data)
            while view:
                written = write_fd(fd, view)
                view = view[written:]
            # Exactly `mode`, whatever the umask took from the owner at creation.
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    fsync_folder(folder)


def fsync_folder(folder: str) -> None:
    """Flush a folder's entries to disk, so that a rename or unlink in it survives a crash."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_folder(path: str) -> bool:
    """Create one folder, 0700 from its creation; False when it already exists (it is then left as it is)."""
    try:
        os.mkdir(path, PRIVATE_FOLDER_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return False
    if stat.S_IMODE(os.stat(path).st_mode) != PRIVATE_FOLDER_MODE:
        # The umask took some of the owner's bits; giving them back opens nothing to anyone else.
        os.chmod(path, PRIVATE_FOLDER_MODE)
    return True


def make_private_folders(path: str) -> list[str]:
    """Create path and its missing parents, each 0700 from its creation; return the folders created, top first.

    Folders that exist already are left as they are (the administrator's `/var/lib`, say).
    """
    path = os.path.abspath(path)
    missing: list[str] = []
    current = path
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    created = []
    for folder in reversed(missing):
        if make_private_folder(folder):
            created.append(folder)
    return created
