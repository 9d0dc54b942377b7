"""Turn a stage's StageReport into Dagster metadata, check results and progress logs."""

from __future__ import annotations

from pathlib import Path

from dagster import AssetCheckResult, AssetCheckSeverity, DataVersion, MaterializeResult, MetadataValue

from miniscope_assets.stages.workspace import StageReport


def metadata_value(value):
    """Paths become path metadata, None becomes null; other scalars pass through."""
    if value is None:
        return MetadataValue.null()
    if isinstance(value, Path):
        return MetadataValue.path(str(value))
    return value


def to_materialize_result(report: StageReport) -> MaterializeResult:
    return MaterializeResult(
        metadata={key: metadata_value(value) for key, value in report.metadata.items()},
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


class ProgressLogger:
    """Logs a stage's progress every ``step`` of completion."""

    def __init__(self, log, step: float = 0.1):
        self.log = log
        self.step = step
        self.last: dict[str, float] = {}

    def __call__(self, stage: str, fraction: float) -> None:
        if fraction >= 1.0 or fraction - self.last.get(stage, -1.0) >= self.step:
            self.last[stage] = fraction
            self.log.info(f"{stage}: {100 * fraction:.0f}%")
