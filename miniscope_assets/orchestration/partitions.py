"""Partitions: the raw recording by recording; every later asset by recording x paramset; the
cross-session registration by subject x paramset."""

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
SUBJECT = "subject"

recording_partitions = DynamicPartitionsDefinition(name=RECORDING)
paramset_partitions = DynamicPartitionsDefinition(name=PARAMSET)
recording_x_paramset = MultiPartitionsDefinition(
    {RECORDING: recording_partitions, PARAMSET: paramset_partitions}
)
subject_partitions = DynamicPartitionsDefinition(name=SUBJECT)
subject_x_paramset = MultiPartitionsDefinition({SUBJECT: subject_partitions, PARAMSET: paramset_partitions})
# A recording x paramset partition depends on its recording's partition (the mapping is marked
# beta in Dagster 1.13; its behaviour here is covered by the tests).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", BetaWarning)
    to_recording = MultiToSingleDimensionPartitionMapping(partition_dimension_name=RECORDING)


def partition_key(recording_key: str, paramset: str) -> MultiPartitionKey:
    return MultiPartitionKey({RECORDING: recording_key, PARAMSET: paramset})


def split_partition_key(key) -> tuple[str, str]:
    """(recording key, paramset name) of a recording x paramset key."""
    dimensions = key.keys_by_dimension
    return dimensions[RECORDING], dimensions[PARAMSET]


def subject_key(subject: str, paramset: str) -> MultiPartitionKey:
    return MultiPartitionKey({SUBJECT: subject, PARAMSET: paramset})


def split_subject_key(key) -> tuple[str, str]:
    """(subject, paramset name) of a subject x paramset key."""
    dimensions = key.keys_by_dimension
    return dimensions[SUBJECT], dimensions[PARAMSET]
