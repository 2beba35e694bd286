"""``jam-flow preprocess``: real talking-face videos -> dataset format v1 (mel + LivePortrait motion).

Dimension legend: s audio samples (24 kHz), n mel frames, m motion frames (25 fps), b extractor batch,
k keypoints (21), H, W frame size.

Per clip (docs/data.md, "Preprocessing"):
1. audio: first audio stream (PyAV) -> mono -> 24 kHz -> int16 (the wav we store) -> log-mel ``[n, 100]``;
2. duration = min(audio, video stream) length; shorter than ``--min-seconds`` (0.5 s) fails;
3. video resampled to 25 fps: motion frame j shows the decoded frame nearest to ``t_j = j / 25``;
4. face boxes: detected every ``--detect-every`` motion frames, gaps filled from the nearest detection,
   then a centred moving average (``smooth_boxes``); a clip with faces in under ``--min-face-ratio`` of the
   tried frames fails with "no face";
5. LivePortrait crop (scale 2.3, vy -0.125, 256 px) -> MotionExtractor in batches -> degrees/kp/exp/t/scale.

Clips are written atomically (wav, ``clips/<id>.json`` record, then the npz by rename), so a rerun skips every
clip whose npz loads and matches its record. Failures go to ``OUT/failures.jsonl`` and never stop the run;
manifest.jsonl, stats.json and dataset.json are written at the end from every finished clip.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jam_flow.atomic import atomic_file
from jam_flow.data.audio import decode_audio_av, resample
from jam_flow.data.format import (
    ClipRecord,
    DatasetInfo,
    clip_shapes,
    compute_stats,
    write_clip,
    write_dataset_json,
    write_manifest,
    write_stats,
)
from jam_flow.data.mel import log_mel
from jam_flow.data.segments import ClipFailure, ClipMotion, cut_points, extract_batch, motion_arrays
from jam_flow.data.shards import in_shard, parse_shard, write_failures, write_shard
from jam_flow.data.sources import DATASETS, SourceClip, discover
from jam_flow.errors import ArgumentParser, InputError
from jam_flow.features import MelSettings, MotionSettings, num_motion_frames

__all__ = [
    "PreprocessConfig",
    "ClipFailure",
    "process_clip",
    "video_seconds",
    "video_frames",
    "face_boxes",
    "extract_video_motion",
    "run",
    "main",
]


@dataclass(frozen=True)
class PreprocessConfig:
    motion_extractor: str
    face_detector: str | None = None  # None: OpenCV Haar cascade; a YuNet .onnx / Haar .xml; "full-frame"
    device: str = "cpu"
    batch_size: int = 32
    min_seconds: float = 0.5
    detect_every: int = 5
    min_face_ratio: float = 0.5
    box_smoothing: int = 5
    crop_scale: float = 2.3
    crop_vy: float = -0.125
    crop_size: int = 256  # LivePortrait's networks take 256 x 256; smaller only for quick experiments / tests
    max_clip_s: float = (
        0.0  # longer videos are cut at pauses into clips of at most this many seconds (0: never)
    )
    mel: MelSettings = MelSettings()
    motion: MotionSettings = MotionSettings()


# ----------------------------------------------------------------------------------------------------- decoding
def _open(path: Path):
    import av

    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise ClipFailure("corrupt", f"cannot open: {err}") from err


def _video_seconds(path: Path) -> float:
    import av

    with _open(path) as container:
        if not container.streams.video:
            raise ClipFailure("no-video", "has no video stream")
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / av.time_base
        return float("inf")


def _selected_frames(path: Path, n_frames: int, fps: int):
    """Yield ``(j, rgb uint8 [H, W, 3])`` for j = 0..n_frames-1: the decoded frame nearest to ``j / fps``."""
    import av

    j = 0
    prev: tuple[float, np.ndarray] | None = None
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate) if stream.average_rate else float(fps)
        try:
            for k, frame in enumerate(container.decode(stream)):
                tau = float(frame.time) if frame.time is not None else k / rate
                rgb = frame.to_ndarray(format="rgb24")
                while j < n_frames and j / fps <= tau:
                    target = j / fps
                    use_prev = prev is not None and (target - prev[0]) < (tau - target)
                    yield j, (prev[1] if use_prev else rgb)
                    j += 1
                prev = (tau, rgb)
                if j >= n_frames:
                    return
        except (av.error.FFmpegError, ValueError) as err:
            if prev is None:
                raise ClipFailure("corrupt", f"video stream is corrupt: {err}") from err
            # a truncated stream keeps what decoded; the remaining frames repeat the last one
    if prev is None:
        raise ClipFailure("corrupt", "video stream decodes to no frame")
    while j < n_frames:
        yield j, prev[1]
        j += 1


def _face_boxes(path: Path, n_frames: int, cfg: PreprocessConfig, detector) -> list[tuple[float, ...]]:
    from jam_flow.liveportrait.face import smooth_boxes

    found: dict[int, tuple[float, ...]] = {}
    tried = 0
    for j, rgb in _selected_frames(path, n_frames, cfg.motion.fps):
        if j % cfg.detect_every == 0 or j == n_frames - 1:
            tried += 1
            boxes = detector.detect(rgb)
            if boxes:
                found[j] = tuple(float(v) for v in boxes[0])
    if not found or len(found) < cfg.min_face_ratio * tried:
        raise ClipFailure("no-face", f"a face was found in {len(found)} of {tried} sampled frames")
    keys = np.array(sorted(found))
    boxes = np.array([found[k] for k in keys])
    filled = []
    for j in range(n_frames):  # linear interpolation between detections, nearest beyond them
        filled.append(tuple(float(np.interp(j, keys, boxes[:, c])) for c in range(4)))
    return smooth_boxes(filled, cfg.box_smoothing)


def _extract_motion(
    path: Path, n_frames: int, boxes, cfg: PreprocessConfig, extractor, on_frames=None
) -> dict[str, np.ndarray]:
    from jam_flow.liveportrait.face import crop_face

    outs: dict[str, list[np.ndarray]] = {}
    batch: list[np.ndarray] = []
    for j, rgb in _selected_frames(path, n_frames, cfg.motion.fps):
        crop, _ = crop_face(rgb, boxes[j], size=cfg.crop_size, scale=cfg.crop_scale, vy_ratio=cfg.crop_vy)
        batch.append(crop)
        if len(batch) == cfg.batch_size:
            extract_batch(extractor, batch, cfg.device, outs)
            if on_frames is not None:
                on_frames(j + 1)
    if batch:
        extract_batch(extractor, batch, cfg.device, outs)
    if on_frames is not None:
        on_frames(n_frames)
    return motion_arrays(outs, n_frames)


# public names of the streaming steps (other commands reuse them: dub-video, animate)
def video_seconds(path: Path) -> float:
    """Length of the first video stream in seconds (``inf`` when the container does not say);
    :class:`ClipFailure` when unreadable or without video."""
    return _video_seconds(Path(path))


def video_frames(path: Path, n_frames: int, fps: int):
    """Yield ``(j, rgb uint8 [H, W, 3])`` for motion frames ``j < n_frames`` at ``fps``, decoded one at a time."""
    return _selected_frames(Path(path), n_frames, fps)


def face_boxes(path: Path, n_frames: int, cfg: PreprocessConfig, detector) -> list[tuple[float, ...]]:
    """Smoothed face box of every motion frame (streamed; :class:`ClipFailure` ``no-face``)."""
    return _face_boxes(Path(path), n_frames, cfg, detector)


def extract_video_motion(
    path: Path, n_frames: int, cfg: PreprocessConfig, extractor, detector, on_frames=None
) -> tuple[dict[str, np.ndarray], list[tuple[float, ...]]]:
    """LivePortrait motion of ``n_frames`` motion frames of a video (the preprocessing path: boxes, crops,
    extractor; frames stream from disk twice, never all in memory). Returns the clip arrays (``exp``, ``kp``,
    ``pitch``, ``yaw``, ``roll``, ``t``, ``scale``) and the face boxes; :class:`ClipFailure` on a bad video.
    ``on_frames(done)`` is called after each extractor batch."""
    boxes = _face_boxes(Path(path), n_frames, cfg, detector)
    arrays = _extract_motion(Path(path), n_frames, boxes, cfg, extractor, on_frames)
    for key, arr in arrays.items():
        if not np.isfinite(arr).all():
            raise ClipFailure("error", f"non-finite values in {key!r} (check the motion extractor weights)")
    return arrays, boxes


def process_clip(src: SourceClip, out: Path, cfg: PreprocessConfig, extractor, detector) -> ClipRecord:
    """Turn one source video into a finished clip in ``out`` (never cut); raises :class:`ClipFailure`."""
    records, failures = process_source(src, out, cfg, extractor, detector, max_clip_s=0.0)
    if failures:
        raise failures[0][1]
    return records[0]


def process_source(
    src: SourceClip, out: Path, cfg: PreprocessConfig, extractor, detector, max_clip_s: float = 0.0
) -> tuple[list[ClipRecord], list[tuple[str, ClipFailure]]]:
    """Turn one source video into finished clips in ``out``: one clip, or (longer than ``max_clip_s`` seconds)
    pieces ``<id>__p000, ...`` cut at pauses (:func:`jam_flow.data.segments.cut_points`). The video is decoded
    once for all of them. Returns the records and ``(piece id, failure)`` of pieces that failed; a failure of
    the whole video raises :class:`ClipFailure`."""
    if not src.path.is_file() or src.path.stat().st_size == 0:
        raise ClipFailure("corrupt", "file is missing or empty")
    video_s = _video_seconds(src.path)
    try:
        audio, rate = decode_audio_av(src.path)
    except InputError as err:
        kind = "no-audio" if "no audio stream" in str(err) else "corrupt"
        raise ClipFailure(kind, str(err)) from err
    sr, fps = cfg.mel.sample_rate, cfg.motion.fps
    wave = resample(audio, rate, sr)
    duration = min(len(wave) / sr, video_s)
    if duration < cfg.min_seconds:
        raise ClipFailure("too-short", f"{duration:.2f} s of audio+video, need at least {cfg.min_seconds} s")
    pcm = np.clip(np.round(wave[: int(round(duration * sr))] * 32768.0), -32768, 32767).astype(np.int16)
    pieces = cut_points(len(pcm), pcm.astype(np.float32) / 32768.0, sr, fps, max_clip_s)
    cut = len(pieces) > 1
    hop = sr // fps
    plan = []  # (id, text, pcm piece, first motion frame, motion frames)
    for k, (a, b) in enumerate(pieces):
        cid = f"{src.id}__p{k:03d}" if cut else src.id
        n_motion = num_motion_frames((b - a) / sr, fps)
        plan.append((cid, "" if cut else src.text, pcm[a:b], a // hop, n_motion))
    records: list[ClipRecord] = []
    failed: list[tuple[str, ClipFailure]] = []
    total = plan[-1][3] + plan[-1][4]
    k, motion, dead = 0, None, False  # dead: the current piece failed, its remaining frames are skipped
    for j, rgb in _selected_frames(src.path, total, fps):  # the one decoding pass over the video
        cid, text, piece, first, n_motion = plan[k]
        if motion is None and not dead:
            motion = ClipMotion(n_motion, cfg, extractor, detector)
        if motion is not None:
            try:
                motion.push(j - first, rgb)
            except ClipFailure as err:
                failed.append((cid, err))
                motion, dead = None, True
        if j == first + n_motion - 1:
            if motion is not None:
                try:
                    records.append(_finish_piece(out, src, cid, text, piece, motion, cfg))
                except ClipFailure as err:
                    failed.append((cid, err))
            k, motion, dead = k + 1, None, False
    if not cut and failed:
        raise failed[0][1]
    return records, failed


def _finish_piece(
    out: Path,
    src: SourceClip,
    cid: str,
    text: str,
    pcm: np.ndarray,
    motion: ClipMotion,
    cfg: PreprocessConfig,
) -> ClipRecord:
    sr = cfg.mel.sample_rate
    duration = len(pcm) / sr
    if duration < cfg.min_seconds:
        raise ClipFailure("too-short", f"{duration:.2f} s piece, need at least {cfg.min_seconds} s")
    arrays, _ = motion.finish()
    mel = log_mel(pcm.astype(np.float32) / 32768.0, cfg.mel).numpy()
    arrays["mel"] = mel
    for key, arr in arrays.items():
        if not np.isfinite(arr).all():
            raise ClipFailure("error", f"non-finite values in {key!r} (check the motion extractor weights)")
    record = ClipRecord(
        id=cid,
        split=src.split,
        speaker=src.speaker,
        duration=duration,
        n_mel=mel.shape[0],
        n_motion=num_motion_frames(duration, cfg.motion.fps),
        text=text,
        features="",
    )
    # wav first, then the record, then the npz (atomic rename): an npz on disk means the clip is finished
    from jam_flow.data.audio import save_wav

    record.audio = f"clips/{record.id}.wav"
    save_wav(out / record.audio, pcm, sr)
    record.features = f"clips/{record.id}.npz"
    (out / "clips" / f"{record.id}.json").write_text(json.dumps(record.to_json()) + "\n", encoding="utf-8")
    return write_clip(out, record, arrays, sample_rate=sr)


def _finished(out: Path, src: SourceClip) -> tuple[list[ClipRecord], list[dict]] | None:
    """The records (and piece failures) of an already finished source, found without loading any array: the
    record files and npz archives (whose member list is read, not their data) of its clip, or of the pieces its
    ``clips/<id>.pieces.json`` lists. None when the source must be (re)done."""
    pieces_path = out / "clips" / f"{src.id}.pieces.json"
    ids, failed = [src.id], []
    if pieces_path.is_file():
        try:
            obj = json.loads(pieces_path.read_text(encoding="utf-8"))
            ids, failed = list(obj["pieces"]), list(obj["failed"])
        except (json.JSONDecodeError, KeyError, TypeError):
            return None
    members = {f"{k}.npy" for k in clip_shapes(1, 1)}
    records = []
    for cid in ids:
        rec_path, npz = out / "clips" / f"{cid}.json", out / "clips" / f"{cid}.npz"
        if not npz.is_file() or not rec_path.is_file():
            return None
        try:
            rec = ClipRecord.from_json(json.loads(rec_path.read_text(encoding="utf-8")), str(rec_path))
            with zipfile.ZipFile(npz) as zf:  # the npz is renamed into place complete; its directory suffices
                if not members <= set(zf.namelist()):
                    return None
        except (InputError, json.JSONDecodeError, zipfile.BadZipFile, OSError):
            return None
        if rec.audio is not None and not (out / rec.audio).is_file():
            return None
        # the split / speaker / transcript come from the source and may have been edited since
        rec.split, rec.speaker = src.split, src.speaker
        if not pieces_path.is_file():
            rec.text = src.text
        records.append(rec)
    return records, failed


# ----------------------------------------------------------------------------------------------------- running
_STATE: dict = {}


def _init(cfg: PreprocessConfig, out: str, threads: int, load: bool = True) -> None:
    """Set up a worker: thread count, and (unless inherited through fork) the extractor and the detector."""
    from jam_flow.liveportrait import load_motion_extractor
    from jam_flow.liveportrait.face import FaceDetector

    torch.set_num_threads(max(1, threads))
    _STATE.update(cfg=cfg, out=Path(out))
    if load:
        _STATE.update(
            extractor=load_motion_extractor(cfg.motion_extractor, cfg.device),
            detector=FaceDetector(cfg.face_detector),
        )


def _work(src: SourceClip) -> tuple[str, list[ClipRecord], list[dict]]:
    """-> (source id, finished records, failures ``{"id", "kind", "reason"}``)."""
    out, cfg = _STATE["out"], _STATE["cfg"]
    try:
        records, failed = process_source(
            src, out, cfg, _STATE["extractor"], _STATE["detector"], max_clip_s=cfg.max_clip_s
        )
    except ClipFailure as err:
        return src.id, [], [{"id": src.id, "kind": err.kind, "reason": str(err)}]
    except Exception as err:  # a bad clip never stops the run; the report keeps the reason
        return src.id, [], [{"id": src.id, "kind": "error", "reason": f"{type(err).__name__}: {err}"}]
    rows = [{"id": cid, "kind": err.kind, "reason": str(err)} for cid, err in failed]
    if len(records) + len(rows) > 1 or any(r.id != src.id for r in records):  # cut: list the pieces
        with atomic_file(out / "clips" / f"{src.id}.pieces.json") as tmp:
            tmp.write_text(json.dumps({"pieces": [r.id for r in records], "failed": rows}) + "\n", "utf-8")
    return src.id, records, rows


def run(
    dataset: str,
    root: str | Path,
    out: str | Path,
    cfg: PreprocessConfig,
    workers: int = 1,
    log=print,
    shard: tuple[int, int] = (0, 1),
) -> tuple[list[ClipRecord], list[dict]]:
    """Preprocess every discovered source video (of shard ``I`` of ``N``: :func:`jam_flow.data.shards.
    in_shard`); returns (finished records, failure rows). One shard of several writes its manifest, statistics
    moments and failures under ``OUT/shards/`` (merged by ``jam-flow data stats``), a whole run the dataset files."""
    out = Path(out)
    clips, skipped = discover(dataset, root)
    index, count = shard
    if count > 1:
        clips = [c for c in clips if in_shard(c.id, index, count)]
        skipped = skipped if index == 0 else []  # reported once, by shard 0
    (out / "clips").mkdir(parents=True, exist_ok=True)
    records: dict[str, list[ClipRecord]] = {}
    failures = [{"id": None, "path": str(p), "kind": "skipped", "reason": reason} for p, reason in skipped]
    by_id = {c.id: c for c in clips}
    todo: list[SourceClip] = []
    for src in clips:
        done = _finished(out, src)
        if done is None:
            todo.append(src)
        else:
            records[src.id] = done[0]
            failures += [{**row, "path": str(src.path)} for row in done[1]]
    resumed_sources = len(records)
    resumed = sum(len(v) for v in records.values())
    start = time.perf_counter()
    where = f" (shard {index}/{count})" if count > 1 else ""
    log(
        f"preprocess{where}: {len(clips)} clips found, {resumed_sources} already finished, "
        f"{len(todo)} to process"
    )
    workers = max(1, min(workers, len(todo) or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)
    if todo:
        # load in this process first: a bad checkpoint or detector fails once, with a clear message
        _init(cfg, str(out), torch.get_num_threads() if workers == 1 else threads)
        if workers == 1:
            results = map(_work, todo)
        else:
            spawn = cfg.device.startswith("cuda") or "fork" not in mp.get_all_start_methods()
            ctx = mp.get_context("spawn" if spawn else "fork")
            pool = ctx.Pool(workers, initializer=_init, initargs=(cfg, str(out), threads, spawn))
            results = pool.imap_unordered(_work, todo, chunksize=1)
        try:
            for k, (sid, recs, rows) in enumerate(results, start=1):
                if recs:
                    records[sid] = recs
                failures += [{**row, "path": str(by_id[sid].path)} for row in rows]
                if k % 50 == 0 or k == len(todo):
                    log(f"preprocess: {k}/{len(todo)} processed ({time.perf_counter() - start:.1f} s)")
        finally:
            if workers > 1:
                pool.close()
                pool.join()
    failures = [
        {"id": f["id"], "path": f["path"], "kind": f["kind"], "reason": f["reason"]} for f in failures
    ]
    failures.sort(key=lambda f: (f["id"] or "", f["path"]))
    finished = [rec for c in clips for rec in records.get(c.id, [])]
    info = DatasetInfo(mel=cfg.mel, motion=cfg.motion, num_clips=len(finished), source=dataset)
    if count > 1:
        report = write_shard(out, index, count, finished, failures, info)
    else:
        report = out / "failures.jsonl"
        write_failures(report, failures)
    kinds = Counter(f["kind"] for f in failures)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "none"
    log(
        f"preprocess{where}: {len(finished)} clips ready ({resumed} resumed), {len(failures)} failed ({summary}); "
        f"failure report: {report}"
    )
    if finished and count == 1:
        write_manifest(out, finished)
        write_stats(out, compute_stats(out, finished))
        write_dataset_json(out, info)
    return finished, failures


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="jam-flow preprocess",
        description="Turn talking-face videos into a jam-flow dataset (format v1).",
    )
    p.add_argument("--dataset", required=True, choices=DATASETS, help="source layout")
    p.add_argument("--root", type=Path, required=True, help="input directory")
    p.add_argument("--out", type=Path, required=True, help="output dataset directory (reruns resume)")
    p.add_argument(
        "--motion-extractor",
        type=Path,
        required=True,
        help="LivePortrait motion_extractor.pth (or its weights directory)",
    )
    p.add_argument("--workers", type=int, default=1, help="parallel clip workers (default 1)")
    p.add_argument(
        "--shard",
        default=None,
        help="I/N: process only shard I (0-based) of N of the source videos (one machine each); merge the "
        "shards with `jam-flow data stats OUT` (default: everything)",
    )
    p.add_argument(
        "--max-clip-s",
        type=float,
        default=30.0,
        help="cut longer videos at pauses into clips of at most this many seconds (default 30, the "
        "training max_duration; 0: never cut)",
    )
    p.add_argument(
        "--face-detector",
        default=None,
        help="YuNet .onnx or Haar .xml file, or 'full-frame' for pre-cropped faces "
        "(default: OpenCV's bundled Haar frontal-face cascade)",
    )
    p.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="device of the motion extractor (default: cuda when available)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="frames per extractor batch (default 32)")
    p.add_argument("--min-seconds", type=float, default=0.5, help="shorter clips fail (default 0.5)")
    p.add_argument(
        "--detect-every", type=int, default=5, help="run the face detector every N frames (default 5)"
    )
    p.add_argument(
        "--crop-size",
        type=int,
        default=256,
        help="face crop side fed to the extractor (LivePortrait: 256; smaller = faster, less faithful)",
    )
    p.add_argument(
        "--min-face-ratio",
        type=float,
        default=0.5,
        help="fail a clip when fewer sampled frames hold a face (default 0.5)",
    )
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if not args.motion_extractor.exists():
        raise InputError(f"--motion-extractor: {args.motion_extractor} does not exist")
    if args.crop_size < 32:
        raise InputError(f"--crop-size: expected at least 32 pixels, got {args.crop_size}")
    for name in ("workers", "batch_size", "detect_every"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')}: expected at least 1, got {getattr(args, name)}")
    if not 0.0 <= args.min_face_ratio <= 1.0:
        raise InputError(f"--min-face-ratio: expected a fraction in [0, 1], got {args.min_face_ratio}")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out: {args.out} exists and is not a directory")
    shard = parse_shard(args.shard) if args.shard is not None else (0, 1)
    if args.max_clip_s < 0 or 0 < args.max_clip_s < 2 * args.min_seconds:
        raise InputError(
            f"--max-clip-s: expected 0 (never cut) or at least twice --min-seconds, got {args.max_clip_s}"
        )
    cfg = PreprocessConfig(
        motion_extractor=str(args.motion_extractor),
        face_detector=args.face_detector,
        device=args.device,
        batch_size=args.batch_size,
        min_seconds=args.min_seconds,
        detect_every=args.detect_every,
        min_face_ratio=args.min_face_ratio,
        crop_size=args.crop_size,
        max_clip_s=args.max_clip_s,
    )
    finished, failures = run(args.dataset, args.root, args.out, cfg, workers=args.workers, shard=shard)
    if not finished:
        print(f"error: no clip could be processed; see the failure report in {args.out}")
        return 1
    return 0
