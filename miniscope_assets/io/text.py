"""The lab's text files, read strictly: UTF-8 text, YAML without alias bombs, finite numbers in
range; every problem is one MiniscopeInputError naming the file, the field or line, and the problem."""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from miniscope_assets.errors import MiniscopeInputError

MAX_YAML_ALIASES = 100  # far more than a hand-written file uses; a "billion laughs" file uses millions


def read_text(path: Path) -> str:
    """The file's text, decoded as UTF-8 (a byte-order mark is allowed)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise MiniscopeInputError(path, f"cannot be read ({error.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise MiniscopeInputError(
            path, f"line {line}: byte 0x{data[error.start]:02x} is not UTF-8 text; save the file as UTF-8"
        ) from None


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents with more than MAX_YAML_ALIASES aliases."""

    aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases (*name): refused")
        return super().compose_node(parent, index)


def load_yaml(path: Path) -> object:
    """The YAML document in ``path`` (plain data types only)."""
    text = read_text(path)
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise MiniscopeInputError(path, f"{where}not valid YAML ({problem})") from None


def finite_number(path: Path, field: str, value, low: float | None = None, high: float | None = None,
                  integer: bool = False) -> float | int:
    """``value`` (a number, or text holding one) as a finite number within [low, high]."""
    if isinstance(value, bool):
        raise MiniscopeInputError(path, f"'{field}' should be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise MiniscopeInputError(path, f"'{field}' should be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise MiniscopeInputError(path, f"'{field}' should be a finite number, got {value!r}")
    too_low, too_high = low is not None and number < low, high is not None and number > high
    if (too_low or too_high) and low is not None and high is not None:
        raise MiniscopeInputError(path, f"'{field}' is {value!r}, outside the range {low:g} to {high:g}")
    if too_low:
        raise MiniscopeInputError(path, f"'{field}' is {value!r}, should be at least {low:g}")
    if too_high:
        raise MiniscopeInputError(path, f"'{field}' is {value!r}, should be at most {high:g}")
    if integer:
        if not number.is_integer():
            raise MiniscopeInputError(path, f"'{field}' should be a whole number, got {value!r}")
        return int(number)
    return number
