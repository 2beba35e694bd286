"""Talking-head rendering: generated mouth motion + a source image or video -> an mp4 with the speech.

Dimension legend: m motion (= output video) frames, b frames per network batch, k keypoints (21),
H, W source frame size. Expressions are LivePortrait's ``exp [.., k, 3]``; crops are ``[b, 3, 256, 256]`` in
[0, 1]; rendered faces ``[b, 3, 512, 512]``.

Recipe (paper §5 I2V / V2V; LivePortrait's own image / video pipelines, see docs/render.md):
  * image source: detect + crop once, ``M`` and ``F`` once; every output frame keeps the source's canonical
    keypoints, pose, scale and translation, its expression is the source's with the mouth keypoints replaced
    by the generated e_mouth (and, when the motion file carries an e_rest track, the other keypoints driven
    by it relative to its first frame);
  * video source (dubbing): per frame detect (smoothed boxes) + crop + ``M`` + ``F``; each frame keeps its own
    pose / expression and only the mouth keypoints are replaced;
  * then ``x_d = s (kp_c R + exp) + t``, LivePortrait's stitching, ``warp_decode``, paste-back, H.264 + AAC.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from jam_flow.errors import InputError
from jam_flow.features import num_motion_frames
from jam_flow.liveportrait.face import (
    FaceDetector,
    crop_face,
    paste_back,
    rescale_crop_affine,
    smooth_boxes,
    warp_mask,
)
from jam_flow.liveportrait.keypoints import transform_keypoints
from jam_flow.liveportrait.pipeline import LivePortraitModels
from jam_flow.render.io import (
    IMAGE_SUFFIXES,
    MotionTrack,
    VideoWriter,
    load_motion,
    read_audio,
    read_image,
    read_video_frames,
)

__all__ = [
    "RenderResult",
    "assemble_expression",
    "check_lengths",
    "pingpong_indices",
    "render_talking_head",
]

log = logging.getLogger(__name__)

DEFAULT_CROP_SIZE = 256  # LivePortrait's network input for the published weights
LENGTH_TOLERANCE = 1  # motion frames


@dataclass(frozen=True)
class RenderResult:
    """What ``render_talking_head`` wrote."""

    path: Path
    num_frames: int
    fps: float
    audio_seconds: float
    render_seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.num_frames / max(self.render_seconds, 1e-9)


def check_lengths(
    num_frames: int, fps: float, audio_samples: int, sample_rate: int, motion_name: str, audio_name: str
) -> None:
    """Motion and audio must describe the same duration (within ``LENGTH_TOLERANCE`` motion frames)."""
    seconds = audio_samples / sample_rate
    expected = (
        num_motion_frames(seconds, int(round(fps)))
        if float(fps).is_integer()
        else int(np.ceil(seconds * fps))
    )
    if abs(num_frames - expected) > LENGTH_TOLERANCE:
        raise InputError(
            f"motion length != audio length: --motion {motion_name} has {num_frames} frames "
            f"({num_frames / fps:.3f} s at {fps:g} fps) but --audio {audio_name} lasts {seconds:.3f} s "
            f"({expected} frames at {fps:g} fps); they must agree within {LENGTH_TOLERANCE} frame"
        )


def pingpong_indices(num_source: int, num_out: int) -> list[int]:
    """Source frame for each output frame when a video is shorter than the motion: forward, backward, ..."""
    if num_source <= 1:
        return [0] * num_out
    period = 2 * (num_source - 1)
    out = []
    for j in range(num_out):
        r = j % period
        out.append(r if r < num_source else period - r)
    return out


def assemble_expression(
    source_exp: Tensor,
    motion: Tensor,
    motion_first: Tensor,
    reference_exp: Tensor,
    mouth_indices: tuple[int, ...],
    relative: bool,
    rest_from_motion: bool,
) -> Tensor:
    """Driving expressions for a batch of frames.

    Args:
        source_exp: ``[b, k, 3]`` (or ``[1, k, 3]``) the source frames' own expressions.
        motion: ``[b, k, 3]`` the motion track's frames for this batch.
        motion_first: ``[k, 3]`` the motion track's first frame (the reference of relative driving).
        reference_exp: ``[k, 3]`` the source's expression that relative driving starts from
            (the image's, or the first video frame's).
        mouth_indices: keypoints that carry the mouth (replaced by the generated e_mouth).
        relative: mouth = ``reference + (motion_t - motion_0)`` (LivePortrait's relative driving) instead of
            the generated values themselves (absolute, the default: the generator outputs e_mouth directly).
        rest_from_motion: drive the non-mouth keypoints by the motion's e_rest track, always relative
            (``reference + rest_t - rest_0``), so another identity's neutral offsets never leak in.

    Returns ``[b, k, 3]``.
    """
    b = motion.shape[0]
    exp = source_exp.expand(b, -1, -1).clone()
    k = exp.shape[1]
    mouth = list(mouth_indices)
    if rest_from_motion:
        rest = [i for i in range(k) if i not in set(mouth)]
        exp[:, rest] = reference_exp[rest] + (motion[:, rest] - motion_first[rest])
    if relative:
        exp[:, mouth] = reference_exp[mouth] + (motion[:, mouth] - motion_first[mouth])
    else:
        exp[:, mouth] = motion[:, mouth]
    return exp


def _resolve_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    return dev


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _crops_tensor(crops: list[np.ndarray]) -> Tensor:
    return torch.from_numpy(np.stack(crops, axis=0))


class _Renderer:
    """Keypoint assembly + stitching + warp/decode for one source (shared by the image and video paths)."""

    def __init__(
        self,
        models: LivePortraitModels,
        motion: MotionTrack,
        relative: bool,
        stitching: bool,
        batch_size: int,
        crop_size: int,
    ) -> None:
        self.models = models
        self.crop_size = crop_size
        self.device = models.device
        self.motion = torch.from_numpy(motion.exp).to(self.device)
        self.mouth = motion.mouth_indices
        self.relative = relative
        self.stitching = stitching
        self.batch_size = batch_size
        self.done = 0
        self._last_log = time.perf_counter()

    def faces(
        self, src: dict[str, Tensor], start: int, stop: int, reference_exp: Tensor, rest_from_motion: bool
    ) -> Tensor:
        """Rendered faces ``[stop - start, 3, 512, 512]`` for output frames ``start..stop`` of ``src``."""
        motion = self.motion[start:stop]
        exp = assemble_expression(
            src["exp"], motion, self.motion[0], reference_exp, self.mouth, self.relative, rest_from_motion
        )
        b = exp.shape[0]

        def per_frame(name: str) -> Tensor:
            value = src[name]
            return value.expand(b, *value.shape[1:]) if value.shape[0] == 1 else value

        x_d = transform_keypoints(per_frame("kp"), per_frame("R"), exp, per_frame("scale"), per_frame("t"))
        if self.stitching:
            x_d = self.models.stitch(src["x_s"], x_d)
        faces = self.models.warp_decode(src["f_s"], src["x_s"], x_d, chunk_size=self.batch_size)
        self.done += b
        if time.perf_counter() - self._last_log > 10.0:
            log.info("rendered %d / %d frames", self.done, self.motion.shape[0])
            self._last_log = time.perf_counter()
        return faces


def _to_numpy_faces(faces: Tensor) -> np.ndarray:
    return faces.detach().float().clamp(0.0, 1.0).cpu().numpy()


def render_talking_head(
    source: str | Path,
    motion: str | Path | MotionTrack,
    audio: str | Path,
    weights_dir: str | Path | None,
    out_path: str | Path,
    device: str = "cpu",
    batch_size: int = 8,
    relative: bool = False,
    stitching: bool = True,
    use_motion_rest: bool = True,
    face_model: str | None = None,
    crop_scale: float = 2.3,
    crop_vy: float = -0.125,
    box_smoothing: int = 5,
    feather: float = 0.12,
    half: bool = False,
    crf: int = 18,
    crop_size: int = DEFAULT_CROP_SIZE,
    models: LivePortraitModels | None = None,
) -> RenderResult:
    """Animate ``source`` with ``motion`` and write ``out_path`` (H.264 at the motion's fps + AAC ``audio``).

    Args:
        source: a face image (png / jpg / ...) or a video (mp4 / mov / ...; V2V dubbing).
        motion: a motion directory / ``.npy`` / dataset ``.npz`` (``jam_flow.render.io.load_motion``) or a
            loaded ``MotionTrack``.
        audio: the speech (wav or anything PyAV decodes); its length must match the motion within one frame.
        weights_dir: LivePortrait's ``pretrained_weights/liveportrait`` (ignored when ``models`` is given).
        out_path: the mp4 to write.
        device: ``cpu`` or ``cuda`` (``cuda:N``).
        batch_size: frames per network call.
        relative: mouth driven relative to the motion's first frame (see ``assemble_expression``).
        stitching: apply LivePortrait's stitching network to the driving keypoints.
        use_motion_rest: image sources: drive the non-mouth keypoints by the motion's e_rest track when it has
            one (else they keep the source's expression).
        face_model: detector (``FaceDetector``): None = Haar cascade, a YuNet ``.onnx``, or ``"full-frame"``.
        crop_scale, crop_vy: LivePortrait's crop parameters (square side = scale * face box, centre shift).
        box_smoothing: moving-average window (frames) over a video's face boxes.
        feather: width of the paste-back mask's soft edge, as a fraction of the crop.
        half: fp16 autocast of the networks on CUDA (LivePortraitModels ignores it on CPU, with a warning).
        crf: H.264 quality (lower = better, 18 is visually lossless).
        crop_size: the networks' input side (256 for the published weights; a multiple of 128).
        models: preloaded ``LivePortraitModels`` (e.g. reused across calls by ``jam-flow generate``).
    """
    t0 = time.perf_counter()
    source, out_path = Path(source), Path(out_path)
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    if crop_size < 128 or crop_size % 128:
        raise InputError(
            f"--crop-size must be a positive multiple of 128 (256 for LivePortrait), got {crop_size}"
        )
    if box_smoothing < 1:
        raise InputError(f"box smoothing window must be >= 1 frame, got {box_smoothing}")
    dev = _resolve_device(device)
    track = motion if isinstance(motion, MotionTrack) else load_motion(motion)
    audio_path = Path(audio)
    wave, sample_rate = read_audio(audio_path)
    check_lengths(track.num_frames, track.fps, wave.size, sample_rate, track.source, str(audio_path))
    detector = FaceDetector(face_model)
    m = track.num_frames

    if not source.exists():
        raise InputError(f"--source {source}: no such file")
    if _is_image(source):
        frames = [read_image(source)]
        index = [0] * m
        boxes = [detector.largest(frames[0], str(source))]
    else:
        frames, _ = read_video_frames(source, m, track.fps)
        index = pingpong_indices(len(frames), m)
        boxes = _video_boxes(detector, frames, str(source), box_smoothing)

    if models is None:
        if weights_dir is None:
            raise InputError("--weights: a LivePortrait weights directory is required")
        from jam_flow.liveportrait import load_liveportrait

        models = load_liveportrait(weights_dir, device=dev, half=half)
    elif models.device != dev:
        models.to(dev)

    def crop(i: int) -> tuple[np.ndarray, np.ndarray]:
        return crop_face(frames[i], boxes[i], crop_size, crop_scale, crop_vy)

    renderer = _Renderer(models, track, relative, stitching, batch_size, crop_size)
    h, w = frames[0].shape[:2]
    writer = VideoWriter(out_path, track.fps, w, h, audio=wave, sample_rate=sample_rate, crf=crf)
    try:
        if _is_image(source):
            _render_image(
                renderer, frames[0], crop(0), m, writer, feather, track.has_rest and use_motion_rest
            )
        else:
            _render_video(renderer, frames, crop, index, writer, feather)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    elapsed = time.perf_counter() - t0
    log.info("rendered %d frames to %s in %.1f s", writer.num_frames, out_path, elapsed)
    return RenderResult(out_path, writer.num_frames, track.fps, wave.size / sample_rate, elapsed)


def _video_boxes(detector: FaceDetector, frames: list[np.ndarray], where: str, window: int) -> list:
    """Per-frame face boxes; frames without a detection interpolate between their neighbours' boxes (nearest
    beyond the first / last detection); then a moving average against jitter."""
    found: list = [None] * len(frames)
    for i, frame in enumerate(frames):
        if i > 0 and frame is frames[i - 1]:  # a repeated frame (fps resampling) has the same box
            found[i] = found[i - 1]
            continue
        boxes = detector.detect(frame)
        found[i] = boxes[0] if boxes else None
    have = [i for i, b in enumerate(found) if b is not None]
    if not have:
        raise InputError(f"no face found in {where} (in none of its {len(frames)} frames)")
    known = np.asarray([found[i] for i in have], dtype=np.float64)
    steps = np.arange(len(frames))
    filled = np.stack([np.interp(steps, have, known[:, c]) for c in range(4)], axis=1)
    return smooth_boxes([tuple(row) for row in filled], window)


def _paste_mask(
    m_c2o: np.ndarray, crop_size: int, face_size: int, frame: np.ndarray, feather: float
) -> np.ndarray:
    """Frame-space blend mask for a ``face_size`` render of a ``crop_size`` crop."""
    return warp_mask(rescale_crop_affine(m_c2o, crop_size, face_size), face_size, frame.shape[:2], feather)


def _render_image(
    renderer: _Renderer,
    frame: np.ndarray,
    crop: tuple[np.ndarray, np.ndarray],
    m: int,
    writer: VideoWriter,
    feather: float,
    rest_from_motion: bool,
) -> None:
    image, m_c2o = crop
    src = renderer.models.extract_source(_crops_tensor([image]))
    reference = src["exp"][0]
    mask = None
    for start in range(0, m, renderer.batch_size):
        stop = min(m, start + renderer.batch_size)
        faces = _to_numpy_faces(renderer.faces(src, start, stop, reference, rest_from_motion))
        if mask is None:
            mask = _paste_mask(m_c2o, renderer.crop_size, faces.shape[-1], frame, feather)
        for face in faces:
            writer.write(paste_back(frame, face, m_c2o, crop_size=renderer.crop_size, mask=mask))


def _render_video(
    renderer: _Renderer,
    frames: list[np.ndarray],
    crop,
    index: list[int],
    writer: VideoWriter,
    feather: float,
) -> None:
    """V2V: every output frame ``j`` is source frame ``index[j]`` with its own motion and the new mouth."""
    reference: Tensor | None = None
    for start in range(0, len(index), renderer.batch_size):
        stop = min(len(index), start + renderer.batch_size)
        ids = index[start:stop]
        crops = [crop(i) for i in ids]
        src = renderer.models.extract_source(_crops_tensor([c[0] for c in crops]))
        if reference is None:
            reference = src["exp"][0].clone()
        faces = _to_numpy_faces(renderer.faces(src, start, stop, reference, rest_from_motion=False))
        for face, i, (_, m_c2o) in zip(faces, ids, crops, strict=True):
            mask = _paste_mask(m_c2o, renderer.crop_size, face.shape[-1], frames[i], feather)
            writer.write(paste_back(frames[i], face, m_c2o, crop_size=renderer.crop_size, mask=mask))
