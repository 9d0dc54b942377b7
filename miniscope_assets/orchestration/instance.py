"""What the Dagster instance knows of a partition: its latest materialization, its data versions."""

from __future__ import annotations

import functools

from dagster import AssetKey, AssetObservation, AssetRecordsFilter, DagsterInstance

from miniscope_assets.orchestration.partitions import partition_key
from miniscope_assets.stages.discovery import Versions
from miniscope_assets.stages.table import FINAL_STAGE, PROCESSING_POOL

DATA_VERSION_TAG = "dagster/data_version"
RAW_RECORDING = "raw_recording"


def _latest_record(instance: DagsterInstance, asset: str, partition: str):
    result = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1
    )
    return result.records[0] if result.records else None


def latest_materialization(instance: DagsterInstance, asset: str, partition: str):
    """The newest AssetMaterialization of ``asset`` for ``partition``, or None."""
    record = _latest_record(instance, asset, partition)
    return None if record is None else record.asset_materialization


def _metadata_value(materialization, name: str):
    value = materialization.metadata.get(name)
    return getattr(value, "value", value)


def instance_versions(instance: DagsterInstance) -> Versions:
    """Versions read from ``instance`` (see miniscope_assets.stages.discovery); the final stage's
    record of a partition is read once however many questions are asked of it."""

    def raw(key: str) -> str | None:
        materialization = latest_materialization(instance, "recording_info", key)
        return None if materialization is None else (materialization.tags or {}).get(DATA_VERSION_TAG)

    @functools.lru_cache(maxsize=None)
    def final(key: str, paramset: str):
        return _latest_record(instance, FINAL_STAGE, str(partition_key(key, paramset)))

    def processed(key: str, paramset: str) -> tuple[str | None, str | None]:
        record = final(key, paramset)
        if record is None:
            return None, None
        materialization = record.asset_materialization
        return (_metadata_value(materialization, "recording_fingerprint"),
                _metadata_value(materialization, "param_hash"))

    def finished(key: str, paramset: str) -> str | None:
        record = final(key, paramset)
        return None if record is None else str(record.storage_id)

    return Versions(raw=raw, processed=processed, finished=finished)


def observation(key: str, fingerprint: str) -> AssetObservation:
    """The recording folder observed with its content fingerprint as data version."""
    return AssetObservation(asset_key=RAW_RECORDING, partition=key, tags={DATA_VERSION_TAG: fingerprint})


def missing_limits(instance: DagsterInstance) -> str | None:
    """Why ``instance`` would run processing steps without a limit, or None when it has one
    (the shipped dagster.yaml's pool default, or a limit set on the pool itself)."""
    if instance.get_concurrency_config().pool_config.default_pool_limit is not None:
        return None
    if PROCESSING_POOL in instance.event_log_storage.get_concurrency_keys():
        return None
    where = f"{instance.root_directory}/dagster.yaml" if instance.root_directory else "this instance"
    return (f"{where} sets no limit for the {PROCESSING_POOL!r} pool, so every queued recording may start "
            "processing at once; start Dagster with `miniscope-assets ui` or copy miniscope_assets/dagster.yaml "
            "there (see docs/deployment.md)")
