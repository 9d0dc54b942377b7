"""Write-to-temporary-then-rename, so no reader ever sees a half-written output."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(final_path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; rename it into place on success.

    On any exception the temporary file is removed and ``final_path`` is untouched.
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real extension last: OpenCV and pynwb look at it.
    handle, temporary = tempfile.mkstemp(
        prefix=f".{final_path.stem}.partial-", suffix=final_path.suffix, dir=final_path.parent
    )
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        os.replace(temporary_path, final_path)
    finally:
        if temporary_path.exists():
            temporary_path.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a small text file atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)
