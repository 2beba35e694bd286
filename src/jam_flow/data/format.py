"""Dataset format version 1 (docs/CONVENTIONS.md, docs/data.md): reading, writing, statistics and validation.

Dimension legend: n mel frames, c mel channels (100), m motion frames (25 fps), k keypoints (21),
km mouth keypoints (4), kr rest keypoints (17).

```
DIR/dataset.json     {"format": "jam-flow-clips", "version": 1, "mel": {...}, "motion": {...}, "num_clips": N, "source": str}
DIR/manifest.jsonl   one ClipRecord per line
DIR/stats.json       {"mel": {"mean": [c], "std": [c]}, "motion": {"exp_mean": [k][3], "exp_std": [k][3]}}  (train split)
DIR/clips/<id>.npz   mel [n, c], exp [m, k, 3], pitch/yaw/roll [m] (degrees), scale [m, 1], t [m, 3], kp [m, k, 3]
DIR/clips/<id>.wav   optional 24 kHz mono audio
```
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
from jam_flow.data.meta import STD_FLOOR
from jam_flow.errors import InputError
from jam_flow.features import MelSettings, MotionSettings, audio_to_motion_frame, num_motion_frames

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
    "load_clip",
    "array_problems",
    "clip_shapes",
    "StatsAccumulator",
    "compute_stats",
    "accumulate_stats",
    "write_stats",
    "read_stats",
    "split_exp",
    "merge_exp",
    "validate_dataset",
]

FORMAT_NAME = "jam-flow-clips"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
MOTION_KEYS = ("exp", "pitch", "yaw", "roll", "scale", "t", "kp")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
log = logging.getLogger(__name__)


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
    obj = _read_json(path)
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
    except TypeError as err:
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


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError(f"{path}: file does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from err


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
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{where}: not valid JSON ({err.msg})") from err
        rec = ClipRecord.from_json(obj, where)
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


# ----------------------------------------------------------------------------------------------------- stats
class StatsAccumulator:
    """Streaming per-channel mean/std (float64 sums, Chan's parallel update) for mel [n, c] and exp [m, k, 3].

    Accumulators of disjoint parts (preprocessing shards) merge exactly: :meth:`moments` gives the plain
    ``{count, mean, m2}`` of each stream, :meth:`from_moments` reads it back and :meth:`merge` combines two
    (Chan et al.'s pairwise update; the result equals one pass over all frames up to float64 rounding)."""

    def __init__(self, n_mels: int = 100, num_kp: int = 21) -> None:
        self.mel = _Moments((n_mels,))
        self.exp = _Moments((num_kp, 3))

    def update(self, mel: np.ndarray, exp: np.ndarray) -> None:
        self.mel.update(mel.reshape(-1, mel.shape[-1]))
        self.exp.update(exp.reshape(-1, *exp.shape[-2:]))

    def merge(self, other: StatsAccumulator) -> StatsAccumulator:
        self.mel.merge(other.mel.count, other.mel.mean, other.mel.m2)
        self.exp.merge(other.exp.count, other.exp.mean, other.exp.m2)
        return self

    def moments(self) -> dict[str, Any]:
        return {name: getattr(self, name).to_json() for name in ("mel", "exp")}

    @classmethod
    def from_moments(cls, obj: Any, where: str) -> StatsAccumulator:
        """Parse :meth:`moments` output; ``InputError`` names ``where`` and the bad field."""
        acc = cls()
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object of moments")
        for name in ("mel", "exp"):
            mom = getattr(acc, name)
            part = obj.get(name)
            try:
                count = part["count"]
                mean = np.asarray(part["mean"], np.float64)
                m2 = np.asarray(part["m2"], np.float64)
            except (KeyError, TypeError, ValueError) as err:
                raise InputError(f"{where}: field {name!r} must hold count, mean and m2") from err
            if not isinstance(count, int) or count < 0:
                raise InputError(f"{where}: {name}.count must be a non-negative integer, got {count!r}")
            if mean.shape != mom.mean.shape or m2.shape != mom.m2.shape:
                raise InputError(f"{where}: {name}.mean/m2 must have shape {list(mom.mean.shape)}")
            if not (np.isfinite(mean).all() and np.isfinite(m2).all()) or (m2 < 0).any():
                raise InputError(f"{where}: {name}.mean/m2 must be finite (m2 >= 0)")
            mom.merge(count, mean, m2)
        return acc

    def result(self) -> dict[str, Any]:
        mel_mean, mel_std = self.mel.result()
        exp_mean, exp_std = self.exp.result()
        return {
            "mel": {"mean": mel_mean.tolist(), "std": mel_std.tolist()},
            "motion": {"exp_mean": exp_mean.tolist(), "exp_std": exp_std.tolist()},
        }


class _Moments:
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.count = 0
        self.mean = np.zeros(shape, np.float64)
        self.m2 = np.zeros(shape, np.float64)

    def update(self, x: np.ndarray) -> None:
        x = x.astype(np.float64)
        n = x.shape[0]
        if n == 0:
            return
        mean = x.mean(axis=0)
        self.merge(n, mean, ((x - mean) ** 2).sum(axis=0))

    def merge(self, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        """Chan et al.'s pairwise update with a part of ``n`` rows, mean ``mean`` and squared deviations ``m2``."""
        if n == 0:
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def to_json(self) -> dict[str, Any]:
        return {"count": int(self.count), "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self.count == 0:
            raise InputError("statistics: no frames to compute mean/std from")
        std = np.sqrt(self.m2 / self.count)
        return self.mean, np.maximum(std, STD_FLOOR)


def compute_stats(root: str | Path, records: list[ClipRecord] | None = None) -> dict[str, Any]:
    """Mean/std over the train split (all clips when there is no train clip). Unloadable clips are skipped."""
    return accumulate_stats(root, records).result()


def accumulate_stats(root: str | Path, records: list[ClipRecord] | None = None) -> StatsAccumulator:
    """The :class:`StatsAccumulator` of the train split's clips (all clips when none is in train); reads only
    ``mel`` and ``exp``; unloadable clips are skipped."""
    root = Path(root)
    records = read_manifest(root) if records is None else records
    use = [r for r in records if r.split == "train"] or list(records)
    acc = StatsAccumulator()
    for rec in use:
        try:
            arrays = load_clip(root, rec, keys=("mel", "exp"))
        except ClipError:
            continue
        acc.update(arrays["mel"], arrays["exp"])
    return acc


def write_stats(root: str | Path, stats: dict[str, Any]) -> Path:
    path = Path(root) / "stats.json"
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(stats) + "\n", encoding="utf-8")
    return path


def read_stats(root: str | Path) -> dict[str, np.ndarray]:
    """``DIR/stats.json`` as float32 arrays: ``mel_mean``/``mel_std`` [c], ``exp_mean``/``exp_std`` [k, 3].

    Normalise with :class:`jam_flow.data.meta.Normaliser` (std floored at ``STD_FLOOR``, 1e-5)."""
    path = Path(root) / "stats.json"
    obj = _read_json(path)
    problems = _stats_problems(obj)
    if problems:
        raise InputError(f"{path}: " + "; ".join(problems))
    return {
        "mel_mean": np.asarray(obj["mel"]["mean"], np.float32),
        "mel_std": np.asarray(obj["mel"]["std"], np.float32),
        "exp_mean": np.asarray(obj["motion"]["exp_mean"], np.float32),
        "exp_std": np.asarray(obj["motion"]["exp_std"], np.float32),
    }


def _stats_problems(obj: Any, n_mels: int = 100, num_kp: int = 21) -> list[str]:
    want = {
        ("mel", "mean"): (n_mels,),
        ("mel", "std"): (n_mels,),
        ("motion", "exp_mean"): (num_kp, 3),
        ("motion", "exp_std"): (num_kp, 3),
    }
    if not isinstance(obj, dict):
        return ["expected a JSON object"]
    problems = []
    for (group, key), shape in want.items():
        try:
            arr = np.asarray(obj[group][key], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            problems.append(f"missing or non-numeric {group}.{key}")
            continue
        if arr.shape != shape:
            problems.append(f"{group}.{key} has shape {list(arr.shape)}, expected {list(shape)}")
        elif not np.isfinite(arr).all():
            problems.append(f"{group}.{key} holds non-finite values")
        elif key.endswith("std") and (arr <= 0).any():
            problems.append(f"{group}.{key} has values <= 0")
    return problems


# ----------------------------------------------------------------------------------------------------- exp split
def split_exp(exp, motion: MotionSettings = MotionSettings()):
    """``exp [..., k, 3]`` (numpy or torch) -> ``(mouth [..., km, 3], rest [..., kr, 3])`` (paper §3.1)."""
    return exp[..., list(motion.mouth_indices), :], exp[..., list(motion.rest_indices), :]


def merge_exp(mouth, rest, motion: MotionSettings = MotionSettings()):
    """Inverse of :func:`split_exp`: ``[..., km, 3]`` + ``[..., kr, 3]`` -> ``exp [..., k, 3]``."""
    order = np.argsort(np.asarray(list(motion.mouth_indices) + list(motion.rest_indices)))
    if isinstance(mouth, np.ndarray):
        both = np.concatenate([mouth, rest], axis=-2)
    else:
        import torch

        both = torch.cat([mouth, rest], dim=-2)
    return both[..., order.tolist(), :]


# ----------------------------------------------------------------------------------------------------- validation
def validate_dataset(root: str | Path, check_audio: bool = True) -> list[str]:
    """Every problem of a dataset directory, one message per problem (each names its file); [] when sound."""
    root = Path(root)
    problems: list[str] = []
    if not root.is_dir():
        return [f"{root}: not a directory"]
    info: DatasetInfo | None = None
    try:
        info = read_dataset_json(root)
    except InputError as err:
        problems.append(str(err))
    mel_s = info.mel if info else MelSettings()
    mot_s = info.motion if info else MotionSettings()
    if info and info.mel.n_mels != 100:
        problems.append(f"{root / 'dataset.json'}: mel.n_mels is {info.mel.n_mels}; F5-TTS features need 100")

    manifest = root / "manifest.jsonl"
    records: list[ClipRecord] = []
    if not manifest.is_file():
        problems.append(f"{manifest}: manifest does not exist")
    else:
        ids: dict[str, int] = {}
        rows = 0
        for lineno, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            rows += 1
            where = f"{manifest}:{lineno}"
            try:
                rec = ClipRecord.from_json(json.loads(line), where)
            except json.JSONDecodeError as err:
                problems.append(f"{where}: not valid JSON ({err.msg})")
                continue
            except InputError as err:
                problems.append(str(err))
                continue
            if rec.id in ids:
                problems.append(f"{where}: duplicate clip id {rec.id!r} (first on line {ids[rec.id]})")
                continue
            ids[rec.id] = lineno
            records.append(rec)
        if info is not None and info.num_clips != rows:  # rows: a duplicate id is reported once, above
            problems.append(
                f"{root / 'dataset.json'}: num_clips is {info.num_clips} but the manifest has {rows} rows"
            )
        if ids and not any(r.split == "train" for r in records):
            problems.append(f"{manifest}: no clip in the 'train' split")

    for rec in records:
        problems += _clip_problems(root, rec, mel_s, mot_s, check_audio)

    stats_path = root / "stats.json"
    if not stats_path.is_file():
        problems.append(f"{stats_path}: statistics file does not exist")
    else:
        try:
            obj = _read_json(stats_path)
            problems += [f"{stats_path}: {p}" for p in _stats_problems(obj, mel_s.n_mels, mot_s.num_kp)]
        except InputError as err:
            problems.append(str(err))
    return problems


def _clip_problems(
    root: Path, rec: ClipRecord, mel_s: MelSettings, mot_s: MotionSettings, check_audio: bool
) -> list[str]:
    out: list[str] = []
    path = root / rec.features
    want_motion = num_motion_frames(rec.duration, mot_s.fps)
    if rec.n_motion != want_motion:
        out.append(
            f"{path}: clip {rec.id!r}: n_motion {rec.n_motion} != ceil(duration * {mot_s.fps}) = {want_motion}"
        )
    implied = audio_to_motion_frame(rec.n_mel - 1, mel_s.sample_rate, mel_s.hop_length, mot_s.fps) + 1
    if abs(implied - rec.n_motion) > 1:
        out.append(
            f"{path}: clip {rec.id!r}: n_mel {rec.n_mel} implies {implied} motion frames, "
            f"manifest says n_motion {rec.n_motion} (more than one frame apart)"
        )
    n_samples = round(rec.duration * mel_s.sample_rate)
    if (rec.audio is None or not check_audio) and abs(mel_s.num_frames(n_samples) - rec.n_mel) > 1:
        out.append(
            f"{path}: clip {rec.id!r}: n_mel {rec.n_mel} does not match duration {rec.duration:.4f} s "
            f"({mel_s.num_frames(n_samples)} frames expected)"
        )
    try:
        arrays = load_clip(root, rec, check=False)
    except ClipError as err:
        out.append(str(err))
    else:
        out += [f"{path}: {p}" for p in array_problems(arrays, rec, mel_s, mot_s)]
        if {"pitch", "yaw", "roll"} <= arrays.keys():
            pose = np.concatenate([np.ravel(arrays[k]) for k in ("pitch", "yaw", "roll")])
            if np.isfinite(pose).all() and (np.abs(pose) > 180).any():
                out.append(
                    f"{path}: pitch/yaw/roll must be degrees in [-180, 180], found {np.abs(pose).max():.1f}"
                )
    if rec.audio is not None and check_audio:
        out += _audio_problems(root / rec.audio, rec, mel_s)
    return out


def _audio_problems(path: Path, rec: ClipRecord, mel_s: MelSettings) -> list[str]:
    import soundfile as sf

    if not path.is_file():
        return [f"{path}: audio file of clip {rec.id!r} does not exist"]
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        return [f"{path}: cannot read the audio of clip {rec.id!r} ({err})"]
    out = []
    if info.samplerate != mel_s.sample_rate:
        out.append(f"{path}: sample rate {info.samplerate} Hz, expected {mel_s.sample_rate}")
    if info.channels != 1:
        out.append(f"{path}: {info.channels} channels, expected mono")
    if mel_s.num_frames(info.frames) != rec.n_mel:
        out.append(
            f"{path}: {info.frames} samples give {mel_s.num_frames(info.frames)} mel frames, "
            f"manifest says n_mel {rec.n_mel}"
        )
    if abs(info.frames / mel_s.sample_rate - rec.duration) > 1.5 / mel_s.sample_rate * mel_s.hop_length:
        out.append(
            f"{path}: audio lasts {info.frames / mel_s.sample_rate:.4f} s, manifest says duration {rec.duration:.4f}"
        )
    return out
