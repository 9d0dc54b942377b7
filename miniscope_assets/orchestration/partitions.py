"""Partitions: the raw recording by recording; every later asset by recording x paramset."""

from __future__ import annotations

import warnings

from dagster import (
    BetaWarning,
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
)

RECORDING = "recording"
PARAMSET = "paramset"

recording_partitions = DynamicPartitionsDefinition(name=RECORDING)
paramset_partitions = DynamicPartitionsDefinition(name=PARAMSET)
recording_x_paramset = MultiPartitionsDefinition(
    {RECORDING: recording_partitions, PARAMSET: paramset_partitions}
)
# A recording x paramset partition depends on its recording's partition (the mapping is marked
# beta in Dagster 1.13; its behaviour here is covered by the tests).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", BetaWarning)
    to_recording = MultiToSingleDimensionPartitionMapping(partition_dimension_name=RECORDING)


def partition_key(recording_key: str, paramset: str) -> MultiPartitionKey:
    return MultiPartitionKey({RECORDING: recording_key, PARAMSET: paramset})


def split_partition_key(key) -> tuple[str, str]:
    """(recording key, paramset name) of a multi-partition key."""
    dimensions = key.keys_by_dimension
    return dimensions[RECORDING], dimensions[PARAMSET]
