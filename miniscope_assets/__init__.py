"""miniscope-assets: UCLA Miniscope recordings to analysed, DANDI-ready NWB files via Dagster."""

__version__ = "0.1.0"
