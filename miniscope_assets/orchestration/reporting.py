"""Turn a stage's StageReport into Dagster metadata (figures rendered in the UI) and check results."""

from __future__ import annotations

import base64
from pathlib import Path

from dagster import AssetCheckResult, AssetCheckSeverity, DataVersion, MaterializeResult, MetadataValue

from miniscope_assets.stages.figures import thumbnail
from miniscope_assets.stages.workspace import StageReport

FIGURE_SUFFIX = "_png"


def metadata_value(value):
    """Paths become path metadata, None becomes null; other scalars pass through."""
    if value is None:
        return MetadataValue.null()
    if isinstance(value, Path):
        return MetadataValue.path(str(value))
    return value


def figure_markdown(name: str, path: Path) -> MetadataValue:
    """The figure at ``path`` as Markdown the UI renders: an embedded thumbnail and the file's path."""
    mime, data = thumbnail(path)
    encoded = base64.b64encode(data).decode("ascii")
    return MetadataValue.md(f"![{name}](data:{mime};base64,{encoded})\n\n`{path}`")


def report_metadata(metadata: dict) -> dict:
    """Stage metadata for Dagster: each ``*_png`` figure also as ``*_figure``, rendered in the UI."""
    converted = {key: metadata_value(value) for key, value in metadata.items()}
    for key, value in metadata.items():
        if key.endswith(FIGURE_SUFFIX) and isinstance(value, Path) and value.is_file():
            name = key.removesuffix(FIGURE_SUFFIX)
            converted[f"{name}_figure"] = figure_markdown(name, value)
    return converted


def to_materialize_result(report: StageReport) -> MaterializeResult:
    return MaterializeResult(
        metadata=report_metadata(report.metadata),
        check_results=[
            AssetCheckResult(
                check_name=check.name,
                passed=check.passed,
                severity=AssetCheckSeverity.ERROR,
                description=check.description,
                metadata={key: metadata_value(value) for key, value in check.metadata.items()},
            )
            for check in report.checks
        ],
        data_version=None if report.data_version is None else DataVersion(report.data_version),
    )
