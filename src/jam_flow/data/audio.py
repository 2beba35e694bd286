"""Audio file I/O: any readable file -> mono float32 at a target rate; mono wav writing.

Dimension legend: s samples, ch channels. Output waveforms are ``np.float32 [s]`` in [-1, 1].

``soundfile`` (libsndfile) reads wav/flac/ogg and friends; anything else (mp4, mkv, m4a, mp3, ...) is decoded with
PyAV. Channels are averaged to mono and the signal is resampled with ``torchaudio.functional.resample``
(band-limited sinc interpolation, torchaudio's defaults).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from jam_flow.data.limits import audio_seconds
from jam_flow.errors import InputError

__all__ = ["load_audio", "save_wav", "resample", "decode_audio_av", "to_mono"]

_SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".w64", ".caf"}


def to_mono(data: np.ndarray) -> np.ndarray:
    """``[s]`` or ``[s, ch]`` -> ``[s]`` float32 (channel mean)."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(data, dtype=np.float32)


def resample(wave: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Resample a mono float32 ``[s]`` waveform (no-op when the rates agree)."""
    if int(orig_sr) == int(new_sr):
        return np.ascontiguousarray(wave, dtype=np.float32)
    out = AF.resample(
        torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), int(orig_sr), int(new_sr)
    )
    return out.numpy().astype(np.float32, copy=False)


def decode_audio_av(path: str | Path, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of any container with PyAV -> (mono float32 [s], native sample rate).

    Raises ``InputError`` naming the file when it cannot be opened or has no audio stream, or (``max_seconds``) as
    soon as more than that much audio has been decoded (memory stays bounded whatever the container states)."""
    import av

    path = Path(path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise InputError(f"{path}: cannot open as an audio/video file ({err})") from err
    with container:
        streams = container.streams.audio
        if not streams:
            raise InputError(f"{path}: has no audio stream")
        stream = streams[0]
        chunks: list[np.ndarray] = []
        rate = stream.codec_context.sample_rate or stream.rate
        total = 0
        try:
            for frame in container.decode(stream):
                raw = frame.to_ndarray()
                rate = frame.sample_rate or rate
                arr = raw.astype(np.float32)
                if np.issubdtype(raw.dtype, np.integer):
                    arr = arr / float(-np.iinfo(raw.dtype).min)
                # planar formats give [ch, s]; packed ones give [1, s * ch]
                if frame.format.is_planar:
                    arr = arr.mean(axis=0)
                else:
                    arr = arr.reshape(-1, len(frame.layout.channels)).mean(axis=1)
                chunks.append(arr.astype(np.float32))
                total += arr.shape[0]
                if max_seconds is not None and rate and total > max_seconds * rate:
                    raise InputError(
                        f"{path}: holds more than {max_seconds:g} s of audio (at most that is read)"
                    )
        except InputError:
            raise
        except (av.error.FFmpegError, ValueError) as err:
            raise InputError(f"{path}: audio stream is corrupt ({err})") from err
    if not chunks:
        raise InputError(f"{path}: audio stream decodes to no samples")
    return np.concatenate(chunks).astype(np.float32), int(rate)


def load_audio(path: str | Path, sample_rate: int = 24000, max_seconds: float | None = None) -> np.ndarray:
    """Read an audio (or video) file as mono float32 ``[s]`` at ``sample_rate``.

    Raises ``InputError`` naming the path for a missing, unreadable or empty file. With ``max_seconds`` a longer
    file is refused before it is read (the duration its header states), or while decoding (containers that state
    none), so memory stays bounded."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: audio file does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: audio file is empty (0 bytes)")
    if max_seconds is not None:
        seconds = audio_seconds(path)
        if seconds is not None and seconds > max_seconds:
            raise InputError(f"{path}: {seconds:.1f} s of audio; at most {max_seconds:g} s is read")
    wave: np.ndarray | None = None
    rate = 0
    if path.suffix.lower() in _SOUNDFILE_SUFFIXES:
        try:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
            wave = to_mono(data)
        except (sf.LibsndfileError, RuntimeError, ValueError):
            wave = None  # fall back to PyAV, which knows more codecs
    if wave is None:
        wave, rate = decode_audio_av(path, max_seconds)
    if wave.size == 0:
        raise InputError(f"{path}: audio file holds no samples")
    return resample(wave, rate, sample_rate)


def save_wav(
    path: str | Path, wave: np.ndarray | torch.Tensor, sample_rate: int, subtype: str = "PCM_16"
) -> Path:
    """Write a mono ``[s]`` waveform (float in [-1, 1], clipped; or int16 samples) as a wav file; returns the path."""
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().numpy()
    wave = np.asarray(wave)
    if wave.dtype != np.int16:  # int16 is written verbatim (exact round trip with reading as x / 32768)
        wave = np.clip(wave.astype(np.float32), -1.0, 1.0)
    if wave.ndim == 2 and 1 in wave.shape:
        wave = wave.reshape(-1)
    if wave.ndim != 1:
        raise InputError(f"save_wav({path}): expected a mono waveform [samples], got shape {wave.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, int(sample_rate), subtype=subtype, format="WAV")
    return path
