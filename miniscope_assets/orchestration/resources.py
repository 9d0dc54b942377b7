"""Dagster resource holding the deployment's folders."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from miniscope_assets import settings
from miniscope_assets.stages.workspace import Workspace


class MiniscopeStorage(ConfigurableResource):
    """Data root (recordings), output root (NWB), work root (intermediates), paramset file."""

    data_root: str
    output_root: str
    work_root: str
    paramsets_file: str

    @classmethod
    def from_env(cls) -> "MiniscopeStorage":
        """Defaults from MINISCOPE_* environment variables (see miniscope_assets.settings)."""
        return cls.from_settings(settings.from_env())

    @classmethod
    def from_settings(cls, current: settings.Settings) -> "MiniscopeStorage":
        return cls(
            data_root=str(current.data_root),
            output_root=str(current.output_root),
            work_root=str(current.work_root),
            paramsets_file=str(current.paramsets_file),
        )

    def workspace(self) -> Workspace:
        return Workspace(
            data_root=Path(self.data_root),
            output_root=Path(self.output_root),
            work_root=Path(self.work_root),
            paramsets_file=Path(self.paramsets_file),
        )
