"""Runs neuroconv's MiniscopeConverter on a data folder; called by neuroconv_parity.py with the
interpreter of an environment where neuroconv is installed (it is not a dependency).

    <python with neuroconv> neuroconv_runner.py DATA_ROOT USER_CONFIG SUBJECT_JSON OUTPUT.nwb
"""

import json
import sys
from zoneinfo import ZoneInfo

from neuroconv.converters import MiniscopeConverter


def main() -> None:
    data_root, config, subject, output = sys.argv[1:5]
    converter = MiniscopeConverter(folder_path=data_root, user_configuration_file_path=config)
    metadata = converter.get_metadata()
    start = metadata["NWBFile"]["session_start_time"]
    if start.tzinfo is None:  # neuroconv leaves the zone to the user
        metadata["NWBFile"]["session_start_time"] = start.replace(tzinfo=ZoneInfo("UTC"))
    metadata["Subject"] = json.loads(subject)
    converter.run_conversion(nwbfile_path=output, metadata=metadata, overwrite=True)


if __name__ == "__main__":
    main()
