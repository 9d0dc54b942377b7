"""Field-by-field parity with neuroconv: the same recording folder (built from the real files in
../shared/data/real) converted by this project's recording_info stage and by neuroconv's
MiniscopeConverter, both NWB files read back with h5py and compared; prints a Markdown table
(docs/neuroconv_parity.md holds the last run).

neuroconv is not a dependency: install it in its own environment and pass its interpreter.

    python -m venv /tmp/ncenv && /tmp/ncenv/bin/pip install "neuroconv[miniscope]"
    python benchmarks/neuroconv_parity.py --neuroconv-python /tmp/ncenv/bin/python [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import yaml

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"
SUBJECT = {"subject_id": "C6-J588_Disc5", "species": "Mus musculus", "sex": "M", "age": "P90D"}
CONFIG = {"directoryStructure": ["animalName", "date", "time"],
          "devices": {"miniscopes": {"Miniscope": {"deviceType": "Miniscope_V4_BNO"}},
                      "cameras": {"BehavCam_2": {"deviceType": "WebCam-320x240"}}}}
COPIES, INTERVAL_MS = 4, 33.3
# Why a field neuroconv writes is written differently, or not at all, here.
NOTES = {
    "session_start_time": "neuroconv reads the calendar fields (the PC's local time; the zone is left to the user, "
    "the runner labels it UTC); here msecSinceEpoch (UTC, exact): the same instant with the PC on UTC-7",
    "session_id": "the DANDI session label (session-device), so `dandi organize` keeps the file names",
    "session_description": "both empty by default; session.yaml sets it here",
    "metaData.json kept": "here the whole device metaData.json (ewl, deviceID, ...) is in the device description",
    "imaging_rate": "both measured from the timestamps; here the lost frames count (the sensor's rate); the nominal "
    "rate is in the device description",
    "excitation_lambda": "here the V4/V3 blue LED (470 nm) unless session.yaml says otherwise",
    "raw movie: unit": "no physical unit either way",
    "external files": "here relative to the NWB file (DANDI's convention, what `dandi organize` expects)",
    "behaviour video: device": "a Device per camera in both (named after the camera)",
    "head orientation": "both keep the quaternions as a TimeSeries; here also the head direction (yaw, pitch, "
    "roll) in a CompassDirection",
    "dropped-frame": "here gaps of the DAQ frame counter (3 frames in this folder) as intervals/DroppedFrames",
    "ROI": "this real device file states no ROI (ROI is written when it does)",
    "ewl": "not a field of ndx-miniscope's Miniscope; kept in the device description here",
}


def timestamps_csv(nframes: int, daq_frames=None) -> str:
    """timeStamps.csv in the DAQ-QT format; with ``daq_frames``, times follow the counter (a lost
    frame leaves a gap in time too, as on a real DAQ)."""
    header = "Frame Number,Time Stamp (ms),Buffer Index" + (",DAQ Frame Number" if daq_frames is not None else "")
    ticks = range(nframes) if daq_frames is None else [n - daq_frames[0] for n in daq_frames]
    rows = [header] + [f"{i},{int(round(tick * INTERVAL_MS))},{i % 5}" + (f",{daq_frames[i]}" if daq_frames is not None
                                                                            else "") for i, tick in enumerate(ticks)]
    return "\n".join(rows) + "\n"


def build_folder(data_root: Path) -> Path:
    """A DAQ-QT session with a Miniscope_V4_BNO (real metadata and in-vivo AVI, v2 timestamps with a
    3-frame drop, head orientation) and a behaviour camera; returns the Miniscope device folder."""
    session = data_root / "C6-J588_Disc5" / "2021_10_07" / "15_03_28"
    device, camera = session / "Miniscope", session / "BehavCam_2"
    device.mkdir(parents=True)
    camera.mkdir()
    (data_root / "UserConfigFile.json").write_text(json.dumps(CONFIG))
    meta = json.loads((REAL / "metadata" / "C6-J588_Disc5_15_03_28_session_metaData.json").read_text())
    (session / "metaData.json").write_text(json.dumps({**meta, "cameras": ["BehavCam_2"]}))
    shutil.copy(REAL / "metadata" / "cailab_Ca_EEG2-1_2021_10_14_10_11_24_Miniscope_metaData.json",
                device / "metaData.json")
    for index in range(COPIES):
        shutil.copy(REAL / "mio" / "wireless_corrupted.avi", device / f"{index}.avi")
    frames = 60 * COPIES
    daq = [100 + i + (3 if i >= 100 else 0) for i in range(frames)]
    (device / "timeStamps.csv").write_text(timestamps_csv(frames, daq))
    angle = np.linspace(0, np.pi / 2, frames)
    rows = ["Time Stamp (ms),qw,qx,qy,qz"] + [f"{int(round(i * INTERVAL_MS))},{np.cos(a / 2)},0,0,{np.sin(a / 2)}"
                                              for i, a in enumerate(angle)]
    (device / "headOrientation.csv").write_text("\n".join(rows) + "\n")
    shutil.copy(REAL / "mio" / "stream_daq_test_output_200px.avi", camera / "0.avi")
    (camera / "metaData.json").write_text(json.dumps({"deviceName": "BehavCam_2", "deviceType": "WebCam-320x240",
                                                      "frameRate": "30FPS", "ROI": {"height": 200, "width": 200}}))
    (camera / "timeStamps.csv").write_text(timestamps_csv(94))
    (data_root / "C6-J588_Disc5" / "subject.yaml").write_text(yaml.safe_dump(SUBJECT))
    return device


def ours(workdir: Path, device: Path) -> Path:
    from miniscope_assets.stages import recording_info
    from miniscope_assets.stages.table import RunOptions
    from miniscope_assets.stages.workspace import Workspace

    workspace = Workspace(workdir / "data", workdir / "nwb", workdir / "work", workdir / "paramsets.yaml")
    folder = device.relative_to(workspace.data_root).as_posix()
    key = workspace.register(folder, workspace.read(folder).identity)
    recording_info.run(workspace.recording(key), RunOptions())
    return workspace.recording(key).raw_nwb_path()


def _text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.size <= 4 else f"{value.dtype} {value.shape}"
    if isinstance(value, list):
        value = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in value]
    text = str(value).replace("|", "/").replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def _of_type(f: h5py.File, group: str, neurodata_type: str) -> list[h5py.Group]:
    if group not in f:
        return []
    found = []
    f[group].visititems(lambda name, node: found.append(node) if node.attrs.get("neurodata_type") == neurodata_type
                        else None)
    return found


def _value(node, name: str):
    if node is None:
        return None
    if name in node.attrs:
        return node.attrs[name]
    if name in node and isinstance(node[name], h5py.Dataset):
        data = node[name]
        return data[()] if data.size <= 4 else data
    return None


def fields(path: Path) -> dict[str, object]:
    """What a lab reads from the file, by meaning (container names differ between the tools)."""
    with h5py.File(path, "r") as f:
        out: dict[str, object] = {}
        for name in ("session_start_time", "general/session_id", "general/session_description",
                     "general/experimenter", "general/subject/subject_id", "general/subject/species",
                     "general/subject/sex", "general/subject/age"):
            out[name.split("/", 1)[-1]] = f[name][()] if name in f else None
        scopes = _of_type(f, "general/devices", "Miniscope")
        scope = scopes[0] if scopes else None
        for name in ("deviceType", "compression", "frameRate", "framesPerFile", "gain", "led0", "ROI", "ewl",
                     "excitation", "msCamExposure"):
            out[f"Miniscope device: {name}"] = _value(scope, name)
        out["Miniscope device: the device's metaData.json kept"] = (
            scope is not None and '"ewl": 70' in str(scope.attrs.get("description", "")))
        planes = _of_type(f, "general/optophysiology", "ImagingPlane")
        for name in ("imaging_rate", "excitation_lambda", "indicator", "location"):
            out[f"imaging plane: {name}"] = _value(planes[0] if planes else None, name)
        movies = _of_type(f, "acquisition", "OnePhotonSeries")
        movie = movies[0] if movies else None
        out["raw movie: data"] = None if movie is None else movie["data"]
        out["raw movie: timestamps"] = None if movie is None or "timestamps" not in movie else movie["timestamps"][()]
        out["raw movie: unit"] = None if movie is None else movie["data"].attrs.get("unit")
        out["raw movie: compression"] = None if movie is None else movie["data"].compression
        videos = _of_type(f, "acquisition", "ImageSeries")
        video = videos[0] if videos else None
        out["behaviour video: external files"] = None if video is None else [
            ("relative" if not str(v.decode() if isinstance(v, bytes) else v).startswith("/") else "absolute")
            for v in video["external_file"][()]]
        out["behaviour video: frames timed"] = None if video is None else (
            len(video["timestamps"]) if "timestamps" in video else f"rate {video['starting_time'].attrs['rate']:.2f}")
        link = None if video is None else video.get("device", getlink=True)
        out["behaviour video: device"] = None if link is None else link.path.rsplit("/", 1)[-1]
        behaviour = [n for n in f.get("processing/behavior", {}) if "ead" in n or "Compass" in n]
        out["head orientation containers"] = sorted(behaviour) or None
        out["dropped-frame intervals"] = sorted(f["intervals"]) if "intervals" in f else None
        return {key: (value[()] if isinstance(value, h5py.Dataset) and value.size <= 4 else value)
                for key, value in out.items()}


def compare(a, b) -> str:
    if isinstance(a, h5py.Dataset) or isinstance(b, h5py.Dataset):
        return "?"
    if a is None and b is None:
        return "neither"
    if a is None:
        return "only here"
    if b is None:
        return "not written here"
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return "same" if np.shape(a) == np.shape(b) and np.array_equal(a, b) else "differs"
    return "same" if _text(a) == _text(b) else "differs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neuroconv-python", required=True, help="interpreter of an environment with neuroconv")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/neuroconv_parity"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    device = build_folder(args.workdir / "data")
    mine = ours(args.workdir, device)
    theirs = args.workdir / "neuroconv.nwb"
    subprocess.run([args.neuroconv_python, str(Path(__file__).with_name("neuroconv_runner.py")),
                    str(args.workdir / "data"), str(args.workdir / "data" / "UserConfigFile.json"),
                    json.dumps(SUBJECT), str(theirs)], check=True)
    with h5py.File(mine, "r") as a, h5py.File(theirs, "r") as b:
        movies = [next(iter(_of_type(f, "acquisition", "OnePhotonSeries")))["data"][()] for f in (b, a)]
    identical = np.array_equal(*movies)
    there, here = fields(theirs), fields(mine)
    print("| field | neuroconv 0.10.2 | miniscope-assets | |")
    print("|---|---|---|---|")
    for name in there:
        a, b = there[name], here[name]
        if name == "raw movie: data":
            a, b = (f"{movies[0].dtype} {movies[0].shape}", f"{movies[1].dtype} {movies[1].shape}")
            verdict = "byte-identical" if identical else "differs"
        else:
            verdict = compare(a, b)
        note = next((text for key, text in NOTES.items() if key in name), "")
        print(f"| {name} | {_text(a)} | {_text(b)} | {verdict}{'; ' + note if note else ''} |")


if __name__ == "__main__":
    main()
