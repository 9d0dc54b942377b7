"""Outputs are written to a temporary path beside the target and renamed into place.

A reader never sees a half-written output. Temporary names carry the writer's host and process
id (``.<stem>.partial-<host>-<pid>-<random><suffix>``), so a later run on the same host can
tell the leftovers of a crashed writer (process gone) from a write still under way and remove
them (:func:`remove_leftovers`); another host's are left alone. Renamed files get the mode the
user's umask gives new files, not the 0600 of a temporary file. A full disk or a missing
permission is one :class:`MiniscopeOutputError` naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from miniscope_assets.errors import MiniscopeOutputError

PARTIAL_MARK = ".partial-"
_LEFTOVER = re.compile(r"\.partial-([A-Za-z0-9]+)-(\d+)-")
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname()) or "host"
_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_PERMISSION_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}


def _current_umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def output_error(path: Path, error: BaseException) -> MiniscopeOutputError | None:
    """The clear error for a failed write of ``path``: full disk or no permission; else None."""
    number = getattr(error, "errno", None)
    text = str(error)
    if number in _SPACE_ERRNOS or "No space left" in text or "Disk quota" in text:
        return MiniscopeOutputError(path, "no space left on the device; free space and run again")
    if number in _PERMISSION_ERRNOS or "Permission denied" in text or "Read-only file system" in text:
        return MiniscopeOutputError(path, f"cannot be written ({os.strerror(number or errno.EACCES)})")
    return None


@contextlib.contextmanager
def translated_write_errors(path: Path) -> Iterator[None]:
    """Turn a full disk or a permission problem while writing ``path`` into one clear error."""
    try:
        yield
    except (OSError, RuntimeError) as error:  # HDF5 reports a failed write as RuntimeError too
        clear = output_error(path, error)
        if clear is None:
            raise
        raise clear from error


def _partial_name(final_path: Path) -> str:
    return f".{final_path.stem}{PARTIAL_MARK}{_HOST}-{os.getpid()}-"


@contextlib.contextmanager
def scratch_path(near: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``near`` (named like ``near``) that is removed on exit; a
    crashed writer's is a leftover for :func:`remove_leftovers`."""
    near = Path(near)
    with translated_write_errors(near):
        near.parent.mkdir(parents=True, exist_ok=True)
        # Keep the real extension last: OpenCV and pynwb look at it.
        handle, temporary = tempfile.mkstemp(prefix=_partial_name(near), suffix=near.suffix, dir=near.parent)
        os.close(handle)
    try:
        with translated_write_errors(near):
            yield Path(temporary)
    finally:
        Path(temporary).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(final_path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; rename it into place on success.

    On any exception the temporary file is removed and ``final_path`` is untouched.
    """
    final_path = Path(final_path)
    with scratch_path(final_path) as temporary:
        yield temporary
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, final_path)


@contextlib.contextmanager
def atomic_hdf5(final_path: str | Path, copy_of: str | Path | None = None) -> Iterator:
    """An HDF5 file built in memory (starting as a copy of ``copy_of``), then written to
    ``final_path`` atomically by plain file writes. A full disk is then one clear error: the HDF5
    library never meets a failed write, after which it can crash the process when it exits.
    Yields the open h5py.File; whoever closes it (pynwb does), its bytes are kept."""
    import h5py

    class MemoryFile(h5py.File):
        image = None

        def close(self):
            if self.id.valid:
                self.flush()
                self.image = self.id.get_file_image()
            super().close()

    name, mode = (str(copy_of), "a") if copy_of is not None else (f"{final_path}.in-memory", "w")
    handle = MemoryFile(name, mode, driver="core", backing_store=False)
    try:
        yield handle
    finally:
        handle.close()
    with atomic_path(final_path) as temporary:
        temporary.write_bytes(handle.image)


@contextlib.contextmanager
def atomic_directory(final_dir: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``final_dir``; it replaces ``final_dir`` on success."""
    final_dir = Path(final_dir)
    with translated_write_errors(final_dir):
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        fresh = Path(tempfile.mkdtemp(prefix=_partial_name(final_dir), dir=final_dir.parent))
    try:
        with translated_write_errors(final_dir):
            yield fresh
            os.chmod(fresh, 0o777 & ~_current_umask())
            if final_dir.exists():
                shutil.rmtree(final_dir)
            fresh.rename(final_dir)
    finally:
        if fresh.exists():
            shutil.rmtree(fresh)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a small text file atomically; return its path."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_leftover(entry: Path) -> bool:
    match = _LEFTOVER.search(entry.name)
    return (entry.name.startswith(".") and match is not None and match.group(1) == _HOST
            and not _process_alive(int(match.group(2))))


def remove_leftovers(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Remove temporary files and folders in ``folder`` (and below it, ``recursive``) whose
    writing process on this host is gone."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in list(folder.iterdir()):
        if _is_leftover(entry):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
        elif recursive and entry.is_dir() and not entry.is_symlink():
            removed += remove_leftovers(entry, recursive=True)
    return removed
