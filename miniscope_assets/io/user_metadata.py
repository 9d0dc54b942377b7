"""Metadata a lab supplies beside its recordings: subject.yaml and session.yaml.

Each file is looked up from the recording folder upwards to the data root; the nearest one
wins, so a ``subject.yaml`` in a mouse's folder serves all its recordings and one inside a
recording folder overrides it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.text import finite_number, load_yaml

SUBJECT_FILE = "subject.yaml"
SESSION_FILE = "session.yaml"
PROCESSING_RESULTS_FILE = "processing_results.yaml"
USER_FILES = (SUBJECT_FILE, SESSION_FILE)


def _text(path: Path, key: str, value) -> str:
    """Text (lines of it); numbers are accepted as written (``subject_id: 25``)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise MiniscopeInputError(path, f"'{key}' should be text, got {value!r}")
    text = str(value).strip()
    if not text or not all(char.isprintable() or char in "\n\t" for char in text):
        raise MiniscopeInputError(path, f"'{key}' should be printable, non-empty text, got {value!r}")
    return text


def _texts(path: Path, key: str, value) -> list[str]:
    """One text or a list of them."""
    items = value if isinstance(value, list) else [value]
    return [_text(path, key, item) for item in items]


def _positive(path: Path, key: str, value) -> float:
    return finite_number(path, key, value, low=1e-9)


def _date(path: Path, key: str, value) -> str:
    """A date or date-time (YAML's own, or ISO 8601 text) as ISO text; a date without a time is
    midnight UTC, a time without a zone is UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise MiniscopeInputError(path, f"'{key}' {value!r} is not an ISO 8601 date such as 2024-01-31") from None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    else:
        raise MiniscopeInputError(path, f"'{key}' should be a date such as 2024-01-31, got {value!r}")
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).isoformat()


# Subject fields in the forms DANDI (nwbinspector's critical checks) accepts, from what labs write.
_NUMBER = r"(\d+(?:\.\d+)?)"
_AMOUNT = re.compile(rf"^{_NUMBER}\s*([a-zμ]+)$", re.IGNORECASE)  # a number and its unit in letters
_WEIGHT_UNITS = {"kg": "kg", "kilogram": "kg", "kilograms": "kg", "g": "g", "gram": "g", "grams": "g",
                 "mg": "mg", "milligram": "mg", "milligrams": "mg", "ug": "ug", "μg": "ug", "ng": "ng", "pg": "pg"}
_DURATION = re.compile(rf"P(?!$)({_NUMBER}Y)?({_NUMBER}M)?({_NUMBER}W)?({_NUMBER}D)?"
                       rf"(T(?=\d)({_NUMBER}H)?({_NUMBER}M)?({_NUMBER}S)?)?")
_AGE_UNITS = {"d": "D", "day": "D", "days": "D", "w": "W", "wk": "W", "week": "W", "weeks": "W",
              "mo": "M", "month": "M", "months": "M", "y": "Y", "yr": "Y", "year": "Y", "years": "Y"}
_SEXES = {"m": "M", "male": "M", "f": "F", "female": "F", "u": "U", "unknown": "U", "o": "O", "other": "O"}
_SPECIES_NAMES = {
    "mouse": "Mus musculus", "house mouse": "Mus musculus", "rat": "Rattus norvegicus",
    "norway rat": "Rattus norvegicus", "brown rat": "Rattus norvegicus", "human": "Homo sapiens",
    "macaque": "Macaca mulatta", "rhesus macaque": "Macaca mulatta", "rhesus monkey": "Macaca mulatta",
    "marmoset": "Callithrix jacchus", "common marmoset": "Callithrix jacchus",
    "zebra finch": "Taeniopygia guttata", "zebrafish": "Danio rerio",
}
_BINOMIAL = re.compile(r"^([A-Za-z][a-z]*) ([a-z]+)$")
_NCBI_TAXON = re.compile(r"^http://purl\.obolibrary\.org/obo/NCBITaxon_\d+$")


def _amount(value, units: dict[str, str]) -> tuple[str, str] | None:
    """(number, unit as ``units`` spells it) of text such as "25 g" or "90 days", or None."""
    found = _AMOUNT.match(value.strip()) if isinstance(value, str) else None
    unit = units.get(found[2].lower()) if found else None
    return (found[1], unit) if unit else None


def _weight(path: Path, key: str, value) -> str:
    """A weight with its unit, as "25 g" (NWB stores it as text, and a bare number would be read
    as kilograms): "25g" and "25 grams" become "25 g"."""
    amount = _amount(value, _WEIGHT_UNITS)
    if amount is None:
        raise MiniscopeInputError(path, f"'{key}' {value!r} should be a number with a unit, such as '25 g' "
                                  "(kg, g, mg, ug, ng or pg)")
    return " ".join(amount)


def _sex(path: Path, key: str, value) -> str:
    """M, F, U or O (also written male, female, unknown, other, in any case)."""
    sex = _SEXES.get(value.strip().lower()) if isinstance(value, str) else None
    if sex is None:
        raise MiniscopeInputError(path, f"'{key}' {value!r} should be M, F, U or O (male, female, unknown, other)")
    return sex


def _age(path: Path, key: str, value) -> str:
    """An ISO 8601 duration ("P90D", "P12W", "P1Y2M"), a range of two ("P90D/P120D", "P90D/"), or
    a number with a unit in words ("90 days", "12 weeks", "3 months", "1 year"), as a duration."""
    in_words = _amount(value, _AGE_UNITS)
    if in_words:
        return "P" + "".join(in_words)
    text = value.strip() if isinstance(value, str) else ""
    bounds = text.upper().split("/")
    if len(bounds) in (1, 2) and _DURATION.fullmatch(bounds[0]) and (len(bounds) == 1 or bounds[1] == ""
                                                                   or _DURATION.fullmatch(bounds[1])):
        return text.upper()
    raise MiniscopeInputError(path, f"'{key}' {value!r} should be an ISO 8601 duration such as 'P90D' (90 days), "
                              "'P12W' or 'P90D/P120D', or a number with its unit such as '90 days'")


def _species(path: Path, key: str, value) -> str:
    """A Latin binomial ("Mus musculus"), an NCBI taxonomy link, or a common name this knows
    ("mouse", "rat", ...), as the binomial."""
    text = " ".join(str(value).split()) if isinstance(value, str) else ""
    if text.lower() in _SPECIES_NAMES:
        return _SPECIES_NAMES[text.lower()]
    if _NCBI_TAXON.match(text):
        return text
    binomial = _BINOMIAL.match(text.capitalize())
    if binomial:
        return binomial[0]
    raise MiniscopeInputError(path, f"'{key}' {value!r} should be a Latin binomial such as 'Mus musculus', an NCBI "
                              "taxonomy link (http://purl.obolibrary.org/obo/NCBITaxon_10090) or one of: "
                              + ", ".join(sorted(_SPECIES_NAMES)))


def _zone_name(path: Path, key: str, value) -> str:
    _zone(path, value)
    return str(value)


Field = Callable[[Path, str, object], object]
SUBJECT_FIELDS: dict[str, Field] = {
    "subject_id": _text, "species": _species, "sex": _sex, "age": _age, "date_of_birth": _date,
    "genotype": _text, "strain": _text, "description": _text, "weight": _weight,
}
SESSION_FIELDS: dict[str, Field] = {
    "session_id": _text, "session_description": _text, "experimenter": _texts, "lab": _text,
    "institution": _text, "experiment_description": _text, "keywords": _texts, "location": _text,
    "indicator": _text, "excitation_lambda": _positive, "emission_lambda": _positive,
    "um_per_pixel": _positive, "imaging_plane_description": _text, "timezone": _zone_name,
}


def read_yaml_mapping(path: Path, fields: dict[str, Field] | None = None) -> dict:
    """A YAML file holding one mapping. With ``fields``, unknown keys are an error naming them and
    each value is checked and normalised by its field's converter (null values are left out)."""
    value = load_yaml(path)
    if value is None:
        value = {}
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise MiniscopeInputError(path, "expected a mapping of field: value")
    if fields is None:
        return value
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise MiniscopeInputError(
            path, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(fields))}"
        )
    return {key: fields[key](path, key, item) for key, item in value.items() if item is not None}


def find_upwards(data_root: Path, recording_folder: Path, name: str) -> Path | None:
    """The nearest ``name`` from the recording folder up to (and including) the data root."""
    root = data_root.resolve()
    folder = recording_folder.resolve()
    while True:
        candidate = folder / name
        if candidate.is_file():
            return candidate
        if folder == root or folder.parent == folder:
            return None
        folder = folder.parent


@dataclass(frozen=True)
class UserMetadata:
    subject: dict = field(default_factory=dict)
    session: dict = field(default_factory=dict)
    subject_file: str | None = None  # relative to the data root
    session_file: str | None = None


def load_user_metadata(data_root: str | Path, recording_dir: str | Path) -> UserMetadata:
    """subject.yaml and session.yaml for a recording (empty where none is found)."""
    root = Path(data_root)
    folder = root / recording_dir
    subject_path = find_upwards(root, folder, SUBJECT_FILE)
    session_path = find_upwards(root, folder, SESSION_FILE)
    subject = read_yaml_mapping(subject_path, SUBJECT_FIELDS) if subject_path else {}
    session = read_yaml_mapping(session_path, SESSION_FIELDS) if session_path else {}
    if subject and "subject_id" not in subject:
        raise MiniscopeInputError(subject_path, "missing 'subject_id'")
    return UserMetadata(
        subject=subject,
        session=session,
        subject_file=os.path.relpath(subject_path, root) if subject_path else None,
        session_file=os.path.relpath(session_path, root) if session_path else None,
    )


def _zone(path: Path | None, name) -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise MiniscopeInputError(path or SESSION_FILE, f"'timezone' {name!r} is not an IANA time zone name "
                                  "such as America/Los_Angeles") from None


def acquisition_zone(user: "UserMetadata") -> ZoneInfo | None:
    """The acquisition PC's time zone (session.yaml ``timezone``), if the lab states it."""
    name = user.session.get("timezone")
    return None if name is None else _zone(Path(user.session_file) if user.session_file else None, name)


def results_dir_from_recording(data_root: str | Path, recording_dir: str, paramset_name: str) -> Path | None:
    """Folder of existing results for ``paramset_name`` named in the recording's
    processing_results.yaml (``paramset name: folder relative to the recording``), if any."""
    folder = Path(data_root) / recording_dir
    path = folder / PROCESSING_RESULTS_FILE
    if not path.is_file():
        return None
    mapping = read_yaml_mapping(path)
    if paramset_name not in mapping:
        return None
    return folder / _text(path, paramset_name, mapping[paramset_name])
