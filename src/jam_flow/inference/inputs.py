"""Inputs of the JAM-Flow tasks: reference audio, motion files, text, durations and frame bookkeeping.

Dimension legend: n mel frames (93.75 / s), m motion frames (25 / s), k keypoints (21), s samples (24 kHz).
The rules these helpers implement (timeline, durations, loudness) are described in :mod:`jam_flow.inference.tasks`.
Bad input raises :class:`~jam_flow.errors.InputError` naming the argument (``--ref-audio``, ``--motion``, ...).
"""

from __future__ import annotations

import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jam_flow.data.audio import load_audio
from jam_flow.data.limits import check_array_size, loads_json, npy_header, npz_members
from jam_flow.data.mel import log_mel
from jam_flow.errors import InputError
from jam_flow.flow.layouts import TASKS
from jam_flow.inference.bundle import ModelBundle

log = logging.getLogger(__name__)

__all__ = [
    "TASKS",
    "AudioLike",
    "MotionLike",
    "ReferenceAudio",
    "MotionInput",
    "load_reference",
    "reference_loudness",
    "load_motion",
]

AudioLike = str | Path | tuple[np.ndarray, int]  # a path, or (samples, sample_rate)

TARGET_RMS = 0.1  # F5-TTS utils_infer
SILENCE_RMS = 1e-4  # a reference quieter than this (-80 dBFS) carries no voice
CHARS_PER_SECOND = 14.0  # UTF-8 bytes per second of speech when no reference text gives the rate
MAX_TEXT_CHARS = 600
MIN_SECONDS = 0.3  # F5-TTS trains on 0.3-30 s clips
MAX_SECONDS = 30.0  # generated speech / given clip
MAX_REF_SECONDS = 15.0
MAX_ABS_EXP = 100.0  # |LivePortrait exp| bound of a --motion file (keypoint space is about [-1, 1])
READ_MARGIN_SECONDS = 1.0  # up to this much over a length limit is read (then refused by the exact check)
MAX_MOTION_BYTES = 64 * 2**20  # any one array of a --motion file (30 s of float64 [m, 21, 3] is 0.4 MiB)


@dataclass
class ReferenceAudio:
    wave: np.ndarray  # [s] 24 kHz, loudness-normalised, trimmed
    rms: float  # original RMS (for the inverse scaling)
    mel: torch.Tensor  # [n_ref, c] natural-log mel of the kept frames
    source: str


@dataclass
class MotionInput:
    exp: np.ndarray  # [m, k, 3]
    kp: np.ndarray | None  # canonical keypoints [m, k, 3] when the file has them
    source: str


# input readers ----------------------------------------------------------------------------------------------------
def _read_wave(
    audio: AudioLike, sample_rate: int, where: str, max_seconds: float = MAX_SECONDS
) -> tuple[np.ndarray, str]:
    """A path or ``(samples, rate)`` as mono float32 at ``sample_rate``; a file much longer than ``max_seconds`` is
    refused before it is read (its stated duration, or while decoding)."""
    if isinstance(audio, tuple):
        from jam_flow.data.audio import resample, to_mono

        data, rate = audio
        wave = resample(to_mono(np.asarray(data, dtype=np.float32)), int(rate), sample_rate)
        return wave, "<array>"
    path = Path(audio)
    if not path.is_file():
        raise InputError(f"{where}: {path} does not exist")
    try:
        return load_audio(path, sample_rate, max_seconds + READ_MARGIN_SECONDS), str(path)
    except InputError as err:
        raise InputError(f"{where}: {err}") from err


def _rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if wave.size else 0.0


def load_reference(
    audio: AudioLike, bundle: ModelBundle, block: int = 1, where: str = "--ref-audio"
) -> ReferenceAudio:
    """Load, downmix, resample and loudness-normalise a reference voice; keep ``nw // hop`` frames, with ``nw`` a
    multiple of ``block`` samples."""
    s = bundle.mel
    wave, source = _read_wave(audio, s.sample_rate, where, MAX_REF_SECONDS)
    if not np.all(np.isfinite(wave)):
        raise InputError(f"{where}: {source} contains NaN or infinite samples")
    rms = _rms(wave)
    if rms < SILENCE_RMS:
        raise InputError(
            f"{where}: {source} is silent (RMS {rms:.2e} < {SILENCE_RMS:.0e}); give a recording of the voice"
        )
    seconds = wave.shape[0] / s.sample_rate
    if seconds > MAX_REF_SECONDS:
        raise InputError(
            f"{where}: {source} is {seconds:.1f} s long; use a reference of at most {MAX_REF_SECONDS:.0f} s"
        )
    keep = (wave.shape[0] // block) * block
    if keep < max(block, s.n_fft):
        raise InputError(f"{where}: {source} is too short ({seconds:.3f} s); give at least 0.2 s of speech")
    wave = wave[:keep]
    if rms < TARGET_RMS:
        wave = wave * (TARGET_RMS / rms)
    mel = log_mel(wave, s)[: keep // s.hop_length]
    return ReferenceAudio(wave=wave.astype(np.float32), rms=rms, mel=mel, source=source)


def reference_loudness(wave: np.ndarray, ref: ReferenceAudio | None) -> np.ndarray:
    """Generated speech ``wave [s]`` back to the loudness of a quiet reference (F5-TTS: :func:`load_reference`
    scaled it up to ``TARGET_RMS``); unchanged without a reference or with a loud enough one."""
    if ref is not None and ref.rms < TARGET_RMS:
        return wave * (ref.rms / TARGET_RMS)
    return wave


def _fps_from_sidecar(path: Path) -> tuple[float | None, Path | None]:
    for cand in (path.with_suffix(".json"), path.parent / "motion.json", path.parent.parent / "dataset.json"):
        if cand.is_file():
            try:
                obj = loads_json(cand.read_text(encoding="utf-8"), f"--motion: {cand}")
            except (OSError, UnicodeDecodeError) as err:
                raise InputError(f"--motion: cannot read {cand} ({err})") from err
            fps = obj.get("fps") if isinstance(obj, dict) else None
            if fps is None and isinstance(obj, dict) and isinstance(obj.get("motion"), dict):
                fps = obj["motion"].get("fps")
            if fps is not None:
                if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps):
                    raise InputError(f"--motion: {cand}: field 'fps' must be a number, got {fps!r}")
                return float(fps), cand
    return None, None


MotionLike = str | Path | np.ndarray  # a file, or an array [m, k, 3] of LivePortrait exp at the model's fps


def load_motion(path: MotionLike, bundle: ModelBundle, where: str = "--motion") -> MotionInput:
    """Read motion: a dataset clip ``.npz`` (``exp`` [m, 21, 3], optional ``kp``) or a keypoint ``.npy`` [m, 21, 3];
    or take an array ``[m, 21, 3]`` (numpy or a CPU tensor) as it is, at the model's fps (the same checks).

    A sidecar ``<stem>.json`` / ``motion.json`` (or the dataset's ``dataset.json``) with an ``fps`` other than the
    model's is refused."""
    k = bundle.motion.num_kp
    if not isinstance(path, (str, Path)):
        source = "<array>"
        exp = _float_array(np.asarray(path), where, Path(source))
        return _checked_motion(exp, None, bundle, where, source, None)
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{where}: {path} does not exist")
    kp = None
    max_frames = math.ceil((MAX_SECONDS + READ_MARGIN_SECONDS) * bundle.motion.fps)
    try:
        if path.suffix == ".npz":
            heads = npz_members(path, f"{where}: {path}")
            if "exp" in heads:
                _check_motion_header(heads["exp"], max_frames, where, path, "'exp'")
            with np.load(path, allow_pickle=False) as z:
                if "exp" not in z.files:
                    raise InputError(f"{where}: {path} has no 'exp' array (keys: {sorted(z.files)})")
                exp = _float_array(z["exp"], where, path)
                if "kp" in z.files and "kp" in heads and heads["kp"].shape == exp.shape:
                    kp = _float_array(z["kp"], where, path)
        elif path.suffix == ".npy":
            _check_motion_header(npy_header(path, f"{where}: {path}"), max_frames, where, path, "the array")
            exp = _float_array(np.load(path, allow_pickle=False), where, path)
        else:
            raise InputError(
                f"{where}: expected a motion .npy [m, {k}, 3] or a dataset clip .npz, got {path.name}"
            )
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(f"{where}: cannot read {path} ({err})") from err
    return _checked_motion(exp, kp, bundle, where, str(path), path)


def _checked_motion(
    exp: np.ndarray, kp: np.ndarray | None, bundle: ModelBundle, where: str, source: str, path: Path | None
) -> MotionInput:
    """The checks of :func:`load_motion` (shape, finite, magnitude, sidecar fps, duration)."""
    k = bundle.motion.num_kp
    if exp.ndim != 3 or exp.shape[1:] != (k, 3) or exp.shape[0] < 1:
        raise InputError(
            f"{where}: expected an array [m, {k}, 3] or a motion .npz, got shape {tuple(exp.shape)}"
        )
    if not np.all(np.isfinite(exp)):
        raise InputError(f"{where}: {source} contains NaN or infinite values")
    if np.abs(exp).max() > MAX_ABS_EXP:
        raise InputError(
            f"{where}: {source} holds values up to {np.abs(exp).max():.3g}; LivePortrait expression offsets are "
            f"keypoint-space units (|exp| <= {MAX_ABS_EXP:g}; typically below 0.5)"
        )
    if kp is not None and kp.shape != exp.shape:
        kp = None  # canonical keypoints only feed the preview; a mismatched track is ignored
    fps, sidecar = _fps_from_sidecar(path) if path is not None else (None, None)
    if fps is not None and abs(fps - bundle.motion.fps) > 1e-6:
        raise InputError(
            f"{where}: {sidecar} says fps {fps:g}, but the model runs at {bundle.motion.fps} fps; "
            f"resample the motion to {bundle.motion.fps} fps"
        )
    seconds = exp.shape[0] / bundle.motion.fps
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise InputError(
            f"{where}: {exp.shape[0]} frames = {seconds:.2f} s; expected {MIN_SECONDS}-{MAX_SECONDS:.0f} s"
        )
    return MotionInput(exp=exp, kp=kp, source=source)


def _check_motion_header(head, max_frames: int, where: str, path: Path, name: str) -> None:
    """Refuse, from its header alone, a motion array longer than ``max_frames`` or larger than
    :data:`MAX_MOTION_BYTES` (nothing is allocated for it)."""
    if head.shape and head.shape[0] > max_frames:
        raise InputError(
            f"{where}: {path}: {name} declares {head.shape[0]} frames (shape {head.shape}); expected "
            f"{MIN_SECONDS}-{MAX_SECONDS:.0f} s of motion (at most {max_frames} frames are read)"
        )
    check_array_size(head, MAX_MOTION_BYTES, f"{where}: {path}", name)


def _float_array(arr: np.ndarray, where: str, path: Path) -> np.ndarray:
    """A motion array as float32; integer and boolean arrays are refused (LivePortrait values are real numbers,
    so such a file is not motion), float16/float64 are converted."""
    arr = np.asarray(arr)
    if arr.dtype.kind != "f":
        raise InputError(
            f"{where}: {path} holds a {arr.dtype} array; expected floating-point LivePortrait expression "
            f"offsets (float32 [m, k, 3])"
        )
    return arr.astype(np.float32)


def _encode_text(bundle: ModelBundle, text: str, where: str = "--text") -> list[int]:
    if text is None or not text.strip():
        raise InputError(f"{where}: the text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(
            f"{where}: {len(text)} characters is too long (at most {MAX_TEXT_CHARS}; split the text)"
        )
    return bundle.vocab.encode(text, where=where)


def _check_duration(seconds: float, where: str = "--duration") -> float:
    if not math.isfinite(seconds) or not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise InputError(f"{where}: {seconds} s is out of range; expected {MIN_SECONDS}-{MAX_SECONDS:.0f} s")
    return float(seconds)


def _generated_frames(
    bundle: ModelBundle,
    gen_text: str | None,
    ref: ReferenceAudio | None,
    ref_text: str | None,
    duration: float | None,
) -> int:
    """Mel frames of generated speech: ``duration``, else F5's rule, else the chars-per-second rule."""
    s = bundle.mel
    if duration is not None:
        seconds = _check_duration(duration)
        return max(1, round(seconds * s.sample_rate / s.hop_length))
    gen_bytes = len((gen_text or "").encode("utf-8"))
    if ref is not None and ref_text:
        ref_len = ref.mel.shape[0]
        speed = 0.3 if gen_bytes < 10 else 1.0  # F5-TTS utils_infer
        frames = int(ref_len / len(ref_text.encode("utf-8")) * gen_bytes / speed)
    else:
        frames = round(gen_bytes / CHARS_PER_SECOND * s.frame_rate)
    frames = max(frames, math.ceil(MIN_SECONDS * s.frame_rate))  # a very short text still gets 0.3 s
    seconds = frames * s.hop_length / s.sample_rate
    if seconds > MAX_SECONDS:
        raise InputError(
            f"--text: the estimated duration {seconds:.1f} s exceeds {MAX_SECONDS:.0f} s; "
            f"split the text or set --duration"
        )
    return frames


def _join_text(ref_text: str | None, gen_text: str) -> str:
    if not ref_text:
        return gen_text
    if len(ref_text[-1].encode("utf-8")) == 1 and not ref_text.endswith(" "):
        ref_text = ref_text + " "  # F5-TTS appends a space after a 1-byte final character
    return ref_text + gen_text


def _fit_frames(arr: np.ndarray, m: int, where: str, crop: bool = True) -> np.ndarray:
    """Bring a motion track to ``m`` frames: one missing frame is padded by repeating the last one; extra frames
    are cropped (``crop=True``) or, for a clip that must match its audio (``crop=False``), at most one."""
    extra = arr.shape[0] - m
    if extra < -1:
        raise InputError(f"{where}: {arr.shape[0]} motion frames, but the audio needs {m}")
    if extra > 1 and not crop:
        raise InputError(
            f"{where}: {arr.shape[0]} motion frames, but the audio covers {m}; give the clip's own motion"
        )
    if extra >= 0:
        return arr[:m]
    return np.concatenate([arr, np.repeat(arr[-1:], -extra, axis=0)])
