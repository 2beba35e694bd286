"""Protocol ``talking-head`` (paper Table 1; the video columns of Table 4): audio -> lip motion on HDTF-style test
videos, rendered with LivePortrait from each chunk's first frame (I2V), scored with FID, FVD, LSE-C and LSE-D.

Dimension legend: t video frames (25 fps), m motion frames (= t per chunk), n mel frames, s samples (24 kHz),
k keypoints (21). Masks are bool, True = valid.

Recipe (docs/evaluation.md, "talking-head"):
1. Data: every video (mp4 / mov / mkv / webm / avi) under ``--videos DIR``, sorted by path; each is cut into
   non-overlapping ``--chunk-seconds`` (20 s) chunks (appendix A: "clips longer than 20 seconds are segmented into
   non-overlapping 20-second chunks"); a trailing remainder is kept when it lasts at least ``--min-chunk-seconds``
   (2 s). A chunk of ``m`` frames pairs with exactly ``m * 960`` audio samples (24 kHz / 25 fps).
2. Generation (batched, ``--batch-size`` chunks per sampler call): the chunk's mel is given, the mouth motion is
   generated (``api.batch.generate_batch``, task audio2motion, text and e_rest dropped). Cached per chunk
   under ``OUT/<label>/chunks/<chunk>/``: ``source.png`` (the chunk's first frame), ``audio.wav`` (the chunk's
   speech), ``motion.npy`` and ``render.mp4`` (LivePortrait, image source, only the mouth driven).
3. Metrics: FID between the real frames of every chunk and the rendered frames (every ``--frame-stride``-th
   frame), FVD between their non-overlapping 16-frame windows, LSE-C / LSE-D of the rendered video with the chunk's
   real speech (SyncNet, ``eval.syncnet``).
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

__all__ = ["Chunk", "plan_chunks", "video_metrics"]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi"}
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
) -> tuple[int, int]:
    """Generate (and render) this rank's chunks that the cache lacks; returns (generated, reused)."""
    import cv2

    from jam_flow.api.batch import generate_batch
    from jam_flow.data.audio import save_wav
    from jam_flow.data.mel import log_mel
    from jam_flow.flow.sampler import SamplerSettings
    from jam_flow.render import render_talking_head
    from jam_flow.render.io import MotionTrack

    sampler = SamplerSettings(nfe=settings.nfe, cfg=settings.cfg)
    todo = [c for c in chunks if not cache.done(c.id, clip_key(settings, ckpt, asdict(c)))]
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
        for j, (c, mel) in enumerate(zip(group, mels, strict=True)):
            batch["mel"][j, : mel.shape[0]] = mel
            batch["audio_mask"][j, : mel.shape[0]] = True
            batch["motion_mask"][j, : c.frames] = True
        gen = generate_batch(bundle, batch, "audio2motion", sampler, generator)
        for j, c in enumerate(group):
            d = cache.start(c.id)
            exp = _fit_frames(gen.exp[j, : int(gen.motion_mask[j].sum())], c.frames)
            if not np.all(np.isfinite(exp)):
                raise InputError(f"{ckpt}: generated motion of {c.id} is not finite")
            np.save(d / "motion.npy", exp)
            save_wav(d / "audio.wav", audio[j], SAMPLE_RATE)
            if need_render:
                cv2.imwrite(str(d / "source.png"), _first_frame(c)[..., ::-1])
                track = MotionTrack(exp, float(FPS), bundle.motion.mouth_indices, False, f"{c.id}/motion.npy")
                render_talking_head(
                    d / "source.png",
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
            cache.finish(c.id, clip_key(settings, ckpt, asdict(c)), {"frames": c.frames})
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
) -> dict[str, Any]:
    """Generate + score the talking-head part for one checkpoint; returns metrics and clip counts."""
    need_render = any(m in metrics for m in ("fid", "fvd", "lse_c", "lse_d"))
    return ranks.run(
        chunks,
        lambda mine: generate_chunks(settings, bundle, ckpt, mine, cache, judges, need_render),
        lambda mine: video_metrics(settings, metrics, mine, cache, judges, ranks),
    )
