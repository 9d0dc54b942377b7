"""Paramset file parsing, hashing and the errors a lab can make in it."""

from __future__ import annotations

import pytest
import yaml

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.paramsets import DEFAULT_PARAMSET, load_paramsets, paramset_hash


def write(path, paramsets):
    path.write_text(yaml.safe_dump({"paramsets": paramsets}))
    return path


def test_missing_file_gives_the_builtin_default(tmp_path):
    assert load_paramsets(tmp_path / "none.yaml") == [DEFAULT_PARAMSET]


def test_yaml_and_json_parse_the_same(tmp_path):
    entry = {"name": "fast", "method": "builtin", "task_mode": "trigger", "description": "d",
             "params": {"neuron_diameter": 12, "pw_rigid": False}}
    from_yaml = load_paramsets(write(tmp_path / "p.yaml", [entry]))
    (tmp_path / "p.json").write_text('{"paramsets": [' + __import__("json").dumps(entry) + "]}")
    assert from_yaml == load_paramsets(tmp_path / "p.json")
    assert from_yaml[0].params == {"neuron_diameter": 12, "pw_rigid": False}


def test_hash_ignores_key_order_but_not_values():
    assert paramset_hash("builtin", {"a": 1, "b": [1, 2]}) == paramset_hash("builtin", {"b": [1, 2], "a": 1})
    assert paramset_hash("builtin", {"a": 1}) != paramset_hash("builtin", {"a": 2})
    assert paramset_hash("builtin", {"a": 1}) != paramset_hash("caiman", {"a": 1})


def test_same_params_under_two_names_is_an_error_naming_both(tmp_path):
    path = write(tmp_path / "p.yaml", [
        {"name": "first", "method": "builtin", "params": {"min_snr": 4}},
        {"name": "second", "method": "builtin", "params": {"min_snr": 4}},
    ])
    with pytest.raises(MiniscopeInputError, match="'first' and 'second' have the same method and params"):
        load_paramsets(path)


@pytest.mark.parametrize("entry, message", [
    ({"name": "a b", "method": "builtin"}, "must be 1-64 letters"),
    ({"name": "..", "method": "builtin"}, "not starting with '.'"),
    ({"name": ".", "method": "builtin"}, "not starting with '.'"),
    ({"name": "a/b", "method": "builtin"}, "must be 1-64 letters"),
    ({"name": "x" * 65, "method": "builtin"}, "must be 1-64 letters"),
    ({"name": "x", "method": "suite2p"}, "not one of builtin, caiman"),
    ({"name": "x", "method": "builtin", "task_mode": "later"}, "task_mode 'later'"),
    ({"name": "x", "method": "builtin", "paramz": {}}, "unknown field"),
    ({"name": "x", "method": "builtin", "params": [1]}, "params should be a mapping"),
    ({"name": "x", "method": "builtin", "job_resources": {"gpus": 1}}, r"job_resources has unknown field\(s\) gpus"),
    ({"name": "x", "method": "builtin", "job_resources": {"memory": "lots"}}, "job_resources.memory should be a size"),
    ({"name": "x", "method": "builtin", "job_resources": {"cpus": 0}}, "job_resources.cpus should be a whole number"),
    ({"name": "x", "method": "builtin", "job_resources": {"time": 14400}}, "job_resources.time should be quoted"),
    ({"name": "x", "method": "builtin", "job_resources": {"partition": "a b"}}, "job_resources.partition"),
])
def test_bad_entries(tmp_path, entry, message):
    path = write(tmp_path / "p.yaml", [entry])
    with pytest.raises(MiniscopeInputError, match=message) as caught:
        load_paramsets(path)
    assert str(path) in str(caught.value)


def test_names_giving_the_same_file_name_part(tmp_path):
    path = write(tmp_path / "p.yaml", [{"name": "a_b", "method": "builtin"},
                                       {"name": "a-b", "method": "builtin", "params": {"min_pnr": 5.0}}])
    with pytest.raises(MiniscopeInputError, match="'a_b' and 'a-b' give the same file name part 'a-b'"):
        load_paramsets(path)


def test_duplicate_names(tmp_path):
    path = write(tmp_path / "p.yaml", [{"name": "x", "method": "builtin"},
                                       {"name": "x", "method": "builtin", "params": {"min_snr": 3}}])
    with pytest.raises(MiniscopeInputError, match="'x' is used twice"):
        load_paramsets(path)


def test_not_a_paramset_file(tmp_path):
    (tmp_path / "p.yaml").write_text("- just a list\n")
    with pytest.raises(MiniscopeInputError, match="top-level 'paramsets:' list"):
        load_paramsets(tmp_path / "p.yaml")


def test_job_resources_are_read_as_sbatch_text_and_stay_out_of_the_hash(tmp_path):
    """An unquoted 12:00:00 is a YAML number (43200); quoted, it is what sbatch --time takes."""
    path = tmp_path / "p.yaml"
    path.write_text("paramsets:\n  - {name: big, method: builtin, job_resources: {cpus: 16, memory: 48G, "
                    "time: '08:00:00', partition: gpu-a}}\n  - {name: small, method: builtin, params: {min_pnr: 9}}\n")
    big, small = load_paramsets(path)
    assert big.job_resources == {"cpus": "16", "memory": "48G", "time": "08:00:00", "partition": "gpu-a"}
    assert small.job_resources == {}
    assert big.param_hash == paramset_hash("builtin", {})
    path.write_text("paramsets:\n  - {name: big, method: builtin, job_resources: {time: 12:00:00}}\n")
    with pytest.raises(MiniscopeInputError, match="job_resources.time should be quoted text such as '04:00:00', got 43200"):
        load_paramsets(path)
