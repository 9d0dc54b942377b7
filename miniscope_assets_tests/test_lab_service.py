"""The lab service for real: a Dagster instance on a PostgreSQL server (started by .ci/run) with
the shipped dagster.yaml, a `dagster-daemon` whose sensor finds 3 recordings and queues their
runs for 2 paramsets, then a `dagster-webserver` on loopback asked through the GraphQL API the UI
uses whether a figure renders and a check result belongs to its partition."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from miniscope_assets.io.miniscope_writer import write_v4_recording
from miniscope_assets.stages.table import FINAL_STAGE, stage_named
from miniscope_assets_tests.conftest import movie, service_or_skip, write_user_metadata

pytestmark = [pytest.mark.services, pytest.mark.slow]
SHIPPED = Path(__file__).parents[1] / "miniscope_assets" / "dagster.yaml"
SUBJECTS = ("mouse-a", "mouse-b", "mouse-c")
PARAMSETS = {"paramsets": [
    {"name": "default", "method": "builtin", "description": "defaults"},
    {"name": "small-cells", "method": "builtin", "description": "6 px cells", "params": {"neuron_diameter": 6}},
]}
RUNS_EXPECTED = len(SUBJECTS) * (1 + len(PARAMSETS["paramsets"]))  # one raw run per recording


def postgres_database() -> str:
    """A new, empty database on the test server; its URL."""
    server = os.environ.get("MINISCOPE_TEST_POSTGRES")
    service_or_skip("PostgreSQL server", bool(server), "set MINISCOPE_TEST_POSTGRES (bash .ci/run starts one)")
    import psycopg2

    name = f"miniscope_{uuid.uuid4().hex[:12]}"
    connection = psycopg2.connect(f"{server}/postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    connection.close()
    return f"{server}/{name}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Three recordings processed by the daemon on a Postgres instance; (home, environment)."""
    root = tmp_path_factory.mktemp("lab")
    home = root / "dagster_home"
    home.mkdir()
    config = yaml.safe_load(SHIPPED.read_text())
    config["storage"] = {"postgres": {"postgres_url": postgres_database()}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    data = root / "data"
    for number, subject in enumerate(SUBJECTS):
        write_user_metadata(data / subject, subject={"subject_id": subject, "species": "Mus musculus", "sex": "F",
                                                     "age": "P90D"})
        write_v4_recording(data / subject / "s1", list(movie(nframes=60, seed=number)), fps=20.0,
                           per_device_layout=True)
    (data / "paramsets.yaml").write_text(yaml.safe_dump(PARAMSETS))
    environment = {**os.environ, "DAGSTER_HOME": str(home), "MINISCOPE_WORK_FOLDER": str(root),
                   "MINISCOPE_QUIET_PERIOD_S": "0", "MINISCOPE_SENSOR_INTERVAL_S": "2"}
    daemon = subprocess.Popen([Path(sys.executable).with_name("dagster-daemon"), "run", "-m",
                               "miniscope_assets.orchestration.definitions"], env=environment, cwd=root,
                              stdout=open(root / "daemon.log", "w"), stderr=subprocess.STDOUT)
    try:
        instance = instance_at(home)
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            runs = instance.get_runs()
            if len(runs) >= RUNS_EXPECTED and all(run.is_finished for run in runs):
                break
            assert daemon.poll() is None, (root / "daemon.log").read_text()[-3000:]
            time.sleep(2)
        time.sleep(6)  # a few more sensor ticks: nothing more may be queued
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    yield home, environment


def instance_at(home: Path):
    from dagster import DagsterInstance

    os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.from_config(str(home))


def overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    return max(itertools.accumulate(step for _, step in edges), default=0)


def test_queued_runs_on_postgres_respect_the_shipped_limits(lab):
    from dagster import AssetKey, DagsterEventType, DagsterRunStatus, EventRecordsFilter

    home, _ = lab
    instance = instance_at(home)
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    runs = instance.get_runs()
    assert len(runs) == RUNS_EXPECTED, [(r.job_name, r.tags.get("dagster/partition")) for r in runs]
    assert all(run.status == DagsterRunStatus.SUCCESS for run in runs)
    partitions = [(run.job_name, run.tags["dagster/partition"]) for run in runs]
    assert len(set(partitions)) == len(partitions)  # no duplicate runs
    for key in instance.get_dynamic_partitions("recording"):
        for paramset in ("default", "small-cells"):
            records = instance.fetch_materializations(AssetKey("activity"), limit=10).records
            assert sum(r.partition_key == f"{paramset}|{key}" for r in records) == 1

    run_times = [(r.start_time, r.end_time) for r in instance.get_run_records()]
    assert overlap(run_times) <= 2  # concurrency.runs.max_concurrent_runs
    steps = {}
    for event_type in (DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS):
        for record in instance.get_event_records(EventRecordsFilter(event_type=event_type), limit=1000):
            entry = record.event_log_entry
            if entry.step_key == "processing":
                steps.setdefault(entry.run_id, [None, None])[event_type == DagsterEventType.STEP_SUCCESS] = entry.timestamp
    assert len(steps) == len(SUBJECTS) * 2
    assert overlap([tuple(times) for times in steps.values()]) == 1  # the processing pool's limit


def graphql(port: int, query: str, variables: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", method="POST",
                                     data=json.dumps({"query": query, "variables": variables}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        document = json.load(response)
    assert "errors" not in document, document["errors"]
    return document["data"]


FIGURE_QUERY = """
query ($key: AssetKeyInput!, $partition: String!, $checked: AssetKeyInput!, $check: String!) {
  assetOrError(assetKey: $key) { ... on Asset {
    assetMaterializations(partitions: [$partition], limit: 1) {
      partition
      metadataEntries { label ... on MarkdownMetadataEntry { mdStr } }
    }
  } }
  assetCheckExecutions(assetKey: $checked, checkName: $check, limit: 50) {
    partition status evaluation { partition success }
  }
}
"""


def test_the_ui_renders_a_figure_and_ties_checks_to_their_partition(lab):
    home, environment = lab
    port = free_port()
    server = subprocess.Popen([Path(sys.executable).with_name("dagster-webserver"), "-h", "127.0.0.1", "-p",
                               str(port), "-m", "miniscope_assets.orchestration.definitions"], env=environment,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "dagster-webserver did not start"
                time.sleep(1)
        recordings = sorted(instance_at(home).get_dynamic_partitions("recording"))
        partition = f"default|{recordings[0]}"
        ((check, _), *_) = stage_named(FINAL_STAGE).checks
        data = graphql(port, FIGURE_QUERY, {"key": {"path": ["segmentation"]}, "partition": partition,
                                            "checked": {"path": [FINAL_STAGE]}, "check": check})
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    asset = data["assetOrError"]
    (materialization,) = asset["assetMaterializations"]
    assert materialization["partition"] == partition
    figures = {e["label"]: e["mdStr"] for e in materialization["metadataEntries"] if e.get("mdStr")}
    match = re.match(r"!\[masks\]\(data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)\)", figures["masks_figure"])
    assert match, figures["masks_figure"][:200]
    image = cv2.imdecode(np.frombuffer(base64.b64decode(match.group(2)), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and 100 <= max(image.shape[:2]) <= 320 and image.std() > 5  # a real picture
    history = data["assetCheckExecutions"]  # every partition's execution, each tied to its partition
    assert sorted(e["partition"] for e in history) == sorted(
        f"{paramset}|{key}" for paramset in ("default", "small-cells") for key in recordings)
    assert all(e["evaluation"]["partition"] == e["partition"] and e["evaluation"]["success"] for e in history)
