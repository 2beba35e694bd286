"""Video plumbing for ``dub-video`` and ``animate``: motion from a video, remuxing, streaming rendering, outputs.

Dimension legend: m motion (= output video) frames at 25 fps, b frames per network batch, k keypoints (21),
s audio samples, H, W frame size. Frames are RGB uint8 ``[H, W, 3]``; no masks here.

* :func:`video_motion` runs the preprocessing extractor path (:func:`jam_flow.data.preprocess.extract_video_motion`)
  on a whole video: frames stream from disk (twice: boxes, then crops), never all held in memory.
* :func:`remux` copies every video packet of the input unchanged into a new mp4 (no decode, no re-encode: the
  decoded frames are bit-identical) and adds the new speech as AAC.
* :func:`render_stream` renders a motion track onto a source image or video frame by frame, pastes each face back
  into its full frame and encodes as it goes; a video source shorter than the motion is cached to a disk memmap
  and played ping-pong (the renderer's rule), a long one is streamed.
* :class:`OutputSet` writes a command's files beside ``OUT.mp4`` atomically (one hidden temporary folder, each file
  renamed into place, the JSON record last) and implements ``--overwrite``: files of an earlier run of the same
  command (recognised by its record's ``format``) are replaced, anything else is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from jam_flow.atomic import check_out_file, clean_stale
from jam_flow.data.preprocess import (
    ClipFailure,
    PreprocessConfig,
    extract_video_motion,
    face_boxes,
    video_frames,
    video_seconds,
)
from jam_flow.errors import InputError
from jam_flow.features import num_motion_frames
from jam_flow.liveportrait.face import FaceDetector, crop_face, paste_back
from jam_flow.render.animate import _paste_mask, _render_image, _Renderer, _to_numpy_faces, pingpong_indices
from jam_flow.render.io import IMAGE_SUFFIXES, MotionTrack, VideoWriter, read_image

__all__ = ["video_motion", "video_length_frames", "remux", "render_stream", "OutputSet"]

Progress = Callable[[str, int, int], None]


def _failure(where: str, path: Path, err: ClipFailure) -> InputError:
    if err.kind == "no-face":
        return InputError(f"{where} {path}: no face found ({err})")
    if err.kind == "corrupt":
        return InputError(
            f"{where} {path}: cannot decode the video, unreadable codec or corrupt file ({err})"
        )
    return InputError(f"{where} {path}: {err}")


def video_length_frames(
    path: Path, fps: int, where: str = "--video", fallback_seconds: float | None = None
) -> int:
    """Motion frames covering the first video stream (its container duration; ``fallback_seconds`` when unknown)."""
    try:
        seconds = _counted_seconds(path)
        if seconds is None:
            seconds = video_seconds(path)
    except ClipFailure as err:
        raise _failure(where, path, err) from err
    if not np.isfinite(seconds):
        if fallback_seconds is None:
            raise InputError(f"{where} {path}: the container does not state the video's duration")
        seconds = fallback_seconds
    if seconds <= 0:
        raise InputError(f"{where} {path}: the video holds no frames")
    return num_motion_frames(seconds, fps)


def _counted_seconds(path: Path) -> float | None:
    """Frame count / frame rate of the first video stream when the container states both (mp4 does), else None."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            if stream.frames and stream.average_rate:
                return float(stream.frames / stream.average_rate)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        return None
    return None


@torch.no_grad()
def video_motion(
    path: Path,
    n_frames: int,
    cfg: PreprocessConfig,
    extractor,
    detector,
    where: str = "--video",
    progress: Progress | None = None,
) -> tuple[dict[str, np.ndarray], list]:
    """LivePortrait motion arrays (``exp [m, k, 3]``, ``kp``, pose, ``t``, ``scale``) and face boxes of a video;
    ``progress("extract motion", done, n_frames)`` after each extractor batch."""
    on_frames = None if progress is None else (lambda done: progress("extract motion", done, n_frames))
    try:
        return extract_video_motion(path, n_frames, cfg, extractor, detector, on_frames)
    except ClipFailure as err:
        raise _failure(where, path, err) from err


def remux(video_in: Path, wave: np.ndarray, sample_rate: int, out_path: Path) -> int:
    """Write ``out_path`` (mp4): every packet of ``video_in``'s first video stream copied unchanged, plus ``wave``
    as a mono AAC stream. Returns the number of video packets copied."""
    import av

    try:
        src = av.open(str(video_in))
    except (av.error.FFmpegError, OSError) as err:
        raise InputError(f"--video {video_in}: cannot open ({err})") from err
    with src:
        if not src.streams.video:
            raise InputError(f"--video {video_in}: has no video stream")
        v_in = src.streams.video[0]
        try:
            dst = av.open(str(out_path), mode="w", format="mp4")
        except (av.error.FFmpegError, OSError) as err:
            raise InputError(f"--out {out_path}: cannot create the video file ({err})") from err
        copied = 0
        try:
            v_out = dst.add_stream_from_template(v_in)
            a_out = dst.add_stream("aac", rate=int(sample_rate))
            a_out.layout = "mono"
            _encode_aac(dst, a_out, wave, sample_rate)
            for packet in src.demux(v_in):
                if packet.dts is None and packet.pts is None:
                    continue  # the demuxer's end-of-stream marker
                packet.stream = v_out
                dst.mux(packet)
                copied += 1
        except (av.error.FFmpegError, ValueError) as err:
            dst.close()
            raise InputError(
                f"--video {video_in}: its video stream ({v_in.codec_context.name}) cannot be copied into an mp4 "
                f"({err})"
            ) from err
        dst.close()
    return copied


def _encode_aac(container, stream, wave: np.ndarray, sample_rate: int) -> None:
    import av

    chunk = stream.codec_context.frame_size or 1024
    samples = np.clip(np.asarray(wave, dtype=np.float32).reshape(-1), -1.0, 1.0)
    for start in range(0, samples.size, chunk):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples[None, start : start + chunk]), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts, frame.time_base = sample_rate, start, Fraction(1, sample_rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


class _CountingWriter:
    """A ``VideoWriter`` that reports each written frame to ``progress``."""

    def __init__(self, writer: VideoWriter, total: int, progress: Progress | None) -> None:
        self.writer, self.total, self.progress = writer, total, progress

    def write(self, rgb: np.ndarray) -> None:
        self.writer.write(rgb)
        if self.progress is not None:
            self.progress("render frames", self.writer.num_frames, self.total)


@torch.no_grad()
def render_stream(
    source: Path,
    track: MotionTrack,
    wave: np.ndarray,
    sample_rate: int,
    models,
    out_path: Path,
    *,
    cfg: PreprocessConfig,
    detector: FaceDetector,
    boxes: list | None = None,
    batch_size: int = 8,
    stitching: bool = True,
    feather: float = 0.12,
    crf: int = 18,
    where: str = "--source",
    progress: Progress | None = None,
) -> int:
    """Render ``track`` on ``source`` (image: I2V; video: every frame keeps its own pose and expression, the mouth
    comes from ``track``), paste each face back into its full frame and write H.264 + AAC ``wave``.

    ``boxes`` (per output frame) skips face detection for a video that was just analysed. Returns frames written.
    """
    m = track.num_frames
    renderer = _Renderer(
        models, track, relative=False, stitching=stitching, batch_size=batch_size, crop_size=cfg.crop_size
    )
    if source.suffix.lower() in IMAGE_SUFFIXES:
        frame = read_image(source)
        box = detector.largest(frame, str(source))
        crop = crop_face(frame, box, cfg.crop_size, cfg.crop_scale, cfg.crop_vy)
        writer = VideoWriter(out_path, track.fps, frame.shape[1], frame.shape[0], wave, sample_rate, crf=crf)
        try:
            _render_image(
                renderer, frame, crop, m, _CountingWriter(writer, m, progress), feather, track.has_rest
            )
            writer.close()
        except BaseException:
            writer.abort()
            raise
        return writer.num_frames
    fps = int(round(track.fps))
    n_src = min(m, video_length_frames(source, fps, where))
    if boxes is None:
        try:
            boxes = face_boxes(source, n_src, cfg, detector)
        except ClipFailure as err:
            raise _failure(where, source, err) from err
    index = pingpong_indices(n_src, m) if n_src < m else list(range(m))
    with _frame_source(source, n_src, fps, random_access=n_src < m, where=where) as get:
        writer = None
        reference = None
        try:
            for start in range(0, m, batch_size):
                ids = index[start : min(m, start + batch_size)]
                frames = [get(i) for i in ids]
                if writer is None:
                    h, w = frames[0].shape[:2]
                    writer = VideoWriter(out_path, track.fps, w, h, wave, sample_rate, crf=crf)
                crops = [
                    crop_face(f, boxes[i], cfg.crop_size, cfg.crop_scale, cfg.crop_vy)
                    for f, i in zip(frames, ids, strict=True)
                ]
                src = models.extract_source(torch.from_numpy(np.stack([c[0] for c in crops])))
                if reference is None:
                    reference = src["exp"][0].clone()
                faces = _to_numpy_faces(
                    renderer.faces(src, start, start + len(ids), reference, rest_from_motion=False)
                )
                for face, frame, (_, m_c2o) in zip(faces, frames, crops, strict=True):
                    mask = _paste_mask(m_c2o, cfg.crop_size, face.shape[-1], frame, feather)
                    writer.write(paste_back(frame, face, m_c2o, crop_size=cfg.crop_size, mask=mask))
                    if progress is not None:
                        progress("render frames", writer.num_frames, m)
            writer.close()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
    return writer.num_frames


@contextlib.contextmanager
def _frame_source(
    path: Path, n: int, fps: int, random_access: bool, where: str
) -> Iterator[Callable[[int], np.ndarray]]:
    """``get(i)`` -> motion frame ``i`` of a video. Sequential access streams the decoder; random access (ping-pong)
    decodes once into a memmap in a temporary folder (disk, not RAM)."""
    frames = video_frames(path, n, fps)
    try:
        if not random_access:
            state = {"next": 0}

            def get_seq(i: int) -> np.ndarray:
                if i != state["next"]:
                    raise RuntimeError(
                        f"sequential frame source asked for frame {i}, expected {state['next']}"
                    )
                state["next"] += 1
                return next(frames)[1]

            yield get_seq
            return
        with tempfile.TemporaryDirectory(prefix="jam-flow-frames-") as tmp:
            cache: list[np.ndarray] = []  # one memmap, created at the first frame's size
            for j, rgb in frames:
                if not cache:
                    cache.append(
                        np.lib.format.open_memmap(Path(tmp) / "frames.npy", "w+", np.uint8, (n, *rgb.shape))
                    )
                cache[0][j] = rgb

            def get_cached(i: int) -> np.ndarray:
                return np.asarray(cache[0][i])

            yield get_cached
            cache.clear()
    except ClipFailure as err:
        raise _failure(where, path, err) from err


class OutputSet:
    """The files one run writes beside ``OUT.mp4`` (same folder): ``OUT.mp4``, ``audio.wav``, ``motion.npy``,
    ``motion.json``, ... and the record ``<command>.json`` (its ``format`` marks the set as this command's)."""

    def __init__(self, out: Path, names: tuple[str, ...], record: str, fmt: str, overwrite: bool) -> None:
        out = Path(out)
        if out.suffix.lower() != ".mp4":
            raise InputError(f"--out: expected an .mp4 path, got {out}")
        check_out_file(out)
        self.out, self.record, self.fmt = out, record, fmt
        self.names = (out.name, *names, record)
        existing = [n for n in self.names if (out.parent / n).exists()]
        self.existing = set(existing)
        if existing:
            if not overwrite:
                raise InputError(
                    f"--out: {', '.join(str(out.parent / n) for n in existing)} already exist(s) "
                    f"(pass --overwrite to replace the files of an earlier run)"
                )
            reason = self._not_ours(out.parent / record)
            if reason:
                raise InputError(f"--out: refusing to replace files in {out.parent}: {reason}")
        self.tmp: Path | None = None

    def _not_ours(self, record: Path) -> str | None:
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return f"{record.name} is missing or unreadable, so the existing files were not written by this command"
        if not isinstance(data, dict) or data.get("format") != self.fmt:
            return f"{record} is not a {self.fmt} record"
        return None

    def __enter__(self) -> Path:
        parent = self.out.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            clean_stale(self.out)
            self.tmp = parent / f".{self.out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
            self.tmp.mkdir()
        except OSError as err:
            raise InputError(f"--out: cannot write to {parent} ({err.strerror or err})") from err
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                for name in self.names:  # the record last: its presence means the set is complete
                    if (self.tmp / name).exists():
                        os.replace(self.tmp / name, self.out.parent / name)
                    elif (
                        name in self.existing
                    ):  # an earlier run's file this run does not write (checked ours)
                        (self.out.parent / name).unlink(missing_ok=True)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
