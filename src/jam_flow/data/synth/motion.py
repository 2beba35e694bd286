"""Procedural LivePortrait-style motion for one synthetic clip (everything from a seeded numpy RNG).

Dimension legend: m motion frames (25 fps), k keypoints (21), 3 = x, y, z.

* mouth keypoints 14, 17, 19, 20: the viseme track of :mod:`jam_flow.data.synth.visemes` times a per-speaker
  articulation gain, plus a per-speaker offset on the non-opening components and N(0, 0.0003) frame noise;
* eyes 11, 13, 15, 16: blinks (Poisson, 0.35 / s; 80 ms closing, 150 ms opening, raised-cosine shape);
* brows 1, 2: slow smooth noise plus raises on some primary-stressed vowels;
* other keypoints: a per-speaker offset plus slow smooth noise;
* head pose (degrees): per-speaker resting pose + slow smooth noise (std 2 / 3 / 1 degrees) + a small nod that
  follows the mouth opening; scale and t: per-speaker constants + slow drift; kp: per-speaker canonical
  keypoints + N(0, 1e-4) frame noise.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from jam_flow.data.synth.visemes import (
    CLOSE_VOWEL,
    MID_VOWEL,
    OPEN_VOWEL,
    ROUND_VOWEL,
    mouth_from_articulation,
)

__all__ = ["SpeakerStyle", "speaker_style", "clip_motion", "smooth_noise"]

_MOUTH = (14, 17, 19, 20)
_EYES = {11: 0.012, 13: 0.008, 15: 0.012, 16: 0.008}  # blink displacement along y at full closure
_BROWS = (1, 2)
_OPENING_COMPONENTS = {
    (17, 1),
    (19, 1),
    (19, 2),
}  # kept free of speaker offsets so mouth_opening(closed) == 0


@dataclass(frozen=True)
class SpeakerStyle:
    """Per-speaker constants (derived from the corpus seed and the speaker name)."""

    kp: np.ndarray  # [k, 3] canonical keypoints
    exp_offset: np.ndarray  # [k, 3] resting expression offset (zero on the opening components)
    gain: float  # articulation amplitude
    pose: np.ndarray  # [3] resting pitch, yaw, roll (degrees)
    scale: float
    t: np.ndarray  # [3]


def speaker_style(seed: int, speaker: str) -> SpeakerStyle:
    rng = np.random.default_rng([seed, zlib.crc32(speaker.encode()), 7])
    template = np.random.default_rng(20240521).uniform(-0.6, 0.6, size=(21, 3))  # one face layout for all
    offset = rng.normal(0.0, 0.004, size=(21, 3))
    for i in _MOUTH:
        offset[i] *= 0.25
    for kp_i, axis in _OPENING_COMPONENTS:
        offset[kp_i, axis] = 0.0
    return SpeakerStyle(
        kp=template + rng.normal(0.0, 0.03, size=(21, 3)),
        exp_offset=offset,
        gain=float(rng.uniform(0.85, 1.15)),
        pose=np.array([rng.normal(0, 3.0), rng.normal(0, 4.0), rng.normal(0, 2.0)]),
        scale=float(rng.uniform(1.35, 1.65)),
        t=np.array([rng.normal(0, 0.02), rng.normal(0, 0.02), rng.normal(0, 0.01)]),
    )


def smooth_noise(rng: np.random.Generator, m: int, sigma_frames: float, dims: int = 1) -> np.ndarray:
    """Unit-variance Gaussian noise low-passed by a Gaussian kernel (std ``sigma_frames``) -> ``[m, dims]``."""
    radius = int(np.ceil(3 * sigma_frames))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_frames) ** 2)
    kernel /= np.sqrt((kernel**2).sum())  # filtered white noise keeps unit variance
    white = rng.normal(size=(m + 2 * radius, dims))
    return np.stack([np.convolve(white[:, d], kernel, mode="valid") for d in range(dims)], axis=1)


def _blinks(rng: np.random.Generator, m: int, fps: int) -> np.ndarray:
    """Eye closure in [0, 1] per frame."""
    out = np.zeros(m)
    t = np.arange(m) / fps
    onset = rng.exponential(1 / 0.35) * 0.6  # first blink comes a little earlier than the mean gap
    while onset < m / fps:
        depth = rng.uniform(0.8, 1.0)
        close, reopen = 0.08, 0.15
        rel = t - onset
        down = (rel >= 0) & (rel < close)
        up = (rel >= close) & (rel < close + reopen)
        out[down] = np.maximum(out[down], depth * 0.5 * (1 - np.cos(np.pi * rel[down] / close)))
        out[up] = np.maximum(out[up], depth * 0.5 * (1 + np.cos(np.pi * (rel[up] - close) / reopen)))
        onset += max(rng.exponential(1 / 0.35), 0.4)
    return out


def clip_motion(
    rng: np.random.Generator, style: SpeakerStyle, track: np.ndarray, segments: np.ndarray, fps: int = 25
) -> dict[str, np.ndarray]:
    """Motion arrays of one clip from its articulation ``track [m, 3]`` and viseme ``segments [q, 4]``."""
    m = track.shape[0]
    exp = np.repeat(style.exp_offset[None], m, axis=0)
    exp += 0.0005 * smooth_noise(rng, m, 12.0, 63).reshape(m, 21, 3)
    exp[:, list(_MOUTH)] = mouth_from_articulation(track, style.gain) + style.exp_offset[list(_MOUTH)]
    exp[:, list(_MOUTH)] += rng.normal(0.0, 0.0003, size=(m, 4, 3))

    closure = _blinks(rng, m, fps)
    for kp_i, amp in _EYES.items():
        exp[:, kp_i, 1] += amp * closure

    times = np.arange(m) / fps
    brow = 0.0015 * smooth_noise(rng, m, 15.0, 1)[:, 0]
    vowel = np.isin(segments[:, 2], (OPEN_VOWEL, MID_VOWEL, CLOSE_VOWEL, ROUND_VOWEL)) & (segments[:, 3] > 0)
    for start, end in segments[vowel, :2]:
        if rng.uniform() < 0.3:
            centre = 0.5 * (start + end)
            brow -= rng.uniform(0.002, 0.004) * np.exp(-0.5 * ((times - centre) / 0.12) ** 2)  # raise = -y
    for kp_i in _BROWS:
        exp[:, kp_i, 1] += brow

    slow = smooth_noise(rng, m, 12.0, 3)
    opening = np.clip(track[:, 0], 0.0, None)
    pose = style.pose[None] + slow * np.array([2.0, 3.0, 1.0])[None]
    pose[:, 0] -= 1.5 * (opening - opening.mean())  # chin drops a little with an open mouth
    drift = smooth_noise(rng, m, 20.0, 4)
    scale = style.scale + 0.004 * drift[:, :1]
    t = style.t[None] + 0.003 * drift[:, 1:]
    t[:, 0] += 0.002 * slow[:, 1]  # translation follows the yaw a little
    kp = style.kp[None] + rng.normal(0.0, 1e-4, size=(m, 21, 3))
    f32 = np.float32
    return {
        "exp": exp.astype(f32),
        "pitch": pose[:, 0].astype(f32),
        "yaw": pose[:, 1].astype(f32),
        "roll": pose[:, 2].astype(f32),
        "scale": scale.astype(f32),
        "t": t.astype(f32),
        "kp": kp.astype(f32),
    }
