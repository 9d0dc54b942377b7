"""Locations from environment variables, with local defaults under ./miniscope_work."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.text import finite_number

WORK_FOLDER_ENV = "MINISCOPE_WORK_FOLDER"
DEFAULT_WORK_FOLDER = "miniscope_work"


@dataclass(frozen=True)
class Settings:
    data_root: Path
    output_root: Path
    work_root: Path
    paramsets_file: Path
    dagster_home: Path


def from_env(environ: dict | None = None) -> Settings:
    """Settings from MINISCOPE_DATA_ROOT, MINISCOPE_OUTPUT_ROOT, MINISCOPE_WORK_ROOT,
    MINISCOPE_PARAMSETS and DAGSTER_HOME; unset ones default to folders inside
    $MINISCOPE_WORK_FOLDER (default ./miniscope_work)."""
    env = os.environ if environ is None else environ
    base = Path(env.get(WORK_FOLDER_ENV, DEFAULT_WORK_FOLDER)).absolute()
    data_root = Path(env.get("MINISCOPE_DATA_ROOT", base / "data")).absolute()
    paramsets_file = Path(env.get("MINISCOPE_PARAMSETS", data_root / "paramsets.yaml")).absolute()
    if "MINISCOPE_PARAMSETS" in env and not paramsets_file.is_file():
        raise MiniscopeInputError(paramsets_file, "named by MINISCOPE_PARAMSETS but is not a file")
    return Settings(
        data_root=data_root,
        output_root=Path(env.get("MINISCOPE_OUTPUT_ROOT", base / "nwb")).absolute(),
        work_root=Path(env.get("MINISCOPE_WORK_ROOT", base / "processing")).absolute(),
        paramsets_file=paramsets_file,
        dagster_home=Path(env.get("DAGSTER_HOME", base / "dagster_home")).absolute(),
    )


def to_env(current: Settings) -> dict[str, str]:
    """The environment variables that give ``current`` back from any working folder."""
    variables = {
        "DAGSTER_HOME": current.dagster_home,
        "MINISCOPE_DATA_ROOT": current.data_root,
        "MINISCOPE_OUTPUT_ROOT": current.output_root,
        "MINISCOPE_WORK_ROOT": current.work_root,
    }
    if current.paramsets_file.is_file():
        variables["MINISCOPE_PARAMSETS"] = current.paramsets_file
    return {name: str(path) for name, path in variables.items()}


def seconds_from_env(name: str, default: float, low: float) -> float:
    """A duration in seconds from environment variable ``name`` (``default`` when unset)."""
    return finite_number(Path(f"${name}"), name, os.environ.get(name, default), low=low)


def workers_from_env() -> int:
    """Engine worker processes (and NWB compression threads) from MINISCOPE_WORKERS (unset or 0:
    every available core)."""
    return finite_number(Path("$MINISCOPE_WORKERS"), "MINISCOPE_WORKERS", os.environ.get("MINISCOPE_WORKERS", 0),
                         low=0, integer=True)
