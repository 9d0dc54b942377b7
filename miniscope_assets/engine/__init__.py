"""The built-in calcium-imaging engine (pure Python; see docs/engine.md).

Stages, each usable on its own: :func:`correct_motion`, :func:`compute_summary_images`,
:func:`extract_sources`, :func:`classify_sources`, :func:`extract_traces`;
:func:`run_engine` chains them into a :class:`~miniscope_assets.results.ProcessingResult`.
"""

from miniscope_assets.engine.classification import classify_sources
from miniscope_assets.engine.extraction import extract_sources
from miniscope_assets.engine.motion import correct_motion
from miniscope_assets.engine.movie import ArrayMovie, MovieSource
from miniscope_assets.engine.params import ENGINE_DEFAULTS, PARAM_SPECS, validate_params
from miniscope_assets.engine.pipeline import CORRECTED_MOVIE, run_engine
from miniscope_assets.engine.summary import compute_summary_images
from miniscope_assets.engine.traces import extract_traces

__all__ = [
    "ENGINE_DEFAULTS",
    "PARAM_SPECS",
    "CORRECTED_MOVIE",
    "ArrayMovie",
    "MovieSource",
    "classify_sources",
    "compute_summary_images",
    "correct_motion",
    "extract_sources",
    "extract_traces",
    "run_engine",
    "validate_params",
]
