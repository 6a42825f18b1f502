"""Files the package writes: whole or not at all, with the user's umask, never over the user's work unasked.

* :func:`atomic_write` fills a temporary file beside the target, syncs it and moves it into place with
  ``os.replace`` (atomic on POSIX): a crash, a full disk or a kill while writing leaves the previous
  content untouched. A new file gets the permissions any other program would give it (``0666`` less the
  process umask), not the ``0600`` of :func:`tempfile.mkstemp`; a rewritten one keeps its own.
* :func:`check_new_output` refuses to replace an existing file unless the user said so with a flag.
* :func:`check_writable_dir` finds an unwritable or full output folder before hours of work, not after.
* :func:`sha256` is the checksum that model files and checkpoints carry, so that a file that still
  parses but has flipped bytes is found and named.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

_PROBE_BYTES = 64 * 1024  # what the writability probe writes: enough to notice a disk that is already full


def umask() -> int:
    """The process's file-creation mask, read without changing it where the system allows
    (``/proc/self/status`` on Linux); elsewhere set and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _os_error(err: OSError, path: Path) -> OSError:
    """``err`` naming ``path`` (a failed write of an open file carries no file name of its own)."""
    if err.filename is not None:
        return err
    return type(err)(err.errno, err.strerror or str(err), str(path))


def error_message(err: Exception) -> str:
    """One line for the user; an OS error names its file first (``path: No space left on device``)."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return str(err)


def _mode_for(path: Path) -> int:
    """The permissions of a file written to ``path``: those it has (a user's ``chmod`` survives a rewrite),
    else ``0666`` less the umask, as any other program would create it."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~umask()


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write ``path`` atomically: ``write(fileobj)`` fills a temporary file beside it, then ``os.replace``.

    If ``write`` raises, the disk is full or the process dies, the previous content of ``path`` is
    untouched and the temporary file is removed (on an exception). Parent folders are created.

    Raises:
        OSError: the file cannot be written; the error names ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _os_error(err, path) from None
    try:
        with os.fdopen(fd, mode) as f:
            os.fchmod(f.fileno(), _mode_for(path))
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise _os_error(err, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Atomically replace ``path`` by ``data``."""
    atomic_write(path, lambda f: f.write(data), "wb")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomically replace ``path`` by ``text`` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256(chunks: bytes | Iterable[bytes]) -> str:
    """Hex SHA-256 of ``chunks`` (one bytes object, or several hashed in order)."""
    digest = hashlib.sha256()
    for chunk in [chunks] if isinstance(chunks, bytes | bytearray | memoryview) else chunks:
        digest.update(chunk)
    return digest.hexdigest()


def check_new_output(
    path: str | Path, flag: str, *, overwrite: bool = False, what: str = "file", other_ways: str = ""
) -> None:
    """Refuse to replace an existing ``path`` unless ``overwrite`` (the user passed ``--overwrite``, or
    another flag that makes writing to it intended, such as ``--append``).

    Args:
        path: the output the command is about to write.
        flag: the option that named it (``--out``), for the message.
        overwrite: the user allowed replacing (or adding to) it.
        what: what the file is (``trajectory``), for the message.
        other_ways: further ways out for the message (``"--append to add to it"``).
    Raises:
        ValueError: ``path`` exists (or is a folder) and ``overwrite`` is False; the message names the
            path, the flag and the way out.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a directory; give a file name for the {what}")
    if path.exists() and not overwrite:
        raise ValueError(
            f"{flag} {path}: the {what} exists and would be overwritten; pass --overwrite to replace it, "
            f"{other_ways + ', ' if other_ways else ''}or choose another {flag}"
        )


def check_writable_dir(folder: str | Path, flag: str) -> None:
    """Create ``folder`` if needed and prove it takes a file (a probe of 64 KiB, removed again).

    Raises:
        ValueError: the folder cannot be created or written (permissions, a file in the way, a full
            or read-only disk); the message names the flag, the folder and the system's reason.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".so3krates-probe-") as probe:
            probe.write(b"\0" * _PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        reason = err.strerror or str(err)
        raise ValueError(f"{flag} {folder}: cannot write there ({reason})") from None
