"""Dataset format version 1 (docs/CONVENTIONS.md, docs/data.md): reading, writing, statistics and validation. The
files themselves (dataset.json, manifest, npz) are read and written by :mod:`jam_flow.data.clip_files`, re-exported
here; this module adds the training-split statistics and the whole-dataset validation.

Dimension legend: n mel frames, c mel channels (100), m motion frames (25 fps), k keypoints (21).

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

import json
from pathlib import Path
from typing import Any

import numpy as np

from jam_flow.atomic import atomic_file
from jam_flow.data.clip_files import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MOTION_KEYS,
    SPLITS,
    ClipError,
    ClipRecord,
    DatasetInfo,
    array_problems,
    clip_shapes,
    load_clip,
    read_dataset_json,
    read_json_file,
    read_manifest,
    write_clip,
    write_dataset_json,
    write_manifest,
    write_npz,
)
from jam_flow.data.limits import loads_json
from jam_flow.data.meta import STD_FLOOR
from jam_flow.data.text import Vocab
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
    "write_dataset",
    "read_stats",
    "validate_dataset",
]


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


def write_dataset(
    root: str | Path, records: list[ClipRecord], mel: MelSettings, motion: MotionSettings, source: str
) -> None:
    """Finish a dataset whose clips are written (:func:`write_clip`): the manifest, the training-split statistics,
    then ``dataset.json``."""
    write_manifest(root, records)
    write_stats(root, compute_stats(root, records))
    write_dataset_json(root, DatasetInfo(mel=mel, motion=motion, num_clips=len(records), source=source))


def read_stats(root: str | Path) -> dict[str, np.ndarray]:
    """``DIR/stats.json`` as float32 arrays: ``mel_mean``/``mel_std`` [c], ``exp_mean``/``exp_std`` [k, 3].

    Normalise with :class:`jam_flow.data.meta.Normaliser` (std floored at ``STD_FLOOR``, 1e-5)."""
    path = Path(root) / "stats.json"
    obj = read_json_file(path)
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


# ----------------------------------------------------------------------------------------------------- validation
def validate_dataset(root: str | Path, check_audio: bool = True, vocab: Vocab | None = None) -> list[str]:
    """Every problem of a dataset directory, one message per problem (each names its file); [] when sound.
    Every clip's text must be encodable by ``vocab`` (the one training uses; None: the bundled vocabulary)."""
    vocab = Vocab.default() if vocab is None else vocab
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
                rec = ClipRecord.from_json(loads_json(line, where), where)
            except InputError as err:
                problems.append(str(err))
                continue
            try:
                vocab.encode(rec.text, where=f"{where}: clip {rec.id!r} text")
            except InputError as err:  # training would skip the clip
                problems.append(str(err))
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
            obj = read_json_file(stats_path)
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
