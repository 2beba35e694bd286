"""The files of dataset format version 1 (docs/CONVENTIONS.md, docs/data.md): ``dataset.json``, ``manifest.jsonl``
and ``clips/<id>.npz``, read and written, with the per-clip shape checks. Everything here is re-exported by
:mod:`jam_flow.data.format` (the format's owner, which adds the statistics and the dataset validation).

Dimension legend: n mel frames, c mel channels (100), m motion frames (25 fps), k keypoints (21).
All arrays are float32. Writing is byte-deterministic: npz members carry a fixed timestamp and a sorted order.
"""

from __future__ import annotations

import io
import json
import logging
import math
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from jam_flow.atomic import atomic_file
from jam_flow.data.limits import loads_json, read_json
from jam_flow.errors import InputError
from jam_flow.features import MelSettings, MotionSettings

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SPLITS",
    "MOTION_KEYS",
    "ClipRecord",
    "ClipError",
    "DatasetInfo",
    "write_npz",
    "write_clip",
    "write_manifest",
    "read_manifest",
    "write_dataset_json",
    "read_dataset_json",
    "read_json_file",
    "load_clip",
    "array_problems",
    "clip_shapes",
]

FORMAT_NAME = "jam-flow-clips"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
MOTION_KEYS = ("exp", "pitch", "yaw", "roll", "scale", "t", "kp")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
log = logging.getLogger("jam_flow.data.format")


class ClipError(InputError):
    """One clip cannot be used (missing/corrupt file, wrong shapes). Loaders skip it, count it and log it."""


# ----------------------------------------------------------------------------------------------------- records
@dataclass
class ClipRecord:
    """One manifest row. ``features``/``audio`` are paths relative to the dataset directory."""

    id: str
    split: str
    speaker: str
    duration: float
    n_mel: int
    n_motion: int
    text: str
    features: str
    audio: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if d["audio"] is None:
            del d["audio"]
        return d

    @classmethod
    def from_json(cls, obj: Any, where: str) -> ClipRecord:
        """Parse a manifest object; ``where`` ("manifest.jsonl:12") prefixes every error."""
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        types = {
            "id": str,
            "split": str,
            "speaker": str,
            "duration": (int, float),
            "n_mel": int,
            "n_motion": int,
            "text": str,
            "features": str,
            "audio": (str, type(None)),
        }
        required = [f.name for f in fields(cls) if f.name != "audio"]
        missing = [k for k in required if k not in obj]
        if missing:
            raise InputError(f"{where}: missing field(s) {', '.join(missing)}")
        unknown = sorted(set(obj) - set(types))
        if unknown:
            raise InputError(f"{where}: unknown field(s) {', '.join(unknown)}")
        for key, typ in types.items():
            if key in obj and (not isinstance(obj[key], typ) or isinstance(obj[key], bool)):
                raise InputError(f"{where}: field {key!r} must be {_type_name(typ)}, got {obj[key]!r}")
        rec = cls(**{k: obj[k] for k in types if k in obj})
        rec.duration = float(rec.duration)
        if not rec.id or "/" in rec.id or "\\" in rec.id:
            raise InputError(f"{where}: field 'id' must be a non-empty name without slashes, got {rec.id!r}")
        if rec.split not in SPLITS:
            raise InputError(f"{where}: field 'split' must be one of {list(SPLITS)}, got {rec.split!r}")
        if not rec.speaker:
            raise InputError(f"{where}: field 'speaker' must not be empty")
        if not (math.isfinite(rec.duration) and rec.duration > 0):
            raise InputError(
                f"{where}: field 'duration' must be a positive number of seconds, got {rec.duration}"
            )
        for key in ("n_mel", "n_motion"):
            if getattr(rec, key) < 1:
                raise InputError(f"{where}: field {key!r} must be >= 1, got {getattr(rec, key)}")
        for key in ("features", "audio"):
            val = getattr(rec, key)
            if val is not None and (val.startswith("/") or ".." in Path(val).parts):
                raise InputError(
                    f"{where}: field {key!r} must be a path relative to the dataset, got {val!r}"
                )
        return rec


def _type_name(typ: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", type(None): "null"}
    typs = typ if isinstance(typ, tuple) else (typ,)
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in typs))


@dataclass(frozen=True)
class DatasetInfo:
    """Parsed dataset.json."""

    mel: MelSettings
    motion: MotionSettings
    num_clips: int
    source: str

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "mel": self.mel.to_dict(),
            "motion": self.motion.to_dict(),
            "num_clips": self.num_clips,
            "source": self.source,
        }


def write_dataset_json(root: str | Path, info: DatasetInfo) -> Path:
    path = Path(root) / "dataset.json"
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(info.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def read_dataset_json(root: str | Path) -> DatasetInfo:
    """Parse ``DIR/dataset.json``; ``InputError`` names the file and the bad field."""
    path = Path(root) / "dataset.json"
    obj = read_json_file(path)
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a JSON object")
    if obj.get("format") != FORMAT_NAME:
        raise InputError(f"{path}: field 'format' must be {FORMAT_NAME!r}, got {obj.get('format')!r}")
    if obj.get("version") != FORMAT_VERSION:
        raise InputError(
            f"{path}: unsupported format version {obj.get('version')!r} (this reader knows {FORMAT_VERSION})"
        )
    for key in ("mel", "motion", "num_clips", "source"):
        if key not in obj:
            raise InputError(f"{path}: missing field {key!r}")
    try:
        mel = MelSettings(**obj["mel"])
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: field 'mel' is not a MelSettings dict ({err})") from err
    try:
        motion = MotionSettings(**obj["motion"])
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: field 'motion' is not a MotionSettings dict ({err})") from err
    if not isinstance(obj["num_clips"], int) or obj["num_clips"] < 0:
        raise InputError(
            f"{path}: field 'num_clips' must be a non-negative integer, got {obj['num_clips']!r}"
        )
    if not isinstance(obj["source"], str):
        raise InputError(f"{path}: field 'source' must be a string")
    return DatasetInfo(mel=mel, motion=motion, num_clips=obj["num_clips"], source=obj["source"])


def read_json_file(path: Path) -> Any:
    """The JSON value in ``path``; a missing file, bad JSON or nesting too deep is one ``InputError`` line naming
    it (:func:`jam_flow.data.limits.read_json`)."""
    return read_json(path)


# ----------------------------------------------------------------------------------------------------- clips
def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """``np.savez``-compatible archive with sorted members and a fixed timestamp (same arrays, same bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
    tmp.replace(path)  # atomic: a half-written clip never looks finished (resumable preprocessing)
    return path


def clip_shapes(
    n_mel: int, n_motion: int, mel: MelSettings = MelSettings(), motion: MotionSettings = MotionSettings()
) -> dict[str, tuple[int, ...]]:
    """Expected array shapes of one clip."""
    m, k = n_motion, motion.num_kp
    return {
        "mel": (n_mel, mel.n_mels),
        "exp": (m, k, 3),
        "pitch": (m,),
        "yaw": (m,),
        "roll": (m,),
        "scale": (m, 1),
        "t": (m, 3),
        "kp": (m, k, 3),
    }


def write_clip(
    root: str | Path,
    record: ClipRecord,
    arrays: dict[str, np.ndarray],
    audio: np.ndarray | None = None,
    sample_rate: int = 24000,
) -> ClipRecord:
    """Write ``clips/<id>.npz`` (+ ``clips/<id>.wav`` when ``audio`` is given) and return the record with its
    relative paths filled in. Arrays are cast to float32 except extra non-float arrays (e.g. strings)."""
    from jam_flow.data.audio import save_wav

    root = Path(root)
    expected = clip_shapes(record.n_mel, record.n_motion)
    out: dict[str, np.ndarray] = {}
    for key, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype.kind in "fiub":
            arr = arr.astype(np.float32)
        if key in expected and arr.shape != expected[key]:
            raise InputError(
                f"clip {record.id}: array {key!r} has shape {arr.shape}, expected {expected[key]}"
            )
        out[key] = arr
    missing = [k for k in expected if k not in out]
    if missing:
        raise InputError(f"clip {record.id}: missing array(s) {', '.join(missing)}")
    record.features = f"clips/{record.id}.npz"
    if audio is not None:
        record.audio = f"clips/{record.id}.wav"
        save_wav(root / record.audio, audio, sample_rate)
    write_npz(root / record.features, out)
    return record


def load_clip(
    root: str | Path, record: ClipRecord, check: bool = True, keys: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """Load the arrays of a clip's npz: every member, or only ``keys`` (an npz member is read only when asked
    for: training reads ``("mel", "exp")``). With ``check`` the standard arrays among them are verified (present,
    float32, shapes matching ``record``, finite); any problem raises :class:`ClipError` naming the file."""
    path = Path(root) / record.features
    if not path.is_file():
        raise ClipError(f"{path}: features file of clip {record.id!r} does not exist")
    want = None if keys is None else tuple(keys)
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = npz.files if want is None else [k for k in want if k in npz.files]
            arrays = {k: npz[k] for k in names}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as err:
        raise ClipError(
            f"{path}: cannot read the npz of clip {record.id!r} ({type(err).__name__}: {err})"
        ) from err
    if check:
        problems = array_problems(arrays, record, keys=want)
        if problems:
            raise ClipError(f"{path}: " + "; ".join(problems))
    return arrays


def array_problems(
    arrays: dict[str, np.ndarray],
    record: ClipRecord,
    mel: MelSettings = MelSettings(),
    motion: MotionSettings = MotionSettings(),
    keys: Iterable[str] | None = None,
) -> list[str]:
    """What is wrong with a clip's standard arrays (all of them, or only ``keys``): missing, not float32, a
    shape that disagrees with ``record``, non-finite values. [] when sound."""
    problems = []
    shapes = clip_shapes(record.n_mel, record.n_motion, mel, motion)
    if keys is not None:
        wanted = set(keys)
        shapes = {k: v for k, v in shapes.items() if k in wanted}
    for key, shape in shapes.items():
        if key not in arrays:
            problems.append(f"array {key!r} is missing")
            continue
        arr = arrays[key]
        if arr.dtype != np.float32:
            problems.append(f"array {key!r} has dtype {arr.dtype}, expected float32")
        if arr.shape != shape:
            what = "n_mel" if key == "mel" else "n_motion"
            problems.append(
                f"array {key!r} has shape {arr.shape}, expected {shape} ({what} from the manifest)"
            )
        elif arr.dtype.kind == "f" and not np.isfinite(arr).all():
            problems.append(f"array {key!r} holds {int((~np.isfinite(arr)).sum())} non-finite value(s)")
    return problems


def write_manifest(root: str | Path, records: Iterable[ClipRecord]) -> Path:
    path = Path(root) / "manifest.jsonl"
    lines = [json.dumps(r.to_json(), ensure_ascii=False, sort_keys=True) for r in records]
    with atomic_file(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_manifest(root: str | Path, split: str | None = None) -> list[ClipRecord]:
    """All records of ``DIR/manifest.jsonl`` (optionally one split). A malformed row raises ``InputError``
    naming ``manifest.jsonl:<line>``; use :func:`validate_dataset` to list every problem instead. A row repeating
    an earlier clip id is skipped with a warning naming it (a clip is never trained on twice)."""
    path = Path(root) / "manifest.jsonl"
    if not path.is_file():
        raise InputError(f"{path}: manifest does not exist")
    records, seen, duplicates = [], {}, []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        rec = ClipRecord.from_json(loads_json(line, where), where)
        if rec.id in seen:
            duplicates.append(f"{rec.id!r} (line {lineno}, first on line {seen[rec.id]})")
            continue
        seen[rec.id] = lineno
        if split is None or rec.split == split:
            records.append(rec)
    if duplicates:
        log.warning(
            "%s: skipping %d duplicate clip id(s): %s", path, len(duplicates), ", ".join(duplicates[:10])
        )
    return records
