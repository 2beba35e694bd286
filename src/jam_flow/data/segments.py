"""Preprocessing in one decoding pass: long videos cut at pauses into clips, and each clip's LivePortrait motion
extracted from frames decoded once (face detection, box smoothing and cropping in the same pass).

Dimension legend: s audio samples (24 kHz), m motion frames (25 fps), k keypoints (21), H, W frame size.

* :func:`cut_points` splits a recording of more than ``max_s`` seconds into pieces of at most ``max_s`` seconds,
  each cut placed at the quietest 0.2 s of the allowed window (a pause between words or sentences when there is
  one). Cuts lie on the motion grid (multiples of ``sample_rate / fps`` samples), so a piece's motion frames are
  a contiguous run of the video's.
* :class:`ClipMotion` receives a clip's frames in order (``push``) and crops each one as soon as its smoothed face
  box is final: a box needs the next face detection and ``box_smoothing // 2`` frames beyond it, so only those
  few frames wait in memory. The result equals the two-pass path (detect on every frame of a first pass, smooth,
  then crop on a second pass): the same detections, the same interpolation and moving average, in the same order.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch

__all__ = ["ClipFailure", "cut_points", "ClipMotion"]


class ClipFailure(Exception):
    """A clip that cannot be used; ``kind`` is one of: corrupt, no-audio, no-video, too-short, no-face, error."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def cut_points(
    num_samples: int, wave: np.ndarray, sample_rate: int, fps: int, max_s: float
) -> list[tuple[int, int]]:
    """``[(start, end)]`` sample ranges covering ``wave[:num_samples]``; one range when it lasts at most
    ``max_s`` seconds (or ``max_s`` is 0). Each piece lasts between ``max_s / 2`` and ``max_s`` seconds (the last
    one may be shorter)."""
    hop = sample_rate // fps  # samples per motion frame (960 at 24 kHz / 25 fps)
    if max_s <= 0 or num_samples <= max_s * sample_rate:
        return [(0, num_samples)]
    n_frames = num_samples // hop
    x = np.asarray(wave[: n_frames * hop], np.float64).reshape(n_frames, hop)
    energy = np.log10((x**2).mean(axis=1) + 1e-10)
    smooth = np.convolve(energy, np.ones(5) / 5, mode="same")  # 0.2 s: a pause, not a single quiet frame
    longest = max(int(max_s * fps), 2)
    shortest = max(longest // 2, 1)
    cuts, start = [], 0
    while num_samples - start * hop > max_s * sample_rate:
        lo, hi = start + shortest, min(start + longest, n_frames - 1)
        cut = lo + int(np.argmin(smooth[lo : hi + 1])) if hi >= lo else start + longest
        cuts.append(cut)
        start = cut
    bounds = [0, *[c * hop for c in cuts], num_samples]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


@torch.no_grad()
def extract_batch(extractor, batch: list[np.ndarray], device: Any, outs: dict[str, list[np.ndarray]]) -> None:
    """Run the motion extractor on the crops in ``batch`` (then emptied) and append each refined keypoint
    quantity to ``outs[key]``."""
    from jam_flow.liveportrait.keypoints import refine_kp_info

    img = torch.from_numpy(np.stack(batch)).to(device)
    info = refine_kp_info(extractor(img))
    for key, val in info.items():
        outs.setdefault(key, []).append(val.float().cpu().numpy())
    batch.clear()


def motion_arrays(outs: dict[str, list[np.ndarray]], m: int) -> dict[str, np.ndarray]:
    """The clip arrays (``exp``/``kp`` [m, k, 3], ``pitch``/``yaw``/``roll`` [m], ``t`` [m, 3], ``scale``
    [m, 1]) from the per-batch outputs that :func:`extract_batch` collected."""
    cat = {key: np.concatenate(vals) for key, vals in outs.items()}
    return {
        "exp": cat["exp"].reshape(m, -1, 3),
        "kp": cat["kp"].reshape(m, -1, 3),
        "pitch": cat["pitch"].reshape(m),
        "yaw": cat["yaw"].reshape(m),
        "roll": cat["roll"].reshape(m),
        "t": cat["t"].reshape(m, 3),
        "scale": cat["scale"].reshape(m, 1),
    }


class ClipMotion:
    """One clip's motion from its frames, pushed in order (see the module docstring).

    Args:
        n_frames: motion frames of the clip (the frames pushed are ``0 .. n_frames - 1``).
        cfg: the preprocessing settings (``detect_every``, ``box_smoothing``, crop, ``batch_size``, device).
        extractor: LivePortrait MotionExtractor.
        detector: face detector (``detect(rgb) -> [box, ...]``).
    """

    def __init__(self, n_frames: int, cfg: Any, extractor, detector) -> None:
        self.n = int(n_frames)
        self.cfg, self.extractor, self.detector = cfg, extractor, detector
        self.found: dict[int, tuple[float, ...]] = {}
        self.tried = 0
        self.half = cfg.box_smoothing // 2 if cfg.box_smoothing > 1 and self.n > 1 else 0
        self.pending: deque[tuple[int, np.ndarray]] = deque()
        self.filled: dict[int, tuple[float, ...]] = {}
        self.boxes: list[tuple[float, ...]] = []
        self.batch: list[np.ndarray] = []
        self.outs: dict[str, list[np.ndarray]] = {}
        self.seen = -1
        de = cfg.detect_every
        self.total_tries = len(range(0, self.n, de)) + (1 if (self.n - 1) % de else 0)

    def push(self, j: int, rgb: np.ndarray) -> None:
        if j != self.seen + 1:
            raise ValueError(f"frame {j} pushed after frame {self.seen}")
        self.seen = j
        if j % self.cfg.detect_every == 0 or j == self.n - 1:
            self.tried += 1
            boxes = self.detector.detect(rgb)
            if boxes:
                self.found[j] = tuple(float(v) for v in boxes[0])
            elif len(self.found) + self.total_tries - self.tried < self.cfg.min_face_ratio * self.total_tries:
                self._no_face(self.total_tries)  # cannot reach the ratio any more: stop holding frames
        self.pending.append((j, rgb))
        self._emit(final=False)

    def finish(self) -> tuple[dict[str, np.ndarray], list[tuple[float, ...]]]:
        """The clip's arrays (``exp``, ``kp``, ``pitch``, ``yaw``, ``roll``, ``t``, ``scale``) and its boxes;
        ``ClipFailure`` ``no-face`` when too few sampled frames hold a face."""
        if self.seen != self.n - 1:
            raise ValueError(f"{self.seen + 1} of {self.n} frames pushed")
        if not self.found or len(self.found) < self.cfg.min_face_ratio * self.tried:
            self._no_face(self.tried)
        self._emit(final=True)
        if self.batch:
            self._flush()
        return motion_arrays(self.outs, self.n), self.boxes

    def _no_face(self, tries: int) -> None:
        raise ClipFailure("no-face", f"a face was found in {len(self.found)} of {tries} sampled frames")

    # ------------------------------------------------------------------------------------------------ boxes
    def _filled_final(self, i: int, final: bool) -> bool:
        """Box ``i`` (interpolated between detections) no longer changes: a detection at or after ``i`` was
        made, or every frame has been seen."""
        return final or (bool(self.found) and max(self.found) >= i)

    def _filled(self, i: int) -> tuple[float, ...]:
        if i not in self.filled:
            keys = np.array(sorted(self.found))
            boxes = np.array([self.found[k] for k in keys])
            self.filled[i] = tuple(float(np.interp(i, keys, boxes[:, c])) for c in range(4))
        return self.filled[i]

    def _smoothed(self, i: int) -> tuple[float, ...]:
        if self.half == 0:
            return tuple(map(float, self._filled(i)))
        lo, hi = max(0, i - self.half), min(self.n, i + self.half + 1)
        arr = np.asarray([self._filled(k) for k in range(lo, hi)], dtype=np.float64)
        return tuple(float(v) for v in arr.mean(axis=0))

    def _emit(self, final: bool) -> None:
        from jam_flow.liveportrait.face import crop_face

        while self.pending:
            i = self.pending[0][0]
            if not (final or self._filled_final(min(self.n - 1, i + self.half), final)) or not self.found:
                return
            _, rgb = self.pending.popleft()
            box = self._smoothed(i)
            self.boxes.append(box)
            crop, _ = crop_face(
                rgb, box, size=self.cfg.crop_size, scale=self.cfg.crop_scale, vy_ratio=self.cfg.crop_vy
            )
            self.batch.append(crop)
            if len(self.batch) == self.cfg.batch_size:
                self._flush()
            for k in [k for k in self.filled if k < i - self.half]:
                del self.filled[k]

    def _flush(self) -> None:
        extract_batch(self.extractor, self.batch, self.cfg.device, self.outs)
