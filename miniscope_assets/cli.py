"""Command line: `miniscope-assets demo | run | curate | catalog | paramsets | cells | ui`.

Runs go through the Dagster job in-process against the local instance in $DAGSTER_HOME
(default ./miniscope_work/dagster_home, SQLite), so they show up in `dagster dev` too.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from miniscope_assets import settings as settings_module
from miniscope_assets.errors import MiniscopeError, MiniscopeInputError, ParameterError

SHIPPED_DAGSTER_YAML = Path(__file__).with_name("dagster.yaml")
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO", "show_errors": False}}}}


def prepare_instance(current: settings_module.Settings):
    """The Dagster instance in DAGSTER_HOME, given the shipped dagster.yaml on first use."""
    from miniscope_assets.atomic import translated_write_errors, write_text_atomic

    home = current.dagster_home
    with translated_write_errors(home):
        home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        write_text_atomic(home / "dagster.yaml", SHIPPED_DAGSTER_YAML.read_text())
    os.environ["DAGSTER_HOME"] = str(home)
    from dagster import DagsterInstance

    return DagsterInstance.get()


def _workspace(current: settings_module.Settings):
    from miniscope_assets.stages.workspace import Workspace

    return Workspace(current.data_root, current.output_root, current.work_root, current.paramsets_file)


def _failure_message(result) -> str:
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            ours = ("Miniscope", "ParameterError")
            while error.cause is not None and not error.cls_name.startswith(ours):
                error = error.cause
            message = error.message.strip()
            if error.cls_name.startswith(ours):
                message = message.split(": ", 1)[-1]  # drop the exception's module path
            return f"{event.step_key} failed: {message}"
    return "run failed"


def run_recordings(current, folder: str, paramsets: list[str] | None, force: bool = False,
                   from_stage: str | None = None) -> list[Path]:
    """Materialize the recordings in ``folder`` (itself, or each device of a session folder):
    the raw NWB file unless it is up to date, then the stages from ``from_stage`` (default: all)
    for each paramset. Returns the processed NWB files."""
    from dagster import AssetKey

    from miniscope_assets.orchestration.definitions import PROCESSING_JOB, RAW_JOB, build_definitions
    from miniscope_assets.orchestration.instance import instance_versions, observation
    from miniscope_assets.orchestration.partitions import PARAMSET, RECORDING, partition_key
    from miniscope_assets.orchestration.resources import MiniscopeStorage
    from miniscope_assets.stages.table import stages_from

    instance = prepare_instance(current)
    workspace = _workspace(current)
    names = paramsets or [p.name for p in workspace.paramsets()]
    for name in names:
        workspace.paramset(name)
    definitions = build_definitions(MiniscopeStorage.from_settings(current))
    run_config = dict(QUIET_LOGS)
    if force:
        run_config["ops"] = {"processing": {"config": {"force": True}}}
    selection = None if from_stage is None else [AssetKey(s.name) for s in stages_from(from_stage)]
    nwb_paths, subjects = [], set()
    for recording_dir in workspace.recording_dirs(folder):
        record = workspace.read(recording_dir)  # a clear error before anything starts
        key = workspace.register(recording_dir, record.identity)
        for dimension, keys in ((RECORDING, [key]), (PARAMSET, names)):
            missing = [k for k in keys if not instance.has_dynamic_partition(dimension, k)]
            if missing:
                instance.add_dynamic_partitions(dimension, missing)
        recording = workspace.recording(key)
        raw_done = instance_versions(instance).raw(key) == record.fingerprint and recording.raw_nwb_path().is_file()
        if from_stage is None and not raw_done:
            print(f"== {recording_dir}: raw NWB file (partition {key})", file=sys.stderr)
            instance.report_runless_asset_event(observation(key, record.fingerprint))
            _execute(definitions.resolve_job_def(RAW_JOB), key, instance, QUIET_LOGS, None)
        for name in names:
            print(f"== {recording_dir} x {name} (partition {name}|{key})", file=sys.stderr)
            _execute(definitions.resolve_job_def(PROCESSING_JOB), partition_key(key, name), instance,
                     run_config, selection)
            nwb_paths.append(workspace.partition(key, name).nwb_path())
        subjects.add(record.identity.subject)
    for subject, name in sorted((subject, name) for subject in subjects for name in names):
        nwb_paths += _register_subject(definitions, instance, workspace, subject, name)
    return nwb_paths


def _register_subject(definitions, instance, workspace, subject: str, paramset: str) -> list[Path]:
    """Cross-session registration of ``subject`` x ``paramset`` when it has two or more processed
    sessions; returns its NWB file (or nothing)."""
    from miniscope_assets.orchestration.definitions import REGISTRATION_JOB
    from miniscope_assets.orchestration.partitions import SUBJECT, subject_key

    target = workspace.subject(subject, paramset)
    if len(target.sessions()) < 2:
        return []
    if not instance.has_dynamic_partition(SUBJECT, subject):
        instance.add_dynamic_partitions(SUBJECT, [subject])
    print(f"== subject {subject} x {paramset}: cross-session registration", file=sys.stderr)
    _execute(definitions.resolve_job_def(REGISTRATION_JOB), subject_key(subject, paramset), instance, QUIET_LOGS, None)
    return [target.nwb_path()]


def _execute(job, key, instance, run_config: dict, selection) -> None:
    result = job.execute_in_process(
        partition_key=key, instance=instance, run_config=run_config, asset_selection=selection,
        raise_on_error=False,
    )
    if not result.success:
        log = _write_failure_log(result, Path(instance.root_directory) / "logs")
        raise SystemExit(f"error: {_failure_message(result)} (full log: {log})")


def _write_failure_log(result, folder: Path) -> Path:
    """Every event of a failed run, with the failures' stack traces, in <folder>/<run id>.log."""
    from miniscope_assets.atomic import write_text_atomic

    lines = []
    for event in result.all_events:
        lines.append(f"{event.event_type_value} {event.step_key or ''} {event.message or ''}".rstrip())
        if event.is_step_failure:
            lines.append(event.step_failure_data.error.to_string())
    return write_text_atomic(folder / f"{result.run_id}.log", "\n".join(lines) + "\n")


def print_catalog(current) -> None:
    from miniscope_assets.orchestration.catalog import catalog_rows, format_table

    print(format_table(catalog_rows(prepare_instance(current))))


def command_demo(args, current) -> None:
    from miniscope_assets.example import generate_example

    print(f"writing the example recording under {current.data_root} ...", file=sys.stderr)
    recording = generate_example(current.data_root, size=args.size, nframes=args.frames, n_neurons=args.neurons)
    for path in run_recordings(current, recording, None, force=args.force):
        print(f"NWB file: {path}")
    print_catalog(current)
    print(f"\nOpen the UI with: {ui_command(current)}")


def ui_command(current: settings_module.Settings) -> str:
    """A shell command, valid from any folder, that opens the UI on these settings (the folders
    as absolute paths, and every other MINISCOPE_* variable set now)."""
    import shlex

    others = {name: value for name, value in os.environ.items()
              if name.startswith("MINISCOPE_") and name != settings_module.WORK_FOLDER_ENV}
    variables = {**others, **settings_module.to_env(current)}
    script = Path(sys.executable).with_name("miniscope-assets")
    return shlex.join(["env", *(f"{name}={value}" for name, value in variables.items()), str(script), "ui"])


def command_ui(args, current) -> None:
    """`dagster dev` on this instance and these settings (the sensor and the UI)."""
    prepare_instance(current)
    environment = {**os.environ, **settings_module.to_env(current)}
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-m", "miniscope_assets.orchestration.definitions", *args.dagster_args]
    print(f"starting: {' '.join(command)} (DAGSTER_HOME={current.dagster_home})", file=sys.stderr)
    os.execve(command[0], command, environment)


def command_run(args, current) -> None:
    for path in run_recordings(current, args.recording, args.paramset, force=args.force):
        print(f"NWB file: {path}")


def command_curate(args, current) -> None:
    from miniscope_assets.stages.curation import CurationRequest, check_curation, write_curation_file

    workspace = _workspace(current)
    (recording_dir,) = workspace.recording_dirs(args.recording)
    key = workspace.registry.key_for(recording_dir)
    request = CurationRequest(
        accept=args.accept, reject=args.reject or [], merge=[list(group) for group in args.merge or []],
        note=args.note or "",
    )
    partition = workspace.partition(key, args.paramset)
    check_curation(partition, request)
    path = write_curation_file(partition.files.curation_input, request)
    print(f"curation file: {path}", file=sys.stderr)
    for nwb_path in run_recordings(current, recording_dir, [args.paramset], from_stage="curation"):
        print(f"NWB file: {nwb_path}")


def command_catalog(args, current) -> None:
    print_catalog(current)


def command_paramsets(args, current) -> None:
    workspace = _workspace(current)
    source = current.paramsets_file if current.paramsets_file.is_file() else "built-in default"
    paramsets = workspace.paramsets()  # checked as they load: the first problem is the error
    print(f"paramsets from {source}: all valid")
    for paramset in paramsets:
        print(f"- {paramset.name}: method={paramset.method} task_mode={paramset.task_mode} "
              f"hash={paramset.param_hash}\n  {paramset.description}")


def command_cells(args, current) -> None:
    """The subject's cross-session table: one row per cell, one column per session (ROI ids)."""
    import json

    from miniscope_assets.orchestration.catalog import format_table

    target = _workspace(current).subject(args.subject, args.paramset)
    if not target.files.state.is_file():
        raise MiniscopeInputError(target.files.work_dir, f"subject {target.subject!r} x paramset "
                                  f"{args.paramset!r} is not registered yet (it needs two processed sessions)")
    state = json.loads(target.files.state.read_text())
    sessions = state["sessions"]
    rows = [{"cell": number, "sessions": len(cell),
             **{name: (str(cell[name][0]) if name in cell else "-") for name in sessions},
             "min P(same)": min((p for _, p in cell.values() if p == p), default=None)}
            for number, cell in enumerate(state["cells"])]
    print(f"subject {target.subject}, paramset {args.paramset}: {len(rows)} cells in {len(sessions)} sessions "
          f"(columns: recording keys; values: ROI ids)")
    print(format_table(rows))


def _ids(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="miniscope-assets", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="generate the example recording and run the whole chain on it")
    demo.add_argument("--size", type=int, default=160, help="frame width and height in pixels")
    demo.add_argument("--frames", type=int, default=1000)
    demo.add_argument("--neurons", type=int, default=30)
    demo.add_argument("--force", action="store_true", help="recompute processing even if inputs are unchanged")
    demo.set_defaults(handler=command_demo)
    run = commands.add_parser("run", help="materialize all assets of a recording (every paramset by default)")
    run.add_argument("recording", help="recording folder, absolute or relative to the data root")
    run.add_argument("--paramset", action="append", help="paramset name (repeatable)")
    run.add_argument("--force", action="store_true", help="recompute processing even if inputs are unchanged")
    run.set_defaults(handler=command_run)
    curate = commands.add_parser("curate", help="write a curation and re-materialize from curation on")
    curate.add_argument("recording")
    curate.add_argument("--paramset", required=True)
    curate.add_argument("--reject", type=_ids, help="mask ids to reject, e.g. 3,7")
    curate.add_argument("--accept", type=_ids, help="keep only these mask ids")
    curate.add_argument("--merge", type=_ids, action="append", help="mask ids to merge, e.g. 4,5 (repeatable)")
    curate.add_argument("--note", help="free-text curation note")
    curate.set_defaults(handler=command_curate)
    cells = commands.add_parser("cells", help="print a subject's cells across sessions (cross-session registration)")
    cells.add_argument("subject")
    cells.add_argument("--paramset", default="default")
    cells.set_defaults(handler=command_cells)
    catalog = commands.add_parser("catalog", help="partitions and their key metadata from the Dagster instance")
    catalog.set_defaults(handler=command_catalog)
    paramsets = commands.add_parser("paramsets", help="list, validate and hash the paramsets")
    paramsets.set_defaults(handler=command_paramsets)
    ui = commands.add_parser("ui", help="open the Dagster UI and daemon (dagster dev) on these settings; "
                                        "other options (e.g. --port 3001) go to dagster dev")
    ui.set_defaults(handler=command_ui)
    return root


def main(argv: list[str] | None = None) -> None:
    commands = parser()
    args, unknown = commands.parse_known_args(argv)
    if unknown and args.handler is not command_ui:
        commands.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.dagster_args = unknown
    try:
        args.handler(args, settings_module.from_env())
    except (MiniscopeError, ParameterError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
