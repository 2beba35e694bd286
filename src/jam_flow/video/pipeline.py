"""``jam-flow dub-video`` and ``jam-flow animate``: whole videos in one command, at any length.

Dimension legend: m motion (= video) frames at 25 fps, k keypoints (21), s samples (24 kHz). No masks here (the
windows' given/generated masks live in :mod:`jam_flow.inference.windows`).

* :func:`dub_video`: a talking video + a new script -> speech timed to the lips the video already has (the
  ``dub`` task, motion given), in the video's own voice by default, muxed onto the **original** video packets
  (bit-exact; :func:`jam_flow.render.video.remux`). ``rerender`` also regenerates the mouth from the new speech
  (``audio2motion`` with the video's own e_rest given) and re-renders every frame with LivePortrait.
* :func:`animate`: a face image or video + speech (``audio2motion``) or text (``text2av``) -> a LivePortrait
  talking head (stitching on), each face pasted back into its full frame, with the audio.

Both write ``OUT.mp4``, ``audio.wav``, ``motion.npy`` + ``motion.json`` (what ``jam-flow render --motion`` reads)
and a record (``dub.json`` / ``animate.json``: windows, settings, wall times) beside the output, atomically.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from jam_flow.data.audio import decode_audio_av, resample
from jam_flow.data.preprocess import PreprocessConfig
from jam_flow.errors import InputError
from jam_flow.flow.sampler import SamplerSettings
from jam_flow.inference.cutting import round_block
from jam_flow.inference.inputs import _read_wave
from jam_flow.inference.outputs import check_finite, write_motion, write_wav
from jam_flow.inference.windows import (
    BLOCK,
    LongResult,
    audio2motion_long,
    dub_long,
    frame_energy_db,
    max_given_frames,
    text2av_long,
)
from jam_flow.liveportrait.face import FaceDetector
from jam_flow.render.io import IMAGE_SUFFIXES, MotionTrack, read_image
from jam_flow.render.video import (
    OutputSet,
    Progress,
    remux,
    render_stream,
    video_length_frames,
    video_motion,
)

__all__ = [
    "DUB_FORMAT",
    "ANIMATE_FORMAT",
    "DEFAULT_REF_SECONDS",
    "load_liveportrait_parts",
    "dub_video",
    "animate",
]

DUB_FORMAT = "jam-flow-dub-video"
ANIMATE_FORMAT = "jam-flow-animate"
DEFAULT_REF_SECONDS = (
    6.0  # the video's own speech used as the voice, at most (within the trained given share)
)


def load_liveportrait_parts(motion_extractor, liveportrait, device, need_models: bool = False):
    """``(extractor, models)`` from paths or loaded networks: ``motion_extractor`` (a ``.pth`` / weights dir, or
    a loaded ``MotionExtractor``) and ``liveportrait`` (a weights dir, or loaded ``LivePortraitModels``). Without
    ``motion_extractor`` the extractor is ``models.M``; ``need_models`` requires ``liveportrait``."""
    import jam_flow.liveportrait as lp

    models = liveportrait
    if isinstance(liveportrait, (str, Path)):
        if not Path(liveportrait).is_dir():
            raise InputError(f"--liveportrait: {liveportrait} is not a directory (LivePortrait weights)")
        if need_models or motion_extractor is None:
            models = lp.load_liveportrait(liveportrait, device=device)
        else:
            models = None
    if need_models and models is None:
        raise InputError("--liveportrait: the LivePortrait weights are needed to render")
    extractor = motion_extractor
    if isinstance(motion_extractor, (str, Path)):
        if not Path(motion_extractor).exists():
            raise InputError(f"--motion-extractor: {motion_extractor} does not exist")
        extractor = lp.load_motion_extractor(motion_extractor, device)
    elif motion_extractor is None:
        if models is None:
            raise InputError(
                "--motion-extractor / --liveportrait: one is needed to extract the video's motion"
            )
        extractor = models.M
    return extractor, models


def _settings_record(
    settings: SamplerSettings,
    result: LongResult,
    cfg: PreprocessConfig,
    window_s: float,
    context_s: float,
    **extra: Any,
) -> dict[str, Any]:
    """The record's ``settings``: the sampler's, the seed used, the windows, ``extra`` and the crop / detector."""
    return {
        "nfe": settings.nfe,
        "cfg": settings.cfg,
        "method": settings.method,
        "sway_coef": settings.sway_coef,
        "guidance": settings.guidance,
        "seed": int(result.meta["seed"]),
        "window_s": window_s,
        "context_s": context_s,
        **extra,
        "crop_size": cfg.crop_size,
        "face_detector": cfg.face_detector or "haar",
        "guidance_used": result.meta.get("guidance_used"),
    }


def _files_record(video: str, **extra: str) -> dict[str, str]:
    """The record's ``files``: the video, the speech and the motion with its metadata (``extra`` after them)."""
    return {
        "video": video,
        "audio": "audio.wav",
        "motion": "motion.npy",
        "motion_meta": "motion.json",
        **extra,
    }


def _motion_meta(result: LongResult, mouth: tuple[int, ...], has_rest: bool, task: str) -> dict[str, Any]:
    return {"fps": result.fps, "mouth_indices": list(mouth), "has_rest": has_rest, "task": task}


def _write_common(tmp: Path, result: LongResult, exp: np.ndarray, meta: dict[str, Any]) -> None:
    check_finite(result.wave, "speech (audio.wav)", result.task)
    check_finite(exp, "motion (motion.npy)", result.task)
    write_wav(tmp / "audio.wav", result.wave, result.sample_rate)
    write_motion(tmp, exp, meta)


def _write_record(path: Path, record: dict[str, Any]) -> None:
    import json

    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _video_speech(video: Path, sample_rate: int) -> np.ndarray | None:
    """The video's first audio stream at ``sample_rate`` (mono), or None when it has no audio stream."""
    try:
        wave, rate = decode_audio_av(video)
    except InputError as err:
        if "no audio stream" in str(err):
            return None
        raise InputError(f"--video {err}") from err
    return resample(wave, rate, sample_rate)


def _default_reference(
    speech: np.ndarray, bundle, first_window: int
) -> tuple[tuple[np.ndarray, int], int, int]:
    """The video's own voice: from its first voiced frame, at most ``DEFAULT_REF_SECONDS`` and within the share of
    the first window that training gives as context (:func:`max_given_frames`). Returns the reference
    ``(samples, rate)`` and its first motion frame and length in frames (its own motion is the video's there)."""
    s, f = bundle.mel, bundle.motion
    hop = s.sample_rate // f.fps
    m = speech.size // hop
    energy = frame_energy_db(speech, s.sample_rate, f.fps, max(m, 1))
    voiced = np.flatnonzero(energy > energy.max() - 30.0)
    start = int(voiced[0]) if voiced.size else 0
    frames = min(int(DEFAULT_REF_SECONDS * f.fps), max_given_frames(first_window), m - start)
    frames = max(BLOCK, round_block(frames))
    return (speech[start * hop : (start + frames) * hop], s.sample_rate), start, frames


def dub_video(
    bundle,
    video: str | Path,
    text: str,
    out: str | Path,
    *,
    extractor,
    models=None,
    rerender: bool = False,
    ref_audio=None,
    ref_text: str | None = None,
    window_s: float = 20.0,
    context_s: float = 2.0,
    settings: SamplerSettings = SamplerSettings(),
    seed: int | None = None,
    vocoder=None,
    cfg: PreprocessConfig | None = None,
    face_detector: str | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Dub ``video`` with ``text`` into ``out`` (an .mp4); returns the ``dub.json`` record.

    ``extractor``: LivePortrait's motion extractor (``load_motion_extractor`` or ``models.M``); ``models``:
    ``LivePortraitModels`` (needed for ``rerender``); ``cfg``: crop / detection settings of the extractor path
    (``jam_flow.data.preprocess.PreprocessConfig``; its ``motion_extractor`` field is not used here)."""
    t_start = time.perf_counter()
    video, out = Path(video), Path(out)
    if rerender and models is None:
        raise InputError("--rerender: needs --liveportrait (the LivePortrait weights to render with)")
    names = ("audio.wav", "motion.npy", "motion.json") + (("rerender_motion.npy",) if rerender else ())
    outputs = OutputSet(out, names, "dub.json", DUB_FORMAT, overwrite)
    if not video.is_file():
        raise InputError(f"--video {video}: no such file")
    cfg = cfg or PreprocessConfig(motion_extractor="", face_detector=face_detector)
    s, f = bundle.mel, bundle.motion
    speech = _video_speech(video, s.sample_rate)
    if speech is None and ref_audio is None:
        raise InputError(
            f"--video {video}: has no audio track (its speech gives the default voice and the pauses; "
            f"give --ref-audio to dub a silent video)"
        )
    m = video_length_frames(
        video, f.fps, fallback_seconds=speech.size / s.sample_rate if speech is not None else None
    )
    detector = FaceDetector(cfg.face_detector)
    t0 = time.perf_counter()
    if progress is not None:
        progress("extract motion", 0, m)
    arrays, boxes = video_motion(video, m, cfg, extractor, detector, progress=progress)
    extract_s = time.perf_counter() - t0
    ref_source = str(ref_audio) if ref_audio is not None else "the video's own speech"
    ref_exp = None
    if ref_audio is None:
        ref_audio, ref_start, ref_frames = _default_reference(
            speech, bundle, min(m, round_block(window_s * f.fps))
        )
        ref_exp = arrays["exp"][ref_start : ref_start + ref_frames]
        if ref_text is not None:
            raise InputError(
                "--ref-text: given without --ref-audio (the video's own speech has no transcript)"
            )
    try:
        result = dub_long(
            bundle,
            arrays["exp"],
            text,
            pause_wave=speech,
            ref_audio=ref_audio,
            ref_text=ref_text,
            ref_exp=ref_exp,
            window_s=window_s,
            context_s=context_s,
            settings=settings,
            seed=seed,
            vocoder=vocoder,
            progress=progress,
        )
    except InputError as err:
        if isinstance(ref_audio, tuple) and str(err).startswith("--ref-audio"):
            raise InputError(
                f"--video {video}: its speech cannot serve as the voice ({err}); give --ref-audio"
            ) from err
        raise
    render_s = mux_s = 0.0
    with outputs as tmp:
        exp_shown = arrays["exp"]
        if rerender:
            t0 = time.perf_counter()
            mouth = audio2motion_long(
                bundle,
                result.wave,
                rest_exp=arrays["exp"],
                window_s=window_s,
                context_s=context_s,
                settings=settings,
                seed=int(result.meta["seed"]) + 1000,
                progress=progress,
            )
            result.model_seconds += time.perf_counter() - t0
            exp_shown = mouth.motion[: arrays["exp"].shape[0]]  # log-mel framing adds a frame at the end
            track = MotionTrack(exp_shown, f.fps, f.mouth_indices, True, "rerender")
            t0 = time.perf_counter()
            render_stream(
                video,
                track,
                result.wave,
                s.sample_rate,
                models,
                tmp / out.name,
                cfg=cfg,
                detector=detector,
                boxes=boxes,
                batch_size=batch_size,
                where="--video",
                progress=progress,
            )
            render_s = time.perf_counter() - t0  # encoding and muxing happen inside the render
            mux_s = None
            np.save(tmp / "rerender_motion.npy", exp_shown.astype(np.float32))
        else:
            t0 = time.perf_counter()
            packets = remux(video, result.wave, s.sample_rate, tmp / out.name)
            mux_s = time.perf_counter() - t0
        meta = _motion_meta(result, f.mouth_indices, True, "dub-video")
        _write_common(tmp, result, arrays["exp"], meta)
        seconds = result.wave.size / s.sample_rate
        total = time.perf_counter() - t_start
        record = {
            "format": DUB_FORMAT,
            "version": 1,
            "video": str(video),
            "out": out.name,
            "files": _files_record(
                out.name, **({"rerender_motion": "rerender_motion.npy"} if rerender else {})
            ),
            "text": text,
            "voice": ref_source,
            "ref_text": ref_text,
            "rerender": rerender,
            "video_stream": "re-rendered (H.264)" if rerender else f"copied unchanged ({packets} packets)",
            "seconds": seconds,
            "frames": int(arrays["exp"].shape[0]),
            "windows": result.meta["windows"],
            "settings": _settings_record(settings, result, cfg, window_s, context_s),
            "wall_seconds": {
                "extract_motion": extract_s,
                "model": result.model_seconds,
                "vocoder": result.vocoder_seconds,
                "render": render_s,
                "mux": mux_s,
                "total": total,
            },
            "output_seconds_per_wall_second": seconds / max(total, 1e-9),
        }
        _write_record(tmp / "dub.json", record)
    return record


def animate(
    bundle,
    source: str | Path,
    out: str | Path,
    *,
    models,
    audio=None,
    text: str | None = None,
    ref_audio=None,
    ref_text: str | None = None,
    window_s: float = 20.0,
    context_s: float = 2.0,
    settings: SamplerSettings = SamplerSettings(),
    seed: int | None = None,
    vocoder=None,
    cfg: PreprocessConfig | None = None,
    face_detector: str | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Animate ``source`` (image or video) with speech ``audio`` or with ``text`` (speech generated too) into
    ``out`` (an .mp4); returns the ``animate.json`` record. ``models``: ``LivePortraitModels``."""
    t_start = time.perf_counter()
    source, out = Path(source), Path(out)
    if (audio is None) == (text is None):
        raise InputError("--audio / --text: give exactly one (speech to animate, or text to speak)")
    if audio is not None and (ref_audio is not None or ref_text is not None):
        raise InputError(
            "--ref-audio / --ref-text: only used with --text (the voice of the generated speech)"
        )
    outputs = OutputSet(
        out, ("audio.wav", "motion.npy", "motion.json"), "animate.json", ANIMATE_FORMAT, overwrite
    )
    if not source.is_file():
        raise InputError(f"--source {source}: no such file")
    cfg = cfg or PreprocessConfig(motion_extractor="", face_detector=face_detector, crop_size=256)
    s, f = bundle.mel, bundle.motion
    detector = FaceDetector(cfg.face_detector)
    boxes = None
    if source.suffix.lower() in IMAGE_SUFFIXES:
        detector.largest(read_image(source), str(source))  # no face: fail before the model runs
    else:
        from jam_flow.data.preprocess import ClipFailure, face_boxes

        n_src = video_length_frames(source, f.fps, where="--source")
        try:
            boxes = face_boxes(source, n_src, cfg, detector)
        except ClipFailure as err:
            from jam_flow.render.video import _failure

            raise _failure("--source", source, err) from err
    common = {
        "window_s": window_s,
        "context_s": context_s,
        "settings": settings,
        "seed": seed,
        "progress": progress,
    }
    if audio is not None:
        wave, audio_source = _read_wave(audio, s.sample_rate, "--audio")
        if not np.isfinite(wave).all():
            raise InputError(f"--audio {audio_source}: holds NaN or infinite samples")
        result = audio2motion_long(bundle, wave, **common)
        task = "audio2motion"
    else:
        result = text2av_long(bundle, text, ref_audio=ref_audio, ref_text=ref_text, vocoder=vocoder, **common)
        task = "text2av"
    track = MotionTrack(result.motion, f.fps, f.mouth_indices, False, task)
    with outputs as tmp:
        t0 = time.perf_counter()
        frames = render_stream(
            source,
            track,
            result.wave,
            s.sample_rate,
            models,
            tmp / out.name,
            cfg=cfg,
            detector=detector,
            boxes=boxes,
            batch_size=batch_size,
            progress=progress,
        )
        render_s = time.perf_counter() - t0
        _write_common(tmp, result, result.motion, _motion_meta(result, f.mouth_indices, False, task))
        seconds = result.wave.size / s.sample_rate
        total = time.perf_counter() - t_start
        record = {
            "format": ANIMATE_FORMAT,
            "version": 1,
            "source": str(source),
            "task": task,
            "audio": str(audio) if audio is not None and not isinstance(audio, tuple) else None,
            "text": text,
            "voice": str(ref_audio) if ref_audio is not None and not isinstance(ref_audio, tuple) else None,
            "out": out.name,
            "files": _files_record(out.name),
            "seconds": seconds,
            "frames": frames,
            "windows": result.meta["windows"],
            "settings": _settings_record(settings, result, cfg, window_s, context_s, stitching=True),
            "wall_seconds": {
                "model": result.model_seconds,
                "vocoder": result.vocoder_seconds,
                "render": render_s,  # H.264 encoding and muxing happen frame by frame inside the render
                "mux": None,
                "total": total,
            },
            "output_seconds_per_wall_second": seconds / max(total, 1e-9),
        }
        _write_record(tmp / "animate.json", record)
    return record
