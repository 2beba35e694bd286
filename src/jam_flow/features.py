"""Feature settings shared by data, models and exported weights (the bottom layer: imports nothing of ours).

Dimension legend used throughout the package:
    b batch, n mel frames (93.75 / s), m motion frames (25 / s), k keypoints (21), c mel channels (100).

Masks mean True = valid, everywhere.

The two clocks are related by exact integer arithmetic: audio frame ``i`` covers time ``i * hop / sr`` and
belongs to motion frame ``(i * fps * hop) // sr`` (``(4 * i) // 15`` at 24 kHz, hop 256, 25 fps). This module is the
one owner of that mapping (:class:`FrameClock` and the functions below); everything else calls it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from math import gcd, lcm

__all__ = [
    "MelSettings",
    "MotionSettings",
    "FrameClock",
    "audio_to_motion_frame",
    "first_audio_frame",
    "frame_of",
    "frame_ratio",
    "num_motion_frames",
]


def _check_int(name: str, value, lo: int, hi: int) -> None:
    """``ValueError`` (naming the field) unless ``value`` is an integer (not a bool) in ``[lo, hi]``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and lo <= value <= hi
    if not ok:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


def _check_real(name: str, value, lo: float, hi: float, allow_none: bool = False) -> None:
    """``ValueError`` (naming the field) unless ``value`` is a finite number in ``[lo, hi]`` (or None if allowed)."""
    if value is None and allow_none:
        return
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not lo <= value <= hi:
        raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")


@dataclass(frozen=True)
class MelSettings:
    """Log-mel exactly as F5-TTS ("vocos" mel type) and Vocos define it (paper appendix A). Every field is checked
    on construction (type and range; ``ValueError`` naming the field), so a malformed checkpoint or dataset is
    refused before anything is sized from it."""

    sample_rate: int = 24000
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 100
    f_min: float = 0.0
    f_max: float | None = None
    log_clamp: float = 1e-5

    def __post_init__(self) -> None:
        _check_int("sample_rate", self.sample_rate, 1000, 384000)
        _check_int("n_fft", self.n_fft, 16, 65536)
        _check_int("hop_length", self.hop_length, 1, self.n_fft)
        _check_int("win_length", self.win_length, 1, self.n_fft)
        _check_int("n_mels", self.n_mels, 1, 1024)
        _check_real("f_min", self.f_min, 0.0, self.sample_rate / 2)
        _check_real("f_max", self.f_max, self.f_min, self.sample_rate / 2, allow_none=True)
        _check_real("log_clamp", self.log_clamp, 1e-30, 1.0)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        """Frames produced by a centred STFT: ``1 + num_samples // hop``."""
        return 1 + num_samples // self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)


# LivePortrait expression keypoints that carry mouth articulation. LP's own lip list is [6, 12, 14, 17, 19, 20];
# 6 and 12 are exactly zero in LP's closed-mouth reference and have the smallest variance, leaving 4 keypoints,
# which matches the paper's e_mouth in R^{T x 4 x 3} (paper section 3.1).
# See docs/architecture.md, "Choices where the paper is silent".
DEFAULT_MOUTH_INDICES: tuple[int, ...] = (14, 17, 19, 20)


@dataclass(frozen=True)
class MotionSettings:
    """LivePortrait motion at a fixed frame rate (paper appendix A: 25 fps)."""

    fps: int = 25
    num_kp: int = 21
    mouth_indices: tuple[int, ...] = field(default=DEFAULT_MOUTH_INDICES)

    def __post_init__(self) -> None:
        _check_int("fps", self.fps, 1, 1000)
        _check_int("num_kp", self.num_kp, 1, 1024)
        if isinstance(self.mouth_indices, (str, bytes)) or not hasattr(self.mouth_indices, "__iter__"):
            raise ValueError(f"mouth_indices must be a list of keypoint indices, got {self.mouth_indices!r}")
        for i in self.mouth_indices:
            _check_int("mouth_indices[...]", i, 0, self.num_kp - 1)
        idx = tuple(int(i) for i in self.mouth_indices)
        object.__setattr__(self, "mouth_indices", idx)
        if len(set(idx)) != len(idx) or not all(0 <= i < self.num_kp for i in idx):
            raise ValueError(
                f"mouth_indices must be distinct keypoint indices in [0, {self.num_kp}), got {list(idx)}"
            )

    @property
    def rest_indices(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.num_kp) if i not in self.mouth_indices)

    @property
    def mouth_dim(self) -> int:
        return 3 * len(self.mouth_indices)

    @property
    def rest_dim(self) -> int:
        return 3 * (self.num_kp - len(self.mouth_indices))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mouth_indices"] = list(self.mouth_indices)
        return d


def frame_ratio(sample_rate: int, hop_length: int, fps: int) -> tuple[int, int]:
    """``(num, den)`` with ``f(i) = (i * num) // den``: the reduced fraction ``hop * fps / sample_rate``."""
    num, den = hop_length * fps, sample_rate
    g = gcd(num, den)
    return num // g, den // g


def frame_of(i, num: int, den: int):
    """Motion frame of audio frame ``i`` at the reduced ratio ``(num, den)``: ``(i * num) // den`` (floor division,
    so ``frame_of(-1) + 1 == 0``). Python ints and integer tensors / arrays alike."""
    return (i * num) // den


def first_audio_frame(j, num: int, den: int):
    """Smallest audio frame ``i`` with ``frame_of(i) >= j`` (``ceil(j * den / num)``, exact; ints or int tensors)."""
    return -((-j * den) // num)


def audio_to_motion_frame(i, sample_rate: int = 24000, hop_length: int = 256, fps: int = 25):
    """Motion frame index that audio frame ``i`` falls in: ``floor(i * hop * fps / sr)`` in exact integers.

    Works on Python ints and on integer tensors/arrays alike. The fraction is reduced first so that the
    intermediate product stays small (``(4 * i) // 15`` at the defaults).
    """
    return frame_of(i, *frame_ratio(sample_rate, hop_length, fps))


@dataclass(frozen=True)
class FrameClock:
    """The mel <-> motion frame mapping of one pair of settings (exact integers; ints or integer tensors).

    * :meth:`motion_frame`: the motion frame that mel frame ``i`` falls in;
    * :meth:`motion_frames`: motion frames spanned by ``n`` mel frames, ``motion_frame(n - 1) + 1`` (0 for ``n = 0``);
    * :meth:`mel_frames`: the mel length that covers ``m`` motion frames whole, ``ceil(m * sr / (hop * fps))``
      (``ceil(15 m / 4)``): every mel frame of motion frames ``0 .. m-1`` and no other, so
      ``motion_frames(mel_frames(m)) == m`` (the largest such length);
    * :attr:`block_samples`: the shortest span that is a whole number of mel hops and of motion frames (3840
      samples = 15 mel frames = 4 motion frames at the defaults).
    """

    sample_rate: int = 24000
    hop_length: int = 256
    fps: int = 25

    @classmethod
    def of(cls, mel: MelSettings, motion: MotionSettings) -> FrameClock:
        return cls(mel.sample_rate, mel.hop_length, motion.fps)

    @property
    def ratio(self) -> tuple[int, int]:
        return frame_ratio(self.sample_rate, self.hop_length, self.fps)

    def motion_frame(self, i):
        return frame_of(i, *self.ratio)

    def motion_frames(self, n):
        return self.motion_frame(n - 1) + 1

    def mel_frames(self, m):
        return first_audio_frame(m, *self.ratio)

    @property
    def block_samples(self) -> int:
        return lcm(self.hop_length, self.sample_rate // gcd(self.sample_rate, self.fps))


def num_motion_frames(duration_s: float, fps: int = 25) -> int:
    """Motion frames for a clip of ``duration_s`` seconds (frames whose start lies inside the clip)."""
    import math

    return max(1, math.ceil(round(duration_s * fps, 6)))
