"""Open a processing result's motion-corrected movie as a chunked MovieSource."""

from __future__ import annotations

from pathlib import Path

from miniscope_assets.engine.h5movie import H5Movie


def open_corrected_movie(path: str | Path):
    """The corrected movie at ``path``: our HDF5 file or a CaImAn memory-mapped file."""
    path = Path(path)
    if path.suffix == ".mmap":
        from miniscope_assets.io.caiman_mmap import open_caiman_mmap

        return open_caiman_mmap(path)
    return H5Movie(path)
