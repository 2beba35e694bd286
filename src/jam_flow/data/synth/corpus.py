"""Build the offline synthetic corpus (dataset format v1): eSpeak NG speech + procedural lip motion.

Dimension legend: s samples (24 kHz), n mel frames, m motion frames (25 fps), p phonemes.

Clip ``i`` is fully determined by ``(seed, i)`` and the ``SynthConfig`` options: its plan (speaker, rate, pitch, sentences) comes from
``np.random.default_rng([seed, i, attempt])`` and eSpeak NG runs in a fresh process per attempt (its output is
reproducible only as the first utterance of a process), so the same seed writes the same bytes whatever the
number of workers. A synthesis outside 2-8 s is rejected and redrawn with ``attempt + 1``.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jam_flow.data.audio import resample
from jam_flow.data.format import ClipRecord, write_clip, write_dataset
from jam_flow.data.mel import log_mel
from jam_flow.data.synth.espeak import synthesize
from jam_flow.data.synth.motion import clip_motion, speaker_style
from jam_flow.data.synth.visemes import articulation_track, segments_from_phonemes
from jam_flow.data.synth.world import WordWorld
from jam_flow.data.text import Vocab
from jam_flow.errors import InputError
from jam_flow.features import MelSettings, MotionSettings, num_motion_frames

__all__ = [
    "SPEAKERS",
    "SynthConfig",
    "ClipPlan",
    "plan_clip",
    "split_for_index",
    "make_clip",
    "build_corpus",
    "load_sentences",
]

# eSpeak NG voices and variants used as speakers (fixed order: part of the corpus definition)
SPEAKERS = (
    "en-us",
    "en",
    "en-us+f3",
    "en+m3",
    "en-us+m7",
    "en+f5",
    "en-us+klatt",
    "en+steph",
    "en-us+david",
    "en+f2",
    "en-us+m1",
    "en+m5",
)
MIN_SECONDS, MAX_SECONDS = 2.0, 8.0
MAX_ATTEMPTS = 25


MAX_SENTENCES_PER_CLIP = 4
SINGLE_SENTENCE_MIN_SECONDS = 0.3  # one short sentence a clip: a 2-word sentence is under a second


@dataclass(frozen=True)
class SynthConfig:
    """Corpus settings. The defaults are the bundled corpus (12 voices, random rate and pitch, 1-4 sentences a
    clip); ``voices``, a fixed ``rate`` / ``pitch`` and ``sentences_per_clip`` narrow it (one voice, one
    sentence a clip: the corpus a small model learns to speak from)."""

    seed: int = 0
    min_seconds: float = MIN_SECONDS
    max_seconds: float = MAX_SECONDS
    mel: MelSettings = MelSettings()
    motion: MotionSettings = MotionSettings()
    voices: tuple[str, ...] = SPEAKERS
    rate: int | None = None  # words per minute; None: drawn per clip in [140, 210]
    pitch: int | None = None  # 0-100; None: drawn per clip in [25, 75]
    sentences_per_clip: int = MAX_SENTENCES_PER_CLIP  # at most


@dataclass(frozen=True)
class ClipPlan:
    index: int
    attempt: int
    speaker: str
    rate: int  # words per minute
    pitch: int  # 0-100
    text: str


def split_for_index(i: int) -> str:
    """Fixed held-out split: clip 1, 21, 41, ... -> val; 2, 22, 42, ... -> test (5 % each); the rest train."""
    return {1: "val", 2: "test"}.get(i % 20, "train")


def _estimate_seconds(text: str, rate: int) -> float:
    return len(text) * 10.0 / rate + 0.2  # about 6 characters per word at ``rate`` words per minute


Sentences = list[str] | WordWorld


def plan_clip(
    seed: int, index: int, attempt: int, sentences: Sentences, cfg: SynthConfig = SynthConfig()
) -> ClipPlan:
    """The clip's speaker, rate, pitch and text. ``sentences``: a list (drawn uniformly), or a ``WordWorld``
    (training clips draw kept combinations, validation and test clips held-out ones)."""
    rng = np.random.default_rng([seed, index, attempt])
    speaker = cfg.voices[int(rng.integers(len(cfg.voices)))]
    rate = int(
        rng.integers(140, 211)
    )  # always drawn, so that the draws after them do not depend on the options
    pitch = int(rng.integers(25, 76))
    rate = rate if cfg.rate is None else cfg.rate
    pitch = pitch if cfg.pitch is None else cfg.pitch
    target = rng.uniform(cfg.min_seconds + 0.5, cfg.max_seconds - 1.0)
    if isinstance(sentences, WordWorld):
        heldout = split_for_index(index) != "train"

        def draw() -> str:
            return sentences.sentence(rng, heldout)
    else:

        def draw() -> str:
            return sentences[int(rng.integers(len(sentences)))]

    parts = [draw()]
    while _estimate_seconds(" ".join(parts), rate) < target and len(parts) < cfg.sentences_per_clip:
        candidate = parts + [draw()]
        if _estimate_seconds(" ".join(candidate), rate) > cfg.max_seconds - 0.4:
            break
        parts = candidate
    return ClipPlan(index, attempt, speaker, rate, pitch, " ".join(parts))


def make_clip(out: Path, index: int, sentences: Sentences, cfg: SynthConfig) -> ClipRecord:
    """Synthesise, animate and write clip ``index``; returns its manifest record."""
    for attempt in range(MAX_ATTEMPTS):
        plan = plan_clip(cfg.seed, index, attempt, sentences, cfg)
        speech = synthesize(plan.text, plan.speaker, plan.rate, plan.pitch)
        seconds = len(speech.samples) * cfg.mel.sample_rate // speech.sample_rate / cfg.mel.sample_rate
        if cfg.min_seconds <= seconds <= cfg.max_seconds and speech.phonemes:
            break
    else:
        raise InputError(
            f"clip {index}: no sentence combination gave {cfg.min_seconds}-{cfg.max_seconds} s of "
            f"speech in {MAX_ATTEMPTS} attempts (are the sentences very long or very short?)"
        )
    wave = resample(speech.samples.astype(np.float32) / 32768.0, speech.sample_rate, cfg.mel.sample_rate)
    pcm = np.clip(np.round(wave * 32768.0), -32768, 32767).astype(np.int16)
    wave = pcm.astype(np.float32) / 32768.0  # exactly what reading the wav back gives
    mel = log_mel(wave, cfg.mel).numpy()
    duration = len(pcm) / cfg.mel.sample_rate
    n_motion = num_motion_frames(duration, cfg.motion.fps)

    names = [p.name for p in speech.phonemes]
    starts = np.array([p.sample for p in speech.phonemes], np.float64) / speech.sample_rate
    phonemes, segments = segments_from_phonemes(names, starts, len(speech.samples) / speech.sample_rate)
    track = articulation_track(segments, np.arange(n_motion) / cfg.motion.fps)
    rng = np.random.default_rng([cfg.seed, index, plan.attempt, 1])
    arrays = clip_motion(rng, speaker_style(cfg.seed, plan.speaker), track, segments, cfg.motion.fps)
    arrays["mel"] = mel
    arrays["phonemes"] = phonemes.astype(np.float32)
    arrays["phoneme_names"] = np.array(names, dtype="<U8")
    arrays["articulation"] = track.astype(np.float32)
    record = ClipRecord(
        id=f"synth_{index:06d}",
        split=split_for_index(index),
        speaker=plan.speaker,
        duration=duration,
        n_mel=mel.shape[0],
        n_motion=n_motion,
        text=plan.text,
        features="",
    )
    return write_clip(out, record, arrays, audio=pcm, sample_rate=cfg.mel.sample_rate)


def load_sentences(path: str | Path | None) -> list[str]:
    """One sentence a line (blank lines skipped); every character must be in the default vocabulary."""
    from importlib import resources

    if path is None:
        source = resources.files("jam_flow") / "assets" / "sentences.txt"
        text, name = source.read_text(encoding="utf-8"), "jam_flow/assets/sentences.txt"
    else:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"--sentences: {path} does not exist")
        try:
            text, name = path.read_text(encoding="utf-8"), str(path)
        except UnicodeDecodeError as err:
            raise InputError(
                f"--sentences: {path} is not UTF-8 text ({err.reason} at byte {err.start})"
            ) from err
        except OSError as err:
            raise InputError(f"--sentences: cannot read {path} ({err.strerror})") from err
    vocab = Vocab.default()
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = " ".join(line.split())
        if line:
            vocab.encode(line, where=f"{name}:{lineno}")
            out.append(line)
    if not out:
        raise InputError(f"--sentences: {name} holds no sentence")
    return out


_WORKER: dict = {}


def _init_worker(out: str, sentences: Sentences, cfg: SynthConfig) -> None:
    torch.set_num_threads(1)
    _WORKER.update(out=Path(out), sentences=sentences, cfg=cfg)


def _work(index: int) -> ClipRecord:
    return make_clip(_WORKER["out"], index, _WORKER["sentences"], _WORKER["cfg"])


def build_corpus(
    out: str | Path,
    n_clips: int,
    seed: int = 0,
    sentences: Sentences | None = None,
    workers: int | None = None,
    log=print,
    cfg: SynthConfig | None = None,
) -> list[ClipRecord]:
    """Write ``n_clips`` clips plus dataset.json, manifest.jsonl and stats.json into ``out``. ``cfg`` (its
    ``seed`` is replaced by ``seed``) narrows the corpus; the default is the bundled one."""
    out = Path(out)
    sentences = load_sentences(None) if sentences is None else sentences
    cfg = dataclasses.replace(cfg or SynthConfig(), seed=seed)
    workers = max(1, min(workers or os.cpu_count() or 1, n_clips))
    (out / "clips").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if workers == 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the same arithmetic as a worker process: bytes do not depend on --workers
        try:
            records = [make_clip(out, i, sentences, cfg) for i in range(n_clips)]
        finally:
            torch.set_num_threads(threads)
    else:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(str(out), sentences, cfg)) as pool:
            records = []
            for k, rec in enumerate(pool.imap(_work, range(n_clips), chunksize=1), start=1):
                records.append(rec)
                if log and (k % 100 == 0 or k == n_clips):
                    log(f"synth-corpus: {k}/{n_clips} clips ({time.perf_counter() - start:.1f} s)")
    write_dataset(out, records, cfg.mel, cfg.motion, "synth")
    return records
