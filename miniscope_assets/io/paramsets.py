"""Processing parameter sets: a user-editable YAML or JSON file.

Format::

    paramsets:
      - name: default            # [A-Za-z0-9_.-]+, used as the paramset partition key
        method: builtin          # builtin | caiman
        task_mode: trigger       # trigger: run the method; load: read existing results
        description: Built-in engine with default parameters
        results_dir: null        # load only: folder relative to the data root; "{recording}"
                                 # is replaced by the recording folder
        keep_corrected_movie: false  # also store the motion-corrected movie in the processed NWB
        job_resources: {}        # when processing runs on Slurm: cpus, memory ("16G"), time
                                 # ("04:00:00"), partition, account (override the resource's)
        params: {}               # method parameters (validated for the built-in engine)

A name is a partition key and part of file and folder names: letters, digits, ``_ . -``, at
most 64 characters, not starting with a dot, and distinct from every other name once
sanitised for DANDI file names.

A paramset's identity is a hash of its method and params (like element-miniscope's
param_set_hash): two names with the same method and params are an error naming both.
When no file exists, the built-in ``default`` paramset is used.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import string
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from miniscope_assets.engine.params import validate_params
from miniscope_assets.errors import MiniscopeInputError, ParameterError
from miniscope_assets.io.text import load_yaml, read_text
from miniscope_assets.layout import dandi_label

METHODS = ("builtin", "caiman")
TASK_MODES = ("trigger", "load")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
_FIELDS = {"name", "method", "task_mode", "description", "params", "results_dir", "keep_corrected_movie",
           "job_resources"}
JOB_RESOURCES = {  # field: (pattern of its text, what it should look like)
    "cpus": (re.compile(r"[1-9][0-9]{0,3}"), "a whole number of CPUs, 1-9999"),
    "memory": (re.compile(r"[1-9][0-9]*[KMGT]?"), "a size such as 16G or 4000M"),
    "time": (re.compile(r"([0-9]+-)?[0-9]{1,2}(:[0-9]{2}){0,2}|[0-9]+"), "a Slurm time such as 04:00:00 or 1-00:00:00"),
    "partition": (re.compile(r"[A-Za-z0-9_.-]{1,64}"), "a Slurm partition name"),
    "account": (re.compile(r"[A-Za-z0-9_.-]{1,64}"), "a Slurm account name"),
}


@dataclass(frozen=True)
class ParamSet:
    name: str
    method: str
    task_mode: str
    description: str
    params: dict = field(default_factory=dict)
    results_dir: str | None = None
    keep_corrected_movie: bool = False
    job_resources: dict = field(default_factory=dict)

    @property
    def param_hash(self) -> str:
        return paramset_hash(self.method, self.params)


DEFAULT_PARAMSET = ParamSet(
    name="default",
    method="builtin",
    task_mode="trigger",
    description="Built-in engine (motion correction, CNMF-E-class extraction, OASIS) with default parameters",
)


def paramset_hash(method: str, params: dict) -> str:
    """Stable UUID of (method, params): key order and formatting do not matter."""
    canonical = json.dumps({"method": method, "params": params}, sort_keys=True, separators=(",", ":"))
    return str(uuid.UUID(bytes=hashlib.sha256(canonical.encode()).digest()[:16]))


MAX_PARAMS_DEPTH = 8


def _parse_text(path: Path) -> object:
    if path.suffix.lower() != ".json":
        return load_yaml(path)
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise MiniscopeInputError(path, f"invalid JSON at line {error.lineno}: {error.msg}") from None
    except RecursionError:
        raise MiniscopeInputError(path, "JSON nested too deeply") from None


def _check_plain(path: Path, where: str, value: object, depth: int = 0) -> None:
    """Method parameters are plain data (text, finite numbers, booleans, null, lists, mappings
    with text keys), so they hash, store and pass to a method the same way everywhere."""
    if depth > MAX_PARAMS_DEPTH:
        raise MiniscopeInputError(path, f"{where} is nested more than {MAX_PARAMS_DEPTH} levels deep")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise MiniscopeInputError(path, f"{where}: key {key!r} should be text")
            _check_plain(path, f"{where}.{key}", item, depth + 1)
    elif isinstance(value, list):
        for position, item in enumerate(value):
            _check_plain(path, f"{where}[{position}]", item, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise MiniscopeInputError(path, f"{where} should be a finite number, got {value!r}")
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise MiniscopeInputError(path, f"{where} should be text, a number, true/false or null, "
                                  f"got {value!r} ({type(value).__name__}); quote it to keep it as text")


def _check_results_dir(path: Path, name: str, results_dir: str) -> None:
    """results_dir may hold one placeholder, ``{recording}``."""
    try:
        fields = [(field_name, spec, conversion) for _, field_name, spec, conversion
                  in string.Formatter().parse(results_dir) if field_name is not None]
    except ValueError as error:
        raise MiniscopeInputError(path, f"paramset {name!r}: results_dir {results_dir!r} is malformed ({error}); "
                                  "write braces as {{ and }}") from None
    for field_name, spec, conversion in fields:
        if field_name != "recording" or spec or conversion:
            raise MiniscopeInputError(path, f"paramset {name!r}: results_dir {results_dir!r} holds a placeholder "
                                      f"other than {{recording}}")


def _parse_entry(path: Path, position: int, entry: object) -> ParamSet:
    where = f"paramset #{position + 1}"
    if not isinstance(entry, dict):
        raise MiniscopeInputError(path, f"{where} should be a mapping, got {entry!r}")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise MiniscopeInputError(path, f"{where} has unknown field(s) {', '.join(unknown)}")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise MiniscopeInputError(
            path, f"{where}: name {name!r} must be 1-64 letters, digits, '_', '.' or '-', not starting with '.'"
        )
    method = entry.get("method")
    if method not in METHODS:
        raise MiniscopeInputError(path, f"paramset {name!r}: method {method!r} is not one of {', '.join(METHODS)}")
    task_mode = entry.get("task_mode", "trigger")
    if task_mode not in TASK_MODES:
        raise MiniscopeInputError(path, f"paramset {name!r}: task_mode {task_mode!r} is not one of {', '.join(TASK_MODES)}")
    params = entry.get("params") or {}
    if not isinstance(params, dict):
        raise MiniscopeInputError(path, f"paramset {name!r}: params should be a mapping")
    _check_plain(path, f"paramset {name!r}: params", params)
    if method == "builtin":
        try:
            validate_params(params)
        except ParameterError as error:
            raise MiniscopeInputError(path, f"paramset {name!r}: {error}") from None
    results_dir = entry.get("results_dir")
    if results_dir is not None and not isinstance(results_dir, str):
        raise MiniscopeInputError(path, f"paramset {name!r}: results_dir should be a string")
    if results_dir is not None:
        _check_results_dir(path, name, results_dir)
    keep_movie = entry.get("keep_corrected_movie", False)
    if not isinstance(keep_movie, bool):
        raise MiniscopeInputError(path, f"paramset {name!r}: keep_corrected_movie should be true or false")
    return ParamSet(
        keep_corrected_movie=keep_movie,
        job_resources=_job_resources(path, name, entry.get("job_resources")),
        name=name,
        method=method,
        task_mode=task_mode,
        description=_description(path, name, entry.get("description")),
        params=params,
        results_dir=results_dir,
    )


def _job_resources(path: Path, name: str, value: object) -> dict:
    """Slurm job resources as text sbatch accepts, each checked against its pattern."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MiniscopeInputError(path, f"paramset {name!r}: job_resources should be a mapping")
    unknown = sorted(set(map(str, value)) - set(JOB_RESOURCES))
    if unknown:
        raise MiniscopeInputError(path, f"paramset {name!r}: job_resources has unknown field(s) {', '.join(unknown)} "
                                  f"(known: {', '.join(JOB_RESOURCES)})")
    resources = {}
    for key, item in value.items():
        pattern, expected = JOB_RESOURCES[key]
        if key == "time" and not isinstance(item, str):  # YAML reads an unquoted 12:00:00 as 43200
            raise MiniscopeInputError(path, f"paramset {name!r}: job_resources.time should be quoted text such as "
                                      f"'04:00:00', got {item!r}")
        text = str(item) if isinstance(item, (str, int)) and not isinstance(item, bool) else None
        if text is None or not pattern.fullmatch(text):
            raise MiniscopeInputError(path, f"paramset {name!r}: job_resources.{key} should be {expected}, got {item!r}")
        resources[key] = text
    return resources


def _description(path: Path, name: str, value: object) -> str:
    if value is not None and not isinstance(value, str):
        raise MiniscopeInputError(path, f"paramset {name!r}: description should be text, got {value!r}")
    return value or ""


def load_paramsets(path: str | Path | None) -> list[ParamSet]:
    """Read and check the paramset file; the built-in default when ``path`` does not exist."""
    if path is None or not Path(path).is_file():
        return [DEFAULT_PARAMSET]
    path = Path(path)
    document = _parse_text(path)
    if not isinstance(document, dict) or not isinstance(document.get("paramsets"), list):
        raise MiniscopeInputError(path, "expected a top-level 'paramsets:' list")
    paramsets = [_parse_entry(path, i, entry) for i, entry in enumerate(document["paramsets"])]
    if not paramsets:
        raise MiniscopeInputError(path, "the 'paramsets' list is empty")
    by_name: dict[str, ParamSet] = {}
    by_label: dict[str, ParamSet] = {}
    by_hash: dict[str, ParamSet] = {}
    for paramset in paramsets:
        if paramset.name in by_name:
            raise MiniscopeInputError(path, f"paramset name {paramset.name!r} is used twice")
        label = dandi_label(paramset.name)
        if label in by_label:
            raise MiniscopeInputError(
                path, f"paramsets {by_label[label].name!r} and {paramset.name!r} give the same file name part {label!r}"
            )
        by_label[label] = paramset
        twin = by_hash.get(paramset.param_hash)
        if twin is not None:
            raise MiniscopeInputError(
                path,
                f"paramsets {twin.name!r} and {paramset.name!r} have the same method and params "
                f"(hash {paramset.param_hash}); keep one name",
            )
        by_name[paramset.name] = paramset
        by_hash[paramset.param_hash] = paramset
    return paramsets


def find_paramset(paramsets: list[ParamSet], name: str, source: str | Path | None) -> ParamSet:
    """The paramset called ``name``, or an error listing the known names."""
    for paramset in paramsets:
        if paramset.name == name:
            return paramset
    known = ", ".join(p.name for p in paramsets)
    raise MiniscopeInputError(source or "<built-in paramsets>", f"no paramset named {name!r} (known: {known})")
