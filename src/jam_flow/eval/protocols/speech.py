"""Protocols ``tts`` (paper Table 2) and ``dubbing`` (Table 3), and the speech columns of ``ablation`` (Table 4).

Dimension legend: s samples (24 kHz generated speech), d speaker-embedding size. Masks: none.

``tts`` (docs/evaluation.md, "tts"): the F5-TTS cross-sentence list of LibriSpeech-PC test-clean
(``--list FILE``: one line per item, six tab-separated fields ``ref_utt, ref_dur, ref_text, gen_utt, gen_dur,
gen_text``; audio at ``--audio-root/<spk>/<chapter>/<utt>.flac`` as in LibriSpeech). Each item generates ``gen_text``
in the voice of the reference (``inference.tasks.tts``: reference mel + ``ref_text + gen_text``, F5's duration rule,
seed ``--seed + item index``). WER: the local ASR's transcript of the generated speech against ``gen_text``
(F5-TTS's mean of per-utterance WERs); SIM-o: cosine of speaker embeddings of the generated speech and the
*original* reference recording (F5-TTS's SIM-o).

``dubbing``: the ``--split`` (test) clips of a dataset (format v1; CelebV-Dub preprocessed with ``jam-flow
preprocess``), a clip longer than ``--chunk-seconds`` (20 s) cut into non-overlapping chunks (appendix A; a
trailing remainder kept from ``--min-chunk-seconds``), each an item ``<id>__<k>`` with its motion frames, the words
of the transcript in proportion to time (the format has no word timings), its span of the real speech (spkSIM) and
of the original video (LSE). Each clip's own lip motion and transcript are given and its speech is generated
(``inference.tasks.dub``, paper case 3) with, by default (``--dub-reference same-speaker``), the voice of the next
clip of the same speaker in the split (none when the speaker has one clip), whose own lip motion is given under
its voice (the trained layout: one real clip, its motion given throughout, its speech after the reference hidden). WER against the transcript, spkSIM
against the clip's real speech, LSE-C / LSE-D of the clip's *original* video frames (``--videos DIR/<id>.mp4``) with
the generated speech: the video is fixed in dubbing, only the speech is new.

Ablation (speech part): the tts list with ``inference.tasks.text2av`` (speech and motion generated jointly, §5.4:
"WER and SIM-o are computed using both generated motion and audio"), WER and SIM-o as for tts.

Generation is per item (each has its own reference and length); the judges run once per item. Every item is
cached under ``OUT/<label>/<task>/<id>/`` (``audio.wav``, ``motion.npy`` for text2av, ``done.json``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jam_flow.errors import InputError
from jam_flow.eval.protocols.common import ClipCache, ProtocolSettings, Ranks, clip_key
from jam_flow.eval.protocols.judges import Judges, MeanWER

__all__ = ["SpeechItem", "read_tts_list", "dubbing_items", "run_speech_part"]

log = logging.getLogger(__name__)

FPS = 25.0  # the clip format's motion rate (dataset.json motion.fps)


@dataclass(frozen=True)
class SpeechItem:
    """One generation: ``text`` to speak, a reference voice (optional), given motion (dubbing), and what the
    speaker similarity compares against (``sim_ref``)."""

    id: str
    index: int
    text: str
    ref_audio: str | None
    ref_text: str | None
    sim_ref: str | None
    motion: str | None = None
    video: str | None = None
    ref_motion: str | None = None  # dubbing: the reference clip's own motion, given under its voice
    start: int = 0  # dubbing: the chunk's first motion frame in its clip
    frames: int | None = None  # dubbing: the chunk's motion frames (None: the whole clip)


def _librispeech_path(root: Path, utt: str) -> Path:
    parts = utt.split("-")
    if len(parts) == 3:
        return root / parts[0] / parts[1] / f"{utt}.flac"
    return root / utt  # a path relative to --audio-root (other lists)


def read_tts_list(settings: ProtocolSettings) -> list[SpeechItem]:
    """Parse ``--list`` (F5-TTS cross-sentence format); every referenced audio file must exist."""
    if settings.list_file is None or settings.audio_root is None:
        raise InputError(
            "--list/--audio-root: this protocol needs the F5-TTS cross-sentence list and the LibriSpeech "
            "test-clean directory"
        )
    path, root = Path(settings.list_file), Path(settings.audio_root)
    if not path.is_file():
        raise InputError(f"--list: {path} does not exist")
    items: list[SpeechItem] = []
    seen: set[str] = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 6:
            raise InputError(
                f"--list: {path}:{lineno}: expected 6 tab-separated fields (ref_utt, ref_dur, ref_text, "
                f"gen_utt, gen_dur, gen_text), got {len(fields)}"
            )
        ref_utt, _, ref_text, gen_utt, _, gen_text = (f.strip() for f in fields)
        ref = _librispeech_path(root, ref_utt)
        if not ref.is_file():
            raise InputError(f"--list: {path}:{lineno}: reference audio {ref} does not exist")
        clip_id = gen_utt.replace("/", "__")
        if clip_id in seen:
            clip_id = f"{clip_id}__{lineno}"
        seen.add(clip_id)
        items.append(SpeechItem(clip_id, len(items), gen_text, str(ref), ref_text, str(ref)))
    if not items:
        raise InputError(f"--list: {path} holds no items")
    return items[: settings.max_clips] if settings.max_clips is not None else items


def dubbing_items(settings: ProtocolSettings) -> list[SpeechItem]:
    """The ``--split`` clips of ``--data.data_dir`` (see the module docstring)."""
    from jam_flow.data.format import read_manifest

    if settings.data_dir is None:
        raise InputError("--data.data_dir: the dubbing protocol needs a dataset (CelebV-Dub test split)")
    root = Path(settings.data_dir)
    records = [r for r in read_manifest(root, split=settings.split) if r.text.strip() and r.audio]
    if not records:
        raise InputError(
            f"--data.data_dir: {root} has no clips with text and audio in split {settings.split!r}"
        )
    if settings.max_clips is not None:
        records = records[: settings.max_clips]
    if settings.dub_reference not in ("same-speaker", "none"):
        raise InputError(f"--dub-reference: expected same-speaker or none, got {settings.dub_reference!r}")
    if settings.chunk_seconds <= 0 or settings.min_chunk_seconds <= 0:
        raise InputError("--chunk-seconds / --min-chunk-seconds: expected positive durations")
    chunk = int(round(settings.chunk_seconds * FPS))
    least = max(6, math.ceil(settings.min_chunk_seconds * FPS))
    items = []
    for r in records:
        same = [o for o in records if o.speaker == r.speaker]
        ref = same[(same.index(r) + 1) % len(same)] if len(same) > 1 else None
        if settings.dub_reference == "none":
            ref = None
        video = str(Path(settings.videos) / f"{r.id}.mp4") if settings.videos else None
        spans = [(0, None)] if r.n_motion <= chunk else _chunk_spans(r.n_motion, chunk, least)
        for k, (start, frames) in enumerate(spans):
            items.append(
                SpeechItem(
                    id=r.id if frames is None else f"{r.id}__{k:03d}",
                    index=len(items),
                    text=r.text if frames is None else _chunk_text(r.text, start, frames, r.n_motion),
                    ref_audio=str(root / ref.audio) if ref else None,
                    ref_text=ref.text if ref else None,
                    ref_motion=str(root / ref.features) if ref else None,
                    sim_ref=str(root / r.audio),
                    motion=str(root / r.features),
                    video=video,
                    start=start,
                    frames=frames,
                )
            )
    return [item for item in items if item.text.strip()]


def _chunk_spans(m: int, chunk: int, least: int) -> list[tuple[int, int | None]]:
    """Non-overlapping ``chunk``-frame spans of an ``m``-frame clip (appendix A: 20 s); a trailing remainder of at
    least ``least`` frames is kept."""
    return [(s, min(chunk, m - s)) for s in range(0, m, chunk) if min(chunk, m - s) >= least]


def _chunk_text(text: str, start: int, frames: int, m: int) -> str:
    """The words of ``text`` whose character-count centre falls in ``[start, start + frames)`` of ``m`` frames: the
    transcript cut in proportion to time (the clip format has no word timings)."""
    words = text.split()
    total = sum(len(w) + 1 for w in words)
    out, pos = [], 0
    for w in words:
        centre = (pos + 0.5 * len(w)) / max(total, 1) * m
        pos += len(w) + 1
        if start <= centre < start + frames or (start + frames >= m and centre >= m):
            out.append(w)
    return " ".join(out)


def chunk_inputs(settings: ProtocolSettings, item: SpeechItem) -> tuple[str, str | None]:
    """A dubbing chunk's given motion (``OUT/inputs/<id>.npy``, its frames of the clip's ``exp``) and its original
    video cut to the chunk (``OUT/inputs/<id>.mp4``, with ``--videos``); a whole clip returns its own files."""
    if item.frames is None:
        return str(item.motion), item.video
    inputs = Path(settings.out) / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    motion = inputs / f"{item.id}.npy"
    if not motion.is_file():
        with np.load(str(item.motion), allow_pickle=False) as z:
            np.save(motion, np.asarray(z["exp"], dtype=np.float32)[item.start : item.start + item.frames])
    video = None
    if item.video is not None and Path(item.video).is_file():  # cut once, shared by every checkpoint
        video = inputs / f"{item.id}.mp4"
        if not video.is_file():
            _cut_video(Path(item.video), video, item.start, item.frames)
        video = str(video)
    return str(motion), video


def _cut_video(src: Path, dst: Path, start: int, frames: int) -> None:
    from jam_flow.eval.protocols.common import iter_video_frames
    from jam_flow.render.io import VideoWriter

    writer = None
    try:
        for j, frame in enumerate(iter_video_frames(src, FPS)):
            if j >= start + frames:
                break
            if j >= start:
                if writer is None:
                    writer = VideoWriter(dst.with_suffix(".tmp.mp4"), FPS, frame.shape[1], frame.shape[0])
                writer.write(frame)
        if writer is None:
            raise InputError(f"--videos: {src} has no frame {start}")
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    dst.with_suffix(".tmp.mp4").replace(dst)


def _generate(task: str, settings: ProtocolSettings, bundle, item: SpeechItem, vocoder):
    from jam_flow.flow.sampler import SamplerSettings
    from jam_flow.inference import tasks

    sampler = SamplerSettings(nfe=settings.nfe, cfg=settings.cfg)
    seed = settings.seed + item.index
    common = {"settings": sampler, "seed": seed, "vocoder": vocoder}
    if task == "tts":
        return tasks.tts(bundle, item.text, item.ref_audio, item.ref_text, **common)
    if task == "text2av":
        return tasks.text2av(bundle, item.text, item.ref_audio, item.ref_text, **common)
    motion, _ = chunk_inputs(settings, item)
    return tasks.dub(
        bundle, motion, item.text, item.ref_audio, item.ref_text, ref_motion=item.ref_motion, **common
    )


def generate_items(
    task: str,
    settings: ProtocolSettings,
    bundle,
    ckpt: str,
    items: list[SpeechItem],
    cache: ClipCache,
    judges,
) -> tuple[int, int]:
    """Generate this rank's items that the cache lacks; returns (generated, reused)."""
    from jam_flow.data.audio import save_wav

    generated = 0
    vocoder = None
    for item in items:
        key = clip_key(settings, ckpt, {"task": task, **asdict(item)})
        if cache.done(item.id, key):
            continue
        vocoder = vocoder or judges.vocoder(bundle.mel)
        result = _generate(task, settings, bundle, item, vocoder)
        if not np.all(np.isfinite(result.wave)):
            raise InputError(f"{ckpt}: generated speech of {item.id} is not finite")
        d = cache.start(item.id)
        save_wav(d / "audio.wav", result.wave, result.sample_rate)
        if result.motion is not None and task == "text2av":
            np.save(d / "motion.npy", result.motion.astype(np.float32))
        cache.finish(item.id, key, {"seconds": round(result.wave.shape[0] / result.sample_rate, 3)})
        generated += 1
        log.info("%s: generated %s (%d done)", task, item.id, generated)
    return generated, len(items) - generated


def speech_metrics(
    settings: ProtocolSettings,
    metrics: tuple[str, ...],
    items: list[SpeechItem],
    cache: ClipCache,
    judges: Judges,
) -> dict[str, float]:
    """WER, SIM-o / spkSIM and (dubbing) LSE over this rank's items, reduced over all ranks."""
    import torch

    from jam_flow.data.audio import load_audio
    from jam_flow.eval.external import normalise_text
    from jam_flow.eval.metrics import LipSyncScores, SpeakerSimilarity

    wer = MeanWER().to(judges.device) if "wer" in metrics else None
    sim_key = "sim_o" if "sim_o" in metrics else "spk_sim" if "spk_sim" in metrics else None
    sim = SpeakerSimilarity().to(judges.device) if sim_key else None
    lse = LipSyncScores().to(judges.device) if ("lse_c" in metrics or "lse_d" in metrics) else None
    if lse is not None:
        from jam_flow.eval.syncnet import lse_from_files, parse_crop

        net, crop = judges.syncnet(), parse_crop(settings.lse_crop)
    for item in items:
        wav = cache.dir(item.id) / "audio.wav"
        if wer is not None or sim is not None:
            wave = load_audio(wav, 24000)
        if wer is not None:
            wer.update([judges.transcribe(wave, 24000)], [normalise_text(item.text)])
        if sim is not None:
            rate = judges.speaker().sample_rate
            ref = load_audio(item.sim_ref, rate)
            if item.frames is not None:  # a 20 s chunk: the same span of the clip's real speech
                ref = ref[int(item.start / FPS * rate) : int((item.start + item.frames) / FPS * rate)]
            sim.update(judges.embed(wave, 24000), judges.embed(ref, rate))
        if lse is not None:
            if item.frames is not None and item.video is not None and Path(item.video).is_file():
                item = SpeechItem(**{**asdict(item), "video": chunk_inputs(settings, item)[1]})
            if item.video is None:
                raise InputError(
                    "--videos: LSE in the dubbing protocol needs the original videos DIR/<id>.mp4"
                )
            if not Path(item.video).is_file():
                raise InputError(f"--videos: {item.video} does not exist (original video of clip {item.id})")
            s = lse_from_files(net, item.video, wav, crop)
            lse.update(torch.tensor([s.dist]), torch.tensor([s.conf]), torch.tensor([s.offset]))
    out: dict[str, float] = {}
    if lse is not None:
        res = lse.compute()
        out.update({k: res[k] for k in ("lse_c", "lse_d") if k in metrics})
    if wer is not None:
        out["wer"] = float(wer.compute())
    if sim is not None:
        out[sim_key] = float(sim.compute())
    return out


def run_speech_part(
    task: str,
    settings: ProtocolSettings,
    metrics: tuple[str, ...],
    bundle,
    ckpt: str,
    cache: ClipCache,
    judges: Judges,
    ranks: Ranks,
    items: list[SpeechItem],
) -> dict[str, Any]:
    """Generate + score ``task`` (tts, text2av or dub) for one checkpoint; returns metrics and clip counts."""
    return ranks.run(
        items,
        lambda mine: generate_items(task, settings, bundle, ckpt, mine, cache, judges),
        lambda mine: speech_metrics(settings, metrics, mine, cache, judges),
    )
