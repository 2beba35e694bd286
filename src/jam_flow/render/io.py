"""Inputs and outputs of the renderer: source image / video, generated motion, audio, and the muxed mp4.

Dimension legend: m motion frames (25 / s), k keypoints (21), s audio samples, H, W frame size.
Frames are RGB uint8 ``[H, W, 3]``; motion is LivePortrait's expression deformation ``exp [m, k, 3]``.

Motion inputs (``load_motion``):
  * a directory written by ``jam-flow generate``: ``DIR/motion.npy`` (``[m, 21, 3]``) + ``DIR/motion.json``
    (``{"fps": 25, "mouth_indices": [...], "has_rest": bool}``, every key optional);
  * a ``.npy`` file: ``[m, 21, 3]`` full expressions, or mouth only ``[m, len(mouth), 3]`` / ``[m, 3 * len(mouth)]``
    (a ``.json`` beside it with the same stem is read like ``motion.json``);
  * a dataset clip ``.npz`` holding ``exp [m, 21, 3]`` (its dataset's ``dataset.json`` supplies fps and mouth
    indices when the clip lies in ``DIR/clips/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

from jam_flow.data.limits import check_array_size, loads_json, npy_header, npz_members
from jam_flow.errors import InputError
from jam_flow.features import MotionSettings

__all__ = [
    "IMAGE_SUFFIXES",
    "MotionTrack",
    "VideoWriter",
    "load_motion",
    "read_audio",
    "read_image",
    "read_video_frames",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class MotionTrack:
    """A generated (or recorded) expression track.

    ``exp``: float32 ``[m, k, 3]`` with the mouth at ``mouth_indices``; ``has_rest`` says whether the other
    keypoints hold a real e_rest track (False: only the mouth is meaningful, the rest is zeros).
    """

    exp: np.ndarray
    fps: float
    mouth_indices: tuple[int, ...]
    has_rest: bool
    source: str

    @property
    def num_frames(self) -> int:
        return int(self.exp.shape[0])


MAX_MOTION_BYTES = 2**30  # a motion array larger than this is refused unread


def _read_json(path: Path) -> dict:
    try:
        data = loads_json(path.read_text(encoding="utf-8"), str(path))  # nesting too deep is one line too
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read motion metadata as JSON ({err})") from err
    if not isinstance(data, dict):
        raise InputError(
            f"{path}: expected a JSON object with fps / mouth_indices, got {type(data).__name__}"
        )
    return data


def _meta_fields(
    meta: dict, where: Path, default: MotionSettings
) -> tuple[float, tuple[int, ...], bool | None]:
    fps = meta["fps"] if "fps" in meta else default.fps
    idx = meta["mouth_indices"] if "mouth_indices" in meta else default.mouth_indices
    has_rest = meta["has_rest"] if "has_rest" in meta else None
    if not isinstance(fps, (int, float)) or fps <= 0:
        raise InputError(f"{where}: 'fps' must be a positive number, got {fps!r}")
    if not isinstance(idx, (list, tuple)) or not all(isinstance(i, int) for i in idx) or not idx:
        raise InputError(
            f"{where}: 'mouth_indices' must be a non-empty list of keypoint indices, got {idx!r}"
        )
    if has_rest is not None and not isinstance(has_rest, bool):
        raise InputError(f"{where}: 'has_rest' must be true or false, got {has_rest!r}")
    return float(fps), tuple(int(i) for i in idx), has_rest


def load_motion(path: str | Path, num_kp: int = 21) -> MotionTrack:
    """Read a motion directory / ``.npy`` / dataset ``.npz`` (see the module docstring) as a ``MotionTrack``."""
    path = Path(path)
    default = MotionSettings()
    meta_path: Path | None = None
    if path.is_dir():
        npy = path / "motion.npy"
        if not npy.is_file():
            raise InputError(
                f"--motion {path}: directory has no motion.npy (expected the output of jam-flow generate)"
            )
        meta_path = path / "motion.json"
        data_path = npy
    elif path.is_file():
        data_path = path
        if path.suffix.lower() == ".npy":
            meta_path = path.with_suffix(".json")
        elif path.suffix.lower() != ".npz":
            raise InputError(f"--motion {path}: expected a directory, a .npy array or a dataset clip .npz")
    else:
        raise InputError(f"--motion {path}: no such file or directory")

    fps, mouth, has_rest = float(default.fps), default.mouth_indices, None
    # what the file declares is bounded before it is read (an hour of [m, 21, 3] float32 is 23 MB)
    npz = data_path.suffix.lower() == ".npz"
    try:
        head = npz_members(data_path, "npz").get("exp") if npz else npy_header(data_path, "npy")
    except InputError as err:
        what = "as .npz" if npz else "as a .npy array"
        raise InputError(f"--motion {data_path}: cannot read {what} ({str(err).split(': ', 1)[-1]})") from err
    if head is not None:
        check_array_size(head, MAX_MOTION_BYTES, f"--motion {data_path}", "'exp'")
    if data_path.suffix.lower() == ".npz":
        try:
            with np.load(data_path) as npz:
                if "exp" not in npz.files:
                    raise InputError(
                        f"--motion {data_path}: clip .npz has no 'exp' array (fields: {npz.files})"
                    )
                arr = np.asarray(npz["exp"])
        except (OSError, ValueError) as err:
            raise InputError(f"--motion {data_path}: cannot read as .npz ({err})") from err
        has_rest = True  # a recorded clip: every keypoint is real motion
        dataset_json = data_path.parent.parent / "dataset.json"
        if dataset_json.is_file():
            ds = _read_json(dataset_json)
            # a dataset.json without motion settings keeps the defaults
            if isinstance(ds.get("motion"), dict):
                fps, mouth, _ = _meta_fields(ds["motion"], dataset_json, default)
    else:
        try:
            arr = np.load(data_path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise InputError(f"--motion {data_path}: cannot read as a .npy array ({err})") from err
        if meta_path is not None and meta_path.is_file():
            fps, mouth, has_rest = _meta_fields(_read_json(meta_path), meta_path, default)

    if not all(0 <= i < num_kp for i in mouth) or len(set(mouth)) != len(mouth):
        raise InputError(
            f"--motion {path}: mouth_indices must be distinct indices in [0, {num_kp}), got {list(mouth)}"
        )
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"--motion {data_path}: expected a float array, got dtype {arr.dtype}")
    n_mouth = len(mouth)
    if arr.ndim == 3 and arr.shape[1:] == (num_kp, 3):
        exp = arr.astype(np.float32)
    elif (arr.ndim == 3 and arr.shape[1:] == (n_mouth, 3)) or (arr.ndim == 2 and arr.shape[1] == 3 * n_mouth):
        exp = np.zeros((arr.shape[0], num_kp, 3), dtype=np.float32)
        exp[:, list(mouth)] = arr.reshape(arr.shape[0], n_mouth, 3)
        has_rest = False
    else:
        raise InputError(
            f"--motion {data_path}: expected an array [m, {num_kp}, 3] (full expression), [m, {n_mouth}, 3] or "
            f"[m, {3 * n_mouth}] (mouth only), got shape {arr.shape}"
        )
    if exp.shape[0] < 1:
        raise InputError(f"--motion {data_path}: the motion has no frames")
    if not np.isfinite(exp).all():
        raise InputError(f"--motion {data_path}: the motion holds NaN or infinite values")
    if has_rest is None:
        rest = [i for i in range(num_kp) if i not in mouth]
        has_rest = bool(np.any(exp[:, rest] != 0))  # no metadata: an all-zero rest means "mouth only"
    return MotionTrack(exp=exp, fps=fps, mouth_indices=mouth, has_rest=has_rest, source=str(path))


def read_image(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 ``[H, W, 3]``; ``InputError`` naming the path when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--source {path}: no such image file")
    try:
        with Image.open(path) as img:
            img.load()
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(f"--source {path}: cannot read the image ({err})") from err
    return np.ascontiguousarray(rgb)


def read_video_frames(path: str | Path, max_frames: int, fps: float) -> tuple[list[np.ndarray], float]:
    """Decode a source video resampled to ``fps`` (nearest earlier frame), at most ``max_frames`` frames.

    Returns ``(frames, native_fps)``; frames are RGB uint8 ``[H, W, 3]``. Decoding stops once ``max_frames``
    output frames exist, so memory follows the output length, not the video's.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--source {path}: no such video file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise InputError(f"--source {path}: cannot open the video ({err})") from err
    frames: list[np.ndarray] = []
    eps = 1e-6
    with container:
        if not container.streams.video:
            raise InputError(f"--source {path}: has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        native_fps = float(rate) if rate else float(fps)
        base: float | None = None
        prev: np.ndarray | None = None
        t_prev = 0.0
        try:
            for index, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else index / native_fps
                base = t if base is None else base
                t -= base
                # output slots strictly before this frame's time show the previous frame
                while prev is not None and len(frames) < max_frames and len(frames) / fps < t - eps:
                    frames.append(prev)
                prev, t_prev = frame.to_ndarray(format="rgb24"), t
                if len(frames) >= max_frames:
                    break
        except (av.error.FFmpegError, ValueError) as err:
            raise InputError(f"--source {path}: video stream is corrupt ({err})") from err
        # the last frame lasts one native frame period
        while (
            prev is not None
            and len(frames) < max_frames
            and len(frames) / fps < t_prev + 1.0 / native_fps - eps
        ):
            frames.append(prev)
    if not frames:
        raise InputError(f"--source {path}: the video decodes to no frames")
    return frames, native_fps


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Audio file -> (mono float32 ``[s]``, native sample rate); ``InputError`` names the path on failure."""
    from jam_flow.data.audio import decode_audio_av, to_mono

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--audio {path}: no such audio file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        wave = to_mono(data)
    except (sf.LibsndfileError, RuntimeError, ValueError):
        try:
            wave, rate = decode_audio_av(path)
        except InputError as err:
            raise InputError(f"--audio {err}") from err
    if wave.size == 0:
        raise InputError(f"--audio {path}: the audio holds no samples")
    return wave, int(rate)


class VideoWriter:
    """Streams RGB frames into an H.264 (yuv420p) mp4 with a mono AAC audio track.

    Both streams are declared up front (mp4 needs them before its header); the audio is encoded and muxed
    right away, the video frame by frame. Odd frame sizes are padded by one replicated row / column
    (yuv420p needs even sizes).
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        width: int,
        height: int,
        audio: np.ndarray | None = None,
        sample_rate: int = 24000,
        crf: int = 18,
        preset: str = "medium",
    ) -> None:
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._av = av
        self.width, self.height = int(width), int(height)
        self.num_frames = 0
        try:
            self._container = av.open(str(self.path), mode="w")
        except (av.error.FFmpegError, OSError) as err:
            raise InputError(f"--out {self.path}: cannot create the video file ({err})") from err
        self._video = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self._video.width, self._video.height = self.width + self.width % 2, self.height + self.height % 2
        self._video.pix_fmt = "yuv420p"
        self._video.options = {"crf": str(int(crf)), "preset": preset}
        self._audio = None
        if audio is not None and np.asarray(audio).size:
            self._audio = self._container.add_stream("aac", rate=int(sample_rate))
            self._audio.layout = "mono"
            self._encode_audio(np.asarray(audio, dtype=np.float32), int(sample_rate))

    def _encode_audio(self, wave: np.ndarray, sample_rate: int) -> None:
        av = self._av
        chunk = self._audio.codec_context.frame_size or 1024
        samples = np.clip(wave.reshape(-1), -1.0, 1.0)
        for start in range(0, samples.size, chunk):
            piece = np.ascontiguousarray(samples[None, start : start + chunk])
            frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            for packet in self._audio.encode(frame):
                self._container.mux(packet)
        for packet in self._audio.encode():
            self._container.mux(packet)

    def write(self, rgb: np.ndarray) -> None:
        """Append one RGB uint8 ``[H, W, 3]`` frame of the size given at construction."""
        h, w = rgb.shape[:2]
        if (h, w) != (self.height, self.width):
            raise InputError(
                f"--out {self.path}: frame {w}x{h} differs from the video size {self.width}x{self.height}"
            )
        if h % 2 or w % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._video.encode(frame):
            self._container.mux(packet)
        self.num_frames += 1

    def close(self) -> Path:
        """Flush the video encoder and finish the file."""
        for packet in self._video.encode():
            self._container.mux(packet)
        self._container.close()
        return self.path

    def abort(self) -> None:
        """Close without finishing (after an error) and remove the partial file."""
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - best effort on an already failing path
            pass
        self.path.unlink(missing_ok=True)
