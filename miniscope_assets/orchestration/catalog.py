"""The catalog: latest materialization metadata per partition, read from the Dagster instance."""

from dagster import AssetKey, DagsterInstance

from miniscope_assets.orchestration.partitions import PARAMSET, RECORDING
from miniscope_assets.stages.table import STAGES

# (asset, metadata key, column title) shown by `miniscope-assets catalog`, from the stage table.
CATALOG_COLUMNS = [(stage.name, key, title) for stage in STAGES for key, title in stage.catalog]


def latest_metadata(instance: DagsterInstance, asset: str, page: int = 500) -> dict[str, dict]:
    """Partition key -> metadata of the newest materialization of ``asset``."""
    latest: dict[str, dict] = {}
    cursor = None
    while True:
        result = instance.fetch_materializations(AssetKey(asset), limit=page, cursor=cursor)
        for record in result.records:
            materialization = record.asset_materialization
            if materialization is None or materialization.partition in latest:
                continue
            latest[materialization.partition] = {
                key: getattr(value, "value", value) for key, value in materialization.metadata.items()
            }
        if not result.has_more:
            return latest
        cursor = result.cursor


def catalog_rows(instance: DagsterInstance) -> list[dict]:
    """One row per recording x paramset partition: recording, paramset and the catalog columns
    (recording-level columns repeated on each of the recording's rows)."""
    by_asset = {asset: latest_metadata(instance, asset) for asset in {c[0] for c in CATALOG_COLUMNS}}
    per_paramset = {stage.name for stage in STAGES if stage.per_paramset}
    partitions = sorted({p for asset in per_paramset for p in by_asset.get(asset, {})})
    rows = []
    for partition in partitions:
        paramset, recording = partition.split("|", 1)  # dimensions sorted by name
        row = {RECORDING: recording, PARAMSET: paramset}
        for asset, key, title in CATALOG_COLUMNS:
            row[title] = by_asset[asset].get(partition if asset in per_paramset else recording, {}).get(key)
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """A plain-text table of catalog rows."""
    if not rows:
        return "(no materializations yet)"
    columns = list(rows[0])

    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    cells = [[cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)
