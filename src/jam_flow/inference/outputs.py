"""Output writers: ``audio.wav``, ``motion.npy`` + ``motion.json`` (``generation.json`` without motion) and a
keypoint ``preview.mp4`` (PyAV).

Dimension legend: s audio samples, m motion frames, k keypoints (21), H/W preview height/width in pixels.

* ``motion.npy`` is ``float32 [m, 21, 3]`` in LivePortrait's ``exp`` layout (expression deformation added to the
  rotated canonical keypoints, docs/liveportrait notes): the mouth keypoints hold the generated e_mouth, the others
  the given e_rest (or the neutral expression, the training-set mean). A renderer consumes it directly.
* ``motion.json`` says how to read it: fps, mouth indices, frame count, task, seed, nfe, cfg, source files.
* ``preview.mp4`` (H.264 + AAC) draws, per motion frame, the 2-D projection ``(x, y)`` of ``kp + exp`` for the 21
  keypoints (``kp`` = the clip's canonical keypoints when known, else :data:`NEUTRAL_KP`), mouth keypoints in a
  second colour, with the audio muxed in: you can check the sync without LivePortrait weights. Image y points down,
  like LivePortrait's keypoint space; one fixed box (over all frames) maps keypoints to pixels, so motion shows.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from jam_flow.data.audio import save_wav
from jam_flow.errors import InputError, NonFiniteError

__all__ = [
    "OUTPUT_FILES",
    "SAMPLING_CAUSES",
    "VOCODER_CAUSES",
    "check_finite",
    "outputs_owned",
    "NEUTRAL_KP",
    "neutral_template",
    "write_wav",
    "write_motion",
    "write_preview",
    "draw_keypoints",
]

# A schematic frontal face in LivePortrait's canonical-keypoint range ([-1, 1], y down), used by the preview when
# no canonical keypoints are known. Indices 14, 17, 19, 20 (LivePortrait's lip keypoints, the default mouth set)
# sit on the mouth; the other 17 trace the face outline, brows, eyes and nose. It is a drawing aid, not LP's
# learned canonical pose (which depends on the source image).
NEUTRAL_KP = np.array(
    [
        [-0.55, -0.30, 0.0],  # 0 brow / temple left
        [-0.35, -0.38, 0.0],  # 1 brow left
        [-0.15, -0.34, 0.0],  # 2 brow left inner
        [0.15, -0.34, 0.0],  # 3 brow right inner
        [0.35, -0.38, 0.0],  # 4 brow right
        [0.55, -0.30, 0.0],  # 5 temple right
        [-0.32, -0.18, 0.0],  # 6 eye left
        [0.32, -0.18, 0.0],  # 7 eye right
        [0.00, -0.05, 0.1],  # 8 nose bridge
        [0.00, 0.10, 0.2],  # 9 nose tip
        [-0.62, 0.05, -0.1],  # 10 cheek left
        [-0.22, -0.16, 0.0],  # 11 eye left inner
        [0.62, 0.05, -0.1],  # 12 cheek right
        [0.22, -0.16, 0.0],  # 13 eye right inner
        [-0.20, 0.33, 0.0],  # 14 mouth left corner
        [-0.48, 0.40, -0.1],  # 15 jaw left
        [0.48, 0.40, -0.1],  # 16 jaw right
        [0.20, 0.33, 0.0],  # 17 mouth right corner
        [0.00, 0.62, 0.0],  # 18 chin
        [0.00, 0.27, 0.05],  # 19 upper lip
        [0.00, 0.40, 0.05],  # 20 lower lip
    ],
    dtype=np.float32,
)

# every file `jam-flow generate` may write into --out; a folder holding only these is one it wrote
OUTPUT_FILES = (
    "audio.wav",
    "motion.npy",
    "motion.json",
    "generation.json",
    "preview.mp4",
    "talking_head.mp4",
)
SAMPLING_CAUSES = (
    "a checkpoint with NaN/inf weights (a diverged training run: look at its loss curve), an extreme guidance "
    "scale (--cfg / --audio-cfg / --motion-cfg) or extreme input values"
)
VOCODER_CAUSES = (
    "a vocoder with NaN/inf weights (--vocoder) or a mel spectrogram far outside the training range"
)


def check_finite(values: Any, what: str, task: str, causes: str = SAMPLING_CAUSES) -> None:
    """Raise :class:`NonFiniteError` (one line: which stream, which task, likely causes) when ``values`` (an array
    or a CPU tensor) holds NaN or infinite values. Called after sampling, after vocoding and before writing."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "fc":
        return
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise NonFiniteError(
            f"--task {task}: the {what} holds {bad} non-finite value(s) of {arr.size} (NaN/inf); nothing was "
            f"written. Likely causes: {causes}"
        )


def outputs_owned(root: Path) -> str | None:
    """None when ``root`` holds only files `jam-flow generate` writes (so ``--overwrite`` may replace it)."""
    entries = sorted(root.iterdir())
    foreign = [p.name for p in entries if p.name not in OUTPUT_FILES or not p.is_file() or p.is_symlink()]
    if foreign:
        return f"it holds entries `jam-flow generate` does not write: {', '.join(foreign[:5])}"
    for name, key in (("motion.json", "layout"), ("generation.json", "task")):
        info = root / name
        if info.is_file():
            try:
                ok = key in json.loads(info.read_text(encoding="utf-8"))
            except (ValueError, TypeError, UnicodeDecodeError, RecursionError):
                ok = False
            if not ok:
                return f"{info} is not a {name} written by `jam-flow generate`"
    return None


REST_COLOUR = (200, 200, 200)
MOUTH_COLOUR = (255, 60, 40)


def neutral_template(num_kp: int = 21) -> np.ndarray:
    if num_kp != NEUTRAL_KP.shape[0]:
        raise InputError(
            f"preview: the neutral keypoint template has {NEUTRAL_KP.shape[0]} points, not {num_kp}"
        )
    return NEUTRAL_KP.copy()


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int) -> Path:
    return save_wav(path, np.asarray(wave, dtype=np.float32).reshape(-1), sample_rate)


def write_motion(out_dir: str | Path, exp: np.ndarray, meta: dict[str, Any]) -> tuple[Path, Path]:
    """``out_dir/motion.npy`` (float32 ``[m, k, 3]``) and ``out_dir/motion.json`` (``meta`` + ``num_frames``)."""
    exp = np.asarray(exp, dtype=np.float32)
    if exp.ndim != 3 or exp.shape[-1] != 3:
        raise InputError(f"write_motion: expected exp [m, k, 3], got shape {exp.shape}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    npy, js = out_dir / "motion.npy", out_dir / "motion.json"
    np.save(npy, exp)
    info = {
        "layout": "liveportrait-exp [frames, keypoints, xyz]",
        "num_frames": int(exp.shape[0]),
        "num_kp": int(exp.shape[1]),
        **meta,
    }
    js.write_text(json.dumps(info, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return npy, js


def _disk_offsets(radius: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(r, r, indexing="ij")
    keep = dy**2 + dx**2 <= radius**2
    return dy[keep], dx[keep]


def draw_keypoints(
    points: np.ndarray,
    mouth_indices: tuple[int, ...],
    size: int = 256,
    box: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """Render keypoints ``[m, k, 2]`` (x, y) as RGB frames ``uint8 [m, size, size, 3]`` (mouth highlighted).

    ``box = (x_min, y_min, x_max, y_max)`` maps keypoint space to the image; default: the points' extent + 15 %."""
    points = np.asarray(points, dtype=np.float32)
    if box is None:
        lo, hi = points.reshape(-1, 2).min(0), points.reshape(-1, 2).max(0)
        centre, half = (lo + hi) / 2, float(max((hi - lo).max(), 1e-3)) * 0.575
        box = (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)
    x0, y0, x1, y1 = box
    px = np.round((points[..., 0] - x0) / (x1 - x0) * (size - 1)).astype(np.int64)
    py = np.round((points[..., 1] - y0) / (y1 - y0) * (size - 1)).astype(np.int64)
    frames = np.full((points.shape[0], size, size, 3), 24, dtype=np.uint8)
    radius = max(2, size // 64)
    dy, dx = _disk_offsets(radius)
    mouth = set(int(i) for i in mouth_indices)
    for f in range(points.shape[0]):
        for k in range(points.shape[1]):
            ys, xs = py[f, k] + dy, px[f, k] + dx
            ok = (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size)
            frames[f, ys[ok], xs[ok]] = MOUTH_COLOUR if k in mouth else REST_COLOUR
    return frames


def write_preview(
    path: str | Path,
    exp: np.ndarray,
    wave: np.ndarray,
    sample_rate: int,
    fps: int,
    mouth_indices: tuple[int, ...],
    kp: np.ndarray | None = None,
    size: int = 256,
) -> Path:
    """Write an H.264 + AAC mp4 of the keypoint projection of ``kp + exp`` (``exp [m, k, 3]``; ``kp [k, 3]`` or
    ``[m, k, 3]``, default :data:`NEUTRAL_KP`) muxed with the mono ``wave [s]``."""
    import av

    exp = np.asarray(exp, dtype=np.float32)
    m, k = exp.shape[:2]
    kp = neutral_template(k) if kp is None else np.asarray(kp, dtype=np.float32)
    if kp.shape == (k, 3):
        kp = np.broadcast_to(kp, exp.shape)
    elif kp.shape[1:] == (k, 3) and kp.shape[0] >= m:
        kp = kp[:m]
    else:
        raise InputError(
            f"preview: canonical keypoints must be [{k}, 3] or [m, {k}, 3], got shape {kp.shape}"
        )
    frames = draw_keypoints((kp + exp)[..., :2], mouth_indices, size=size)
    wave = np.clip(np.asarray(wave, dtype=np.float32).reshape(-1), -1.0, 1.0)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        video.time_base = Fraction(1, fps)
        audio = container.add_stream("aac", rate=sample_rate)
        audio.layout = "mono"
        audio.time_base = Fraction(1, sample_rate)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        chunk = 1024  # AAC frame size
        for start in range(0, wave.shape[0], chunk):
            block = wave[start : start + chunk]
            aframe = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
            aframe.sample_rate = sample_rate
            aframe.pts = start
            for packet in audio.encode(aframe):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    return path
