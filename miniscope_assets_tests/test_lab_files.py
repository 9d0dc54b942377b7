"""The lab's own files (subject.yaml, session.yaml, paramsets.yaml, curation requests): ordinary
YAML values accepted where they make sense, everything else one clear error naming the file."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from nwbinspector.checks import check_subject_age, check_subject_sex, check_subject_species_form, check_subject_weight
from pynwb import NWBHDF5IO
from pynwb.file import Subject

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.miniscope_writer import write_v4_recording
from miniscope_assets.io.paramsets import load_paramsets
from miniscope_assets.io.user_metadata import load_user_metadata
from miniscope_assets.nwb.raw import build_nwbfile, write_nwbfile
from miniscope_assets_tests.conftest import movie


@pytest.fixture
def recording(data_root) -> Path:
    return write_v4_recording(data_root / "mouse" / "rec", list(movie(nframes=30)), frames_per_file=30)


def test_ordinary_yaml_values_reach_the_nwb_file(workspace, data_root, recording, tmp_path):
    (data_root / "mouse" / "subject.yaml").write_text(
        "subject_id: 25\nspecies: Mus musculus\nsex: F\nage: P90D\ndate_of_birth: 2024-01-01\nweight: 25 g\n")
    (recording / "session.yaml").write_text(
        "experimenter: [Doe, Jane]\nkeywords: hippocampus\nexcitation_lambda: 470\num_per_pixel: 1.2\n")
    record = workspace.read("mouse/rec")
    assert record.identity.subject == "25"
    path = write_nwbfile(tmp_path / "x.nwb", build_nwbfile(record, "s", "id", "test"))
    with NWBHDF5IO(str(path), "r") as io:
        nwbfile = io.read()
        assert nwbfile.subject.date_of_birth == datetime(2024, 1, 1, tzinfo=timezone.utc)
        assert nwbfile.subject.weight == "25 g" and nwbfile.subject.subject_id == "25"
        assert list(nwbfile.experimenter) == ["Doe", "Jane"] and list(nwbfile.keywords) == ["hippocampus"]
        assert nwbfile.imaging_planes["ImagingPlane"].excitation_lambda == 470.0


@pytest.mark.parametrize("file, text, fragment", [
    ("subject.yaml", "subject_id: m1\nweight: 25\n", "'weight' 25 should be a number with a unit, such as '25 g'"),
    ("subject.yaml", "subject_id: m1\ndate_of_birth: last spring\n", "'date_of_birth' 'last spring' is not an ISO 8601"),
    ("subject.yaml", "subject_id: [a, b]\n", "'subject_id' should be text"),
    ("subject.yaml", "species: Mus musculus\n", "missing 'subject_id'"),
    ("subject.yaml", "subject_id: m1\ncolour: brown\n", "unknown field(s) colour"),
    ("subject.yaml", "subject_id: m1\nsex: yes\n", "'sex' True should be M, F, U or O"),
    ("subject.yaml", "subject_id: m1\nage: 90\n", "'age' 90 should be an ISO 8601 duration such as 'P90D'"),
    ("subject.yaml", "subject_id: m1\nage: ninety days\n", "'age' 'ninety days' should be an ISO 8601 duration"),
    ("subject.yaml", "subject_id: m1\nspecies: Mus musculus domesticus\n", "should be a Latin binomial"),
    ("subject.yaml", "subject_id: m1\nweight: 25 lb\n", "'weight' '25 lb' should be a number with a unit"),
    ("subject.yaml", "subject_id: m1\n  bad: indent\n", "line 2: not valid YAML"),
    ("session.yaml", "excitation_lambda: .nan\n", "'excitation_lambda' should be a finite number"),
    ("session.yaml", "um_per_pixel: -1\n", "'um_per_pixel' is -1, should be at least"),
    ("session.yaml", "timezone: Mars/Olympus\n", "'timezone' 'Mars/Olympus' is not an IANA time zone"),
    ("session.yaml", "keywords: {a: 1}\n", "'keywords' should be text"),
    ("session.yaml", "- a list\n", "expected a mapping of field: value"),
])
def test_bad_lab_metadata_is_one_clear_error(data_root, recording, file, text, fragment):
    (recording / file).write_text(text)
    with pytest.raises(MiniscopeInputError) as caught:
        load_user_metadata(data_root, "mouse/rec")
    assert caught.value.path == recording / file and fragment in str(caught.value)


@pytest.mark.parametrize("written, stored", [
    ({"sex": "female", "age": "90 days", "species": "mouse", "weight": "25g"},
     {"sex": "F", "age": "P90D", "species": "Mus musculus", "weight": "25 g"}),
    ({"sex": "Male", "age": "p12w", "species": "rattus norvegicus", "weight": "0.3 kilograms"},
     {"sex": "M", "age": "P12W", "species": "Rattus norvegicus", "weight": "0.3 kg"}),
    ({"sex": "u", "age": "P90D/P120D", "species": "http://purl.obolibrary.org/obo/NCBITaxon_10090", "weight": "25 g"},
     {"sex": "U", "age": "P90D/P120D", "species": "http://purl.obolibrary.org/obo/NCBITaxon_10090", "weight": "25 g"}),
    ({"sex": "other", "age": "1.5 years", "species": "Homo  sapiens", "weight": "70 kg"},
     {"sex": "O", "age": "P1.5Y", "species": "Homo sapiens", "weight": "70 kg"}),
])
def test_subject_fields_are_stored_in_the_forms_dandi_accepts(data_root, recording, written, stored):
    """What labs write for sex, age, species and weight becomes the form nwbinspector's DANDI
    checks accept (its age check is critical: "90 days" would fail the upload)."""
    (recording / "subject.yaml").write_text(yaml.safe_dump({"subject_id": "m1", **written}))
    subject = load_user_metadata(data_root, "mouse/rec").subject
    assert subject == {"subject_id": "m1", **stored}
    nwb_subject = Subject(**subject)
    for check in (check_subject_age, check_subject_sex, check_subject_species_form, check_subject_weight):
        assert check(nwb_subject) is None, check.__name__


def test_windows_encoded_yaml_names_the_line(data_root, recording):
    (recording / "subject.yaml").write_bytes("subject_id: m1\ndescription: Caf\u00e9 mouse\n".encode("cp1252"))
    with pytest.raises(MiniscopeInputError, match="subject.yaml: line 2: byte 0xe9 is not UTF-8 text"):
        load_user_metadata(data_root, "mouse/rec")


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(20))


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    path = tmp_path / "paramsets.yaml"
    path.write_text("paramsets: []\n" + BOMB)
    started = time.perf_counter()
    with pytest.raises(MiniscopeInputError, match="more than 100 aliases"):
        load_paramsets(path)
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize("entry, fragment", [
    ({"name": "c", "method": "caiman", "params": {"data": {"date": datetime(2024, 1, 1).date()}}},
     "paramset 'c': params.data.date should be text, a number, true/false or null, got datetime.date(2024, 1, 1)"),
    ({"name": "c", "method": "caiman", "params": {"gSig": [float("nan"), 3]}},
     "paramset 'c': params.gSig[0] should be a finite number"),
    ({"name": "b", "method": "builtin", "params": {"min_snr": -1}},
     "paramset 'b': min_snr must be >= 0, got -1"),
    ({"name": "b", "method": "builtin", "params": {"strides": [48]}},
     "paramset 'b': strides must be a pair of numbers"),
    ({"name": "l", "method": "caiman", "task_mode": "load", "results_dir": "caiman/{session}"},
     "paramset 'l': results_dir 'caiman/{session}' holds a placeholder other than {recording}"),
    ({"name": "l", "method": "caiman", "task_mode": "load", "results_dir": "caiman/{recording"},
     "paramset 'l': results_dir 'caiman/{recording' is malformed"),
    ({"name": "l", "method": "caiman", "task_mode": "load", "results_dir": "{recording!r}"},
     "holds a placeholder other than {recording}"),
    ({"name": "d", "method": "builtin", "description": 7}, "paramset 'd': description should be text"),
])
def test_paramsets_are_checked_when_loaded(tmp_path, entry, fragment):
    path = tmp_path / "paramsets.yaml"
    path.write_text(yaml.safe_dump({"paramsets": [entry]}))
    with pytest.raises(MiniscopeInputError) as caught:
        load_paramsets(path)
    assert caught.value.path == path and fragment in str(caught.value)


def test_results_dir_with_the_recording_placeholder_loads(tmp_path):
    path = tmp_path / "paramsets.yaml"
    path.write_text(yaml.safe_dump({"paramsets": [
        {"name": "l", "method": "caiman", "task_mode": "load", "results_dir": "caiman/{recording}/out"}]}))
    assert load_paramsets(path)[0].results_dir == "caiman/{recording}/out"


def test_names_too_long_for_a_file_system_are_refused_before_anything_is_written(workspace, data_root, recording):
    (recording / "subject.yaml").write_text(f"subject_id: {'m' * 250}\n")
    record = workspace.read("mouse/rec")
    with pytest.raises(MiniscopeInputError, match="-default_ophys.nwb' is 302 bytes, more than the 200 file systems"):
        workspace.register("mouse/rec", record.identity)
    assert not workspace.registry.live()
