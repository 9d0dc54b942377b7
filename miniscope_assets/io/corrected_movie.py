"""Open a processing result's motion-corrected movie as a chunked MovieSource."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from miniscope_assets.errors import MiniscopeInputError

DATASET = "corrected"


class H5Movie:
    """A (frames, height, width) HDF5 dataset, read chunk by chunk (MovieSource)."""

    def __init__(self, path: str | Path, dataset: str = DATASET):
        self.path = Path(path)
        self.dataset = dataset
        try:
            with h5py.File(self.path, "r") as f:
                data = f[dataset]
                if data.ndim != 3:
                    raise MiniscopeInputError(self.path, f"dataset {dataset!r} is not (frames, height, width)")
                self.nframes = int(data.shape[0])
                self.frame_shape = (int(data.shape[1]), int(data.shape[2]))
                self.dtype = np.dtype(data.dtype)
        except (OSError, KeyError) as error:
            raise MiniscopeInputError(self.path, f"no readable dataset {dataset!r} ({error})") from error

    def iter_chunks(self, chunk_frames: int, start: int = 0, stop: int | None = None):
        stop = self.nframes if stop is None else min(stop, self.nframes)
        with h5py.File(self.path, "r") as f:
            data = f[self.dataset]
            for first in range(start, stop, chunk_frames):
                yield first, data[first : min(first + chunk_frames, stop)]


def open_corrected_movie(path: str | Path):
    """The corrected movie at ``path``: our HDF5 file or a CaImAn memory-mapped file."""
    path = Path(path)
    if path.suffix == ".mmap":
        from miniscope_assets.io.caiman_mmap import open_caiman_mmap

        return open_caiman_mmap(path)
    return H5Movie(path)
