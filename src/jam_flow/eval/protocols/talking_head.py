"""Protocol ``talking-head`` (paper Table 1; the video columns of Table 4): audio -> lip motion on HDTF-style test
videos, rendered with LivePortrait as I2V (from each chunk's first frame) and / or V2V (over the chunk's own
frames), scored with FID, FVD, LSE-C and LSE-D.

Dimension legend: t video frames (25 fps), m motion frames (= t per chunk), n mel frames, s samples (24 kHz),
k keypoints (21). Masks are bool, True = valid.

Recipe (docs/evaluation.md, "talking-head"):
1. Data: every video (mp4 / mov / mkv / webm / avi) under ``--videos DIR``, sorted by path; each is cut into
   non-overlapping ``--chunk-seconds`` (20 s) chunks (appendix A: "clips longer than 20 seconds are segmented into
   non-overlapping 20-second chunks"); a trailing remainder is kept when it lasts at least ``--min-chunk-seconds``
   (2 s). A chunk of ``m`` frames pairs with exactly ``m * 960`` audio samples (24 kHz / 25 fps).
   A stage-1 Motion-DiT checkpoint (the "Ours-Stage1" row) runs here too, with the wav2vec2 / HuBERT features of
   each chunk's speech from ``--audio-features-model`` (the directory ``jam-flow audio-features`` used) or, without
   it, the mel per motion frame (a ``stage1_motion_mel`` model).
2. Clue (``--clue e_rest``, default; §5.2: "a sequence of 17 non-mouth expression keypoints as a 'clue' ... used in
   both V2V and I2V"): the chunk's own LivePortrait expressions (face per frame, the render's crop, the motion
   extractor of ``--liveportrait``), ``clue.npy [m, k, 3]``; its non-mouth keypoints are given to the model as
   e_rest. ``--clue none``: the earlier mouth-only variant (e_rest dropped, only the mouth driven).
3. Generation (batched, ``--batch-size`` chunks per sampler call): the chunk's mel is given, the mouth motion is
   generated (``api.batch.generate_batch``, task audio2motion, text dropped). Cached per chunk under
   ``OUT/<label>/chunks/<chunk>/`` (I2V) or ``chunks_v2v/`` (V2V): ``audio.wav`` (the chunk's speech), ``motion.npy``
   (generated mouth + the clue's e_rest) and ``render.mp4``: I2V warps ``source.png`` (the chunk's first frame),
   the non-mouth keypoints driven by the clue relative to its first frame; V2V warps every frame of ``source.mp4``
   (the chunk's frames) keeping its own pose and non-mouth expression (the clue itself), the mouth replaced.
4. Metrics: FID between the real frames of every chunk and the rendered frames (every ``--frame-stride``-th
   frame), FVD between their non-overlapping 16-frame windows, LSE-C / LSE-D of the rendered video with the chunk's
   real speech (SyncNet, ``eval.syncnet``). ``--mode both`` gives one row per mode.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jam_flow.errors import InputError
from jam_flow.eval.protocols.common import (
    ClipCache,
    FrameFeeder,
    ProtocolSettings,
    Ranks,
    clip_key,
    iter_video_frames,
)
from jam_flow.eval.protocols.judges import Judges

__all__ = ["MODES", "CLUES", "Chunk", "chunk_clue", "modes_of", "plan_chunks", "video_metrics"]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi"}
MODES = ("i2v", "v2v")
CLUES = ("e_rest", "none")
FPS = 25
SAMPLE_RATE = 24000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 960


@dataclass(frozen=True)
class Chunk:
    """One evaluated chunk: ``frames`` frames of ``video`` from frame ``start``."""

    id: str
    video: str
    start: int
    frames: int


def _video_seconds(path: Path) -> float:
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise InputError(f"--videos: {path} has no video stream")
            s = c.streams.video[0]
            if s.duration is not None and s.time_base is not None:
                return float(s.duration * s.time_base)
            if c.duration is not None:
                return c.duration / 1e6
            return sum(1 for _ in c.decode(video=0)) / float(s.average_rate or FPS)
    except av.error.FFmpegError as err:
        raise InputError(f"--videos: cannot open {path} ({err})") from err


def plan_chunks(settings: ProtocolSettings) -> list[Chunk]:
    """The chunks of every video under ``--videos`` (see the module docstring), in a fixed order."""
    from jam_flow.data.audio import load_audio

    if settings.videos is None:
        raise InputError(
            "--videos: this protocol needs a directory of test videos (HDTF-style mp4 with speech)"
        )
    root = Path(settings.videos)
    if not root.is_dir():
        raise InputError(f"--videos: {root} is not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"--videos: no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) under {root}")
    if settings.chunk_seconds <= 0 or settings.min_chunk_seconds <= 0:
        raise InputError("--chunk-seconds / --min-chunk-seconds: expected positive durations")
    chunk_frames = int(round(settings.chunk_seconds * FPS))
    min_frames = max(6, int(math.ceil(settings.min_chunk_seconds * FPS)))
    chunks: list[Chunk] = []
    for path in files:
        audio_s = load_audio(path, SAMPLE_RATE).shape[0] / SAMPLE_RATE
        total = int(math.floor(min(audio_s, _video_seconds(path)) * FPS + 1e-6))
        stem = str(path.relative_to(root).with_suffix("")).replace("/", "__")
        for k, start in enumerate(range(0, total, chunk_frames)):
            frames = min(chunk_frames, total - start)
            if frames >= min_frames:
                chunks.append(Chunk(f"{stem}__{k:03d}", str(path), start, frames))
    if settings.max_clips is not None:
        chunks = chunks[: settings.max_clips]
    if not chunks:
        raise InputError(f"--videos: no chunk of at least {settings.min_chunk_seconds} s in {root}")
    return chunks


def _chunk_audio(chunk: Chunk, waves: dict[str, np.ndarray]) -> np.ndarray:
    from jam_flow.data.audio import load_audio

    if chunk.video not in waves:
        waves.clear()  # chunks of one video are consecutive: keep one decoded track
        waves[chunk.video] = load_audio(chunk.video, SAMPLE_RATE)
    wave = waves[chunk.video][
        chunk.start * SAMPLES_PER_FRAME : (chunk.start + chunk.frames) * SAMPLES_PER_FRAME
    ]
    return np.pad(wave, (0, chunk.frames * SAMPLES_PER_FRAME - wave.shape[0])).astype(np.float32)


def _first_frame(chunk: Chunk) -> np.ndarray:
    for j, frame in enumerate(iter_video_frames(chunk.video, FPS)):
        if j == chunk.start:
            return frame
    raise InputError(f"--videos: {chunk.video} has no frame {chunk.start}")


def modes_of(settings: ProtocolSettings) -> tuple[str, ...]:
    """``--mode``: ``i2v`` / ``v2v`` / ``both`` (default: both for talking-head, i2v for the ablation table)."""
    mode = settings.mode or ("both" if settings.protocol == "talking-head" else "i2v")
    if mode not in (*MODES, "both"):
        raise InputError(f"--mode: expected i2v, v2v or both, got {mode!r}")
    if settings.clue not in CLUES:
        raise InputError(f"--clue: expected e_rest or none, got {settings.clue!r}")
    return MODES if mode == "both" else (mode,)


def _chunk_frames(chunk: Chunk) -> list[np.ndarray]:
    frames = []
    for j, frame in enumerate(iter_video_frames(chunk.video, FPS)):
        if j >= chunk.start + chunk.frames:
            break
        if j >= chunk.start:
            frames.append(frame)
    if not frames:
        raise InputError(f"--videos: {chunk.video} has no frame {chunk.start}")
    while len(frames) < chunk.frames:  # a video track a little shorter than its audio: hold the last frame
        frames.append(frames[-1])
    return frames


@torch.no_grad()
def chunk_clue(frames: list[np.ndarray], models, settings: ProtocolSettings, where: str) -> np.ndarray:
    """The chunk's own expressions ``[t, k, 3]`` (the e_rest clue): the largest face per frame (frames without one
    take the nearest detection), smoothed boxes, the render's crop, LivePortrait's motion extractor."""
    from jam_flow.liveportrait.face import FaceDetector, crop_face, smooth_boxes

    detector = FaceDetector(settings.extra.get("face_model"))
    found = [(detector.detect(f) or [None])[0] for f in frames]
    have = [i for i, b in enumerate(found) if b is not None]
    if not have:
        raise InputError(
            f"--videos: no face found in {where} (the e_rest clue needs one; or use --clue none)"
        )
    boxes = [found[min(have, key=lambda h, i=i: abs(h - i))] for i in range(len(frames))]
    boxes = smooth_boxes(boxes, 5)
    out = []
    size = settings.render_crop_size
    for start in range(0, len(frames), settings.judge_batch):
        crops = [
            crop_face(f, b, size)[0]
            for f, b in zip(
                frames[start : start + settings.judge_batch],
                boxes[start : start + settings.judge_batch],
                strict=True,
            )
        ]
        info = models.motion(torch.from_numpy(np.stack(crops)).to(models.device))
        out.append(info["exp"].float().cpu().numpy())
    exp = np.concatenate(out).astype(np.float32)
    if not np.all(np.isfinite(exp)):
        raise InputError(f"--videos: the extracted expressions of {where} are not finite")
    return exp


def _write_source_video(path: Path, frames: list[np.ndarray]) -> None:
    from jam_flow.render.io import VideoWriter

    h, w = frames[0].shape[:2]
    writer = VideoWriter(path, float(FPS), w, h)
    try:
        for frame in frames:
            writer.write(frame)
        writer.close()
    except BaseException:
        writer.abort()
        raise


def _stage1_features(settings: ProtocolSettings, bundle):
    """The feature extractor a stage-1 Motion-DiT was trained with (``--audio-features-model``), else None (a
    stage-2 model, or a stage-1 model on the mel per motion frame)."""
    if not getattr(bundle, "stage1_motion", False) or settings.audio_features_model is None:
        return None
    from jam_flow.data.audio_features import AudioFeatureExtractor, resolve_layer

    model = settings.audio_features_model
    return AudioFeatureExtractor(
        model, resolve_layer(model, settings.audio_features_layer), str(bundle.device)
    )


def _fit_frames(exp: torch.Tensor, m: int) -> np.ndarray:
    """Generated ``[m', k, 3]`` cropped or padded (last frame repeated) to the chunk's ``m`` frames."""
    exp = exp[:m]
    if exp.shape[0] < m:
        exp = torch.cat([exp, exp[-1:].expand(m - exp.shape[0], *exp.shape[1:])])
    return exp.numpy().astype(np.float32)


def generate_chunks(
    settings: ProtocolSettings,
    bundle,
    ckpt: str,
    chunks: list[Chunk],
    cache: ClipCache,
    judges: Judges,
    need_render: bool,
    mode: str = "i2v",
) -> tuple[int, int]:
    """Generate (and render, ``mode`` i2v / v2v) this rank's chunks that the cache lacks; returns (generated,
    reused)."""
    import cv2

    from jam_flow.api.batch import generate_batch
    from jam_flow.data.audio import save_wav
    from jam_flow.data.mel import log_mel
    from jam_flow.flow.sampler import SamplerSettings
    from jam_flow.render import render_talking_head
    from jam_flow.render.io import MotionTrack

    sampler = SamplerSettings(nfe=settings.nfe, cfg=settings.cfg)
    clue = settings.clue == "e_rest"

    def key(c: Chunk) -> str:  # the earlier mouth-only I2V chunks keep their keys
        extra = {} if (mode, clue) == ("i2v", False) else {"mode": mode, "clue": settings.clue}
        return clip_key(settings, ckpt, {**asdict(c), **extra})

    todo = [c for c in chunks if not cache.done(c.id, key(c))]
    features = _stage1_features(settings, bundle) if todo else None
    generator = torch.Generator().manual_seed(settings.seed)
    waves: dict[str, np.ndarray] = {}
    k = bundle.motion.num_kp
    for start in range(0, len(todo), settings.batch_size):
        group = todo[start : start + settings.batch_size]
        audio = [_chunk_audio(c, waves) for c in group]
        mels = [log_mel(a, bundle.mel) for a in audio]
        n = max(x.shape[0] for x in mels)
        m = max(c.frames for c in group) + 1
        batch = {
            "mel": torch.zeros(len(group), n, bundle.mel.n_mels),
            "audio_mask": torch.zeros(len(group), n, dtype=torch.bool),
            "exp": torch.zeros(len(group), m, k, 3),
            "motion_mask": torch.zeros(len(group), m, dtype=torch.bool),
            "text": torch.full((len(group), 1), -1, dtype=torch.long),
        }
        frames = [_chunk_frames(c) for c in group] if (clue or (need_render and mode == "v2v")) else None
        clues = []
        for j, (c, mel) in enumerate(zip(group, mels, strict=True)):
            batch["mel"][j, : mel.shape[0]] = mel
            batch["audio_mask"][j, : mel.shape[0]] = True
            batch["motion_mask"][j, : c.frames] = True
            if clue:
                clues.append(chunk_clue(frames[j], judges.liveportrait(), settings, c.id))
                batch["exp"][j, : c.frames] = torch.from_numpy(clues[-1][: c.frames])
                batch["exp"][j, c.frames :] = batch["exp"][j, c.frames - 1]
        feats = None
        if features is not None:  # a stage-1 Motion-DiT: its wav2vec2 features of each chunk's speech
            rows = [features(a, SAMPLE_RATE, m) for a in audio]
            feats = torch.from_numpy(np.stack(rows)).float()
        gen = generate_batch(
            bundle, batch, "audio2motion", sampler, generator, use_rest=clue, audio_feats=feats
        )
        for j, c in enumerate(group):
            d = cache.start(c.id)
            exp = _fit_frames(gen.exp[j, : int(gen.motion_mask[j].sum())], c.frames)
            if not np.all(np.isfinite(exp)):
                raise InputError(f"{ckpt}: generated motion of {c.id} is not finite")
            np.save(d / "motion.npy", exp)
            if clue:
                np.save(d / "clue.npy", clues[j])
            save_wav(d / "audio.wav", audio[j], SAMPLE_RATE)
            if need_render:
                if mode == "v2v":
                    source = d / "source.mp4"
                    _write_source_video(source, frames[j])
                else:
                    source = d / "source.png"
                    cv2.imwrite(str(source), (frames[j][0] if frames else _first_frame(c))[..., ::-1])
                track = MotionTrack(exp, float(FPS), bundle.motion.mouth_indices, clue, f"{c.id}/motion.npy")
                render_talking_head(
                    source,
                    track,
                    d / "audio.wav",
                    None,
                    d / "render.mp4",
                    device=str(judges.device),
                    batch_size=settings.judge_batch,
                    face_model=settings.extra.get("face_model"),
                    crop_size=settings.render_crop_size,
                    models=judges.liveportrait(),
                )
            cache.finish(c.id, key(c), {"frames": c.frames, "mode": mode, "clue": settings.clue})
        log.info("talking-head: generated %d / %d chunks", start + len(group), len(todo))
    return len(todo), len(chunks) - len(todo)


def video_metrics(
    settings: ProtocolSettings,
    metrics: tuple[str, ...],
    chunks: list[Chunk],
    cache: ClipCache,
    judges: Judges,
    ranks: Ranks,
) -> dict[str, float]:
    """FID / FVD / LSE over this rank's chunks, reduced over all ranks (every rank must call this)."""
    from jam_flow.eval.metrics import LipSyncScores
    from jam_flow.eval.syncnet import lse_from_files, parse_crop
    from jam_flow.eval.video_metrics import FVD_CLIP_FRAMES

    out: dict[str, float] = {}
    fid, fvd = judges.fid(), judges.fvd()
    window = int(settings.extra.get("fvd_frames", FVD_CLIP_FRAMES))
    if fid is not None or fvd is not None:
        stride, batch = settings.frame_stride, settings.judge_batch
        real = FrameFeeder(fid, fvd, True, stride, batch, window, judges.device)
        fake = FrameFeeder(fid, fvd, False, stride, batch, window, judges.device)
        with torch.no_grad():
            for c in chunks:
                for j, frame in enumerate(iter_video_frames(c.video, FPS)):
                    if j >= c.start + c.frames:
                        break
                    if j >= c.start:
                        real.push(frame)
                real.end_clip()
                for j, frame in enumerate(iter_video_frames(cache.dir(c.id) / "render.mp4", FPS)):
                    if j >= c.frames:
                        break
                    fake.push(frame)
                fake.end_clip()
            real.close()
            fake.close()
        if fid is not None:
            out["fid"] = float(fid.compute())
        if fvd is not None:
            out["fvd"] = float(fvd.compute())
    if "lse_c" in metrics or "lse_d" in metrics:
        lse = LipSyncScores().to(judges.device)
        net, crop = judges.syncnet(), parse_crop(settings.lse_crop)
        for c in chunks:
            d = cache.dir(c.id)
            s = lse_from_files(net, d / "render.mp4", d / "audio.wav", crop)
            lse.update(torch.tensor([s.dist]), torch.tensor([s.conf]), torch.tensor([s.offset]))
        res = lse.compute()
        out.update({k: res[k] for k in ("lse_c", "lse_d") if k in metrics})
    return out


def run_video_part(
    settings: ProtocolSettings,
    metrics: tuple[str, ...],
    bundle,
    ckpt: str,
    cache: ClipCache,
    judges: Judges,
    ranks: Ranks,
    chunks: list[Chunk],
    mode: str = "i2v",
) -> dict[str, Any]:
    """Generate + score the talking-head part for one checkpoint in one ``mode``; returns metrics and counts."""
    need_render = any(m in metrics for m in ("fid", "fvd", "lse_c", "lse_d"))
    part = ranks.run(
        chunks,
        lambda mine: generate_chunks(settings, bundle, ckpt, mine, cache, judges, need_render, mode),
        lambda mine: video_metrics(settings, metrics, mine, cache, judges, ranks),
    )
    return {**part, "mode": mode, "clue": settings.clue}
