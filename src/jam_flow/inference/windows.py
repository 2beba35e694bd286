"""Any-length generation: cut a long input into windows, generate each with the previous window's end given.

Dimension legend: n mel frames (93.75 / s), c mel channels (100), m motion frames (25 / s), k keypoints (21),
dm mouth dims (12), s samples (24 kHz). Window bounds are in motion frames; masks: ``*_known`` True = given.

A model window holds at most ~30 s (the training clips). Longer inputs are cut into windows of at most
``window_s`` seconds:

* with a speech track (dubbing a video, audio -> motion) at its pauses: the cut point of each window is the
  quietest motion frame (smoothed frame energy) in the second half of the window;
* with a text (text -> speech + motion) at the script's sentence boundaries, packed by estimated duration.

Window bounds are multiples of 4 motion frames (0.16 s = 15 mel frames = 3840 samples), so the mel and motion
grids stay aligned across windows. Each window after the first is generated with the last ``context`` frames of
the previous window's output **given** in both streams (inpainting). The layouts this samples are ones training
draws (:data:`jam_flow.inference.tasks.TASK_LAYOUTS`, :func:`jam_flow.flow.masking.layout_rate`):

=============  ==================  =========================================================================
long task      first window        windows with context
=============  ==================  =========================================================================
dub            (generated, given)  (partial, given): an audio span hidden after a given prefix, motion given
               or (partial, given)
               with a reference
               and its own motion
audio2motion   (given, generated)  (given, partial): motion only, a span after a given prefix
text2av        (generated,         (partial, partial) with aligned spans: both streams hidden after the same
               generated) or       given prefix
               (partial, generated)
=============  ==================  =========================================================================

A training span covers ``frac_min``..1 (F5-TTS: 70-100 %) of a clip, so the given prefix (context or reference) is
kept within ``1 - frac_min`` of the window's timeline (:func:`max_given_frames`); the context is shortened when a
window is short. The text under a context is the previous window's text suffix in proportion to the context's
share of that window, cut at a word boundary (no word alignment exists; F5-TTS always sees the whole timeline's
text). The speech of each window is vocoded on its own and crossfaded into the output over the context (where both
hold the same mel); generated motion is smoothed across each seam (:func:`smooth_seams`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from jam_flow.data.mel import log_mel
from jam_flow.data.vocoder import Vocoder, load_vocoder
from jam_flow.errors import InputError
from jam_flow.flow.sampler import SamplerSettings
from jam_flow.inference.bundle import ModelBundle
from jam_flow.inference.cutting import (
    BLOCK,
    SEAM_FRAMES,
    Window,
    context_text,
    crossfade,
    cut_at_pauses,
    distribute_text,
    frame_energy_db,
    max_given_frames,
    pack_sentences,
    round_block,
    smooth_seams,
    split_sentences,
)
from jam_flow.inference.inputs import (
    AudioLike,
    ReferenceAudio,
    _encode_text,
    _generated_frames,
    _join_text,
    load_reference,
    reference_loudness,
)
from jam_flow.inference.outputs import VOCODER_CAUSES, check_finite
from jam_flow.inference.result import generation_record
from jam_flow.inference.tasks import _layout, _reference_motion, _run, _seed

__all__ = [
    "BLOCK",
    "SEAM_FRAMES",
    "Window",
    "LongResult",
    "frame_energy_db",
    "cut_at_pauses",
    "split_sentences",
    "distribute_text",
    "pack_sentences",
    "context_text",
    "max_given_frames",
    "smooth_seams",
    "dub_long",
    "audio2motion_long",
    "text2av_long",
]

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class LongResult:
    """The assembled output (CPU arrays); ``motion`` is raw LivePortrait ``exp``."""

    task: str
    sample_rate: int
    fps: int
    windows: list[Window]
    mel: torch.Tensor | None = None  # [n, c]
    wave: np.ndarray | None = None  # [s]
    motion: np.ndarray | None = None  # [m, k, 3]
    meta: dict[str, Any] = field(default_factory=dict)
    model_seconds: float = 0.0
    vocoder_seconds: float = 0.0


# ---------------------------------------------------------------------------------------------- helpers
class _Clock:
    def __init__(self) -> None:
        self.model = 0.0
        self.vocoder = 0.0


def _vocode(mel: torch.Tensor, vocoder: Vocoder, task: str, clock: _Clock) -> np.ndarray:
    t0 = time.perf_counter()
    wave = vocoder.decode(mel).numpy().astype(np.float32)
    check_finite(wave, "vocoded waveform (audio stream)", task, VOCODER_CAUSES)
    clock.vocoder += time.perf_counter() - t0
    return wave


def _timed_run(
    bundle: ModelBundle,
    task: str,
    *,
    text_ids: list[int] | None,
    mel: torch.Tensor,
    audio_from: int | None,
    mouth: torch.Tensor,
    motion_from: int | None,
    rest: torch.Tensor | None,
    settings: SamplerSettings,
    seed: int,
    clock: _Clock,
):
    """Sample one window: ``mel [n, c]`` (natural log) given before frame ``audio_from`` and generated from it
    (None: all given), ``mouth [m, dm]`` (model space) likewise from ``motion_from``; ``rest`` None drops e_rest.
    The timeline is laid out by the ``edit`` layout (given outside a span), which covers every window variant."""
    n, m = mel.shape[0], mouth.shape[0]
    layout = _layout(
        bundle,
        "edit",
        text=text_ids,
        mel=mel,
        mouth=mouth,
        rest=rest,
        audio_span=(audio_from, n) if audio_from is not None else None,
        motion_span=(motion_from, m) if motion_from is not None else None,
    )
    t0 = time.perf_counter()
    out = _run(bundle, layout, settings, seed, task)
    clock.model += time.perf_counter() - t0
    return out


def _context_frames(context_s: float, fps: int) -> int:
    if not math.isfinite(context_s) or context_s < 0:
        raise InputError(f"--context-s: expected a number >= 0, got {context_s}")
    return round_block(context_s * fps)


def _window_frames(window_s: float, fps: int) -> int:
    if not math.isfinite(window_s) or not 1.0 <= window_s <= 28.0:
        raise InputError(f"--window-s: expected 1-28 s (a model window holds at most 30 s), got {window_s}")
    return round_block(window_s * fps)


def _with_context(bounds: list[tuple[int, int]], context: int) -> list[tuple[int, int, int]]:
    """``(start, end, context)`` per window: the context is at most the previous window and the trained share."""
    out = []
    for i, (a, b) in enumerate(bounds):
        c = 0 if i == 0 else min(context, a - bounds[i - 1][0], max_given_frames(b - a))
        out.append((a, b, round_block(c)))
    return out


def _reference(
    bundle: ModelBundle, ref_audio: AudioLike | None, ref_text: str | None
) -> ReferenceAudio | None:
    if ref_text is not None and not ref_text.strip():
        raise InputError("--ref-text: the reference text is empty (leave it out instead)")
    if ref_audio is None:
        if ref_text is not None:
            raise InputError("--ref-text: given without --ref-audio")
        return None
    ref = load_reference(ref_audio, bundle, block=bundle.clock.block_samples)
    if ref_text is not None:
        _encode_text(bundle, ref_text, where="--ref-text")
    return ref


def _texts(bundle: ModelBundle, prefix: str | None, text: str) -> list[int]:
    _encode_text(bundle, text, where="--text")
    return _encode_text(bundle, _join_text(prefix, text), where="--text")


def _progress(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


def _span(bundle: ModelBundle, win: Window, i: int, ref: ReferenceAudio | None, mel_out: torch.Tensor):
    """Window ``i``'s frames ``(a0, m_win, n_ref, m_ref, n_ctx, off, given)``: from ``a0`` (its context's start),
    ``m_win`` motion frames; the reference's ``n_ref`` mel / ``m_ref`` motion frames lead the first window only;
    ``n_ctx`` mel frames of context from mel frame ``off``; ``given [n_ref + mel_frames(m_win), c]``: the
    reference, then the mel already made under the context."""
    s, f = bundle.mel, bundle.motion
    a0 = win.start - win.context
    m_win = win.end - a0
    n_ref = ref.mel.shape[0] if (ref is not None and i == 0) else 0
    m_ref = bundle.clock.motion_frames(n_ref) if n_ref else 0
    n_ctx = bundle.clock.mel_frames(win.context) if win.context else 0
    given = torch.zeros(n_ref + bundle.clock.mel_frames(m_win), s.n_mels)
    if n_ref:
        given[:n_ref] = ref.mel
    off = a0 * s.sample_rate // (s.hop_length * f.fps)  # a0 is a whole block: an exact mel frame
    if n_ctx:
        given[n_ref : n_ref + n_ctx] = mel_out[off : off + n_ctx]
    return a0, m_win, n_ref, m_ref, n_ctx, off, given


def _prefix(windows: list[Window], i: int, ref_text: str | None, n_ref: int) -> str | None:
    """The text spoken before window ``i``'s own: the reference's, or the previous window's under the context."""
    if i == 0:
        return ref_text if n_ref else None
    prev = windows[i - 1]
    return context_text(prev.text, windows[i].context / max(1, prev.end - prev.start))


def _record(
    result: LongResult, task: str, seed: int, settings: SamplerSettings, used, **sources: Any
) -> None:
    result.meta = generation_record(task, seed, settings, used, **sources)
    result.meta["windows"] = [w.seconds(result.fps) for w in result.windows]


# ---------------------------------------------------------------------------------------------- the tasks
def dub_long(
    bundle: ModelBundle,
    exp: np.ndarray,
    text: str,
    *,
    pause_wave: np.ndarray | None = None,
    ref_audio: AudioLike | None = None,
    ref_text: str | None = None,
    ref_exp: np.ndarray | None = None,
    window_s: float = 20.0,
    context_s: float = 2.0,
    settings: SamplerSettings = SamplerSettings(),
    seed: int | None = None,
    vocoder: Vocoder | None = None,
    progress: Progress | None = None,
) -> LongResult:
    """Speech timed to a motion track ``exp [m, k, 3]`` of any length (dubbing), in windows.

    ``pause_wave`` (24 kHz, the original speech under the motion) places the cuts at its pauses and weights how
    much of ``text`` each window speaks; without it windows have the full length and text follows window length.
    A reference voice comes with its own motion under it (the trained layout, :mod:`jam_flow.flow.layouts`):
    ``ref_exp [>= m_ref, k, 3]`` (e.g. the video's motion under its own speech), else generated from the
    reference audio (``audio2motion``, as ``tasks.dub`` does)."""
    s, f = bundle.mel, bundle.motion
    seed = _seed(seed)
    m_total = exp.shape[0]
    hop = s.sample_rate // f.fps
    energy = frame_energy_db(pause_wave, s.sample_rate, f.fps, m_total) if pause_wave is not None else None
    bounds = cut_at_pauses(energy, m_total, _window_frames(window_s, f.fps))
    if energy is not None:  # voiced time per window (frames within 30 dB of the loudest)
        voiced = energy > energy.max() - 30.0
        weights = [float(voiced[a:b].sum()) + 1e-3 * (b - a) for a, b in bounds]
    else:
        weights = [float(b - a) for a, b in bounds]
    sentences = split_sentences(text or "")
    if not sentences:
        raise InputError("--text: the text is empty")
    texts = distribute_text(sentences, weights)
    ref = _reference(bundle, ref_audio, ref_text)
    windows = [
        Window(a, b, c, t)
        for (a, b, c), t in zip(_with_context(bounds, _context_frames(context_s, f.fps)), texts, strict=True)
    ]
    voc = vocoder if vocoder is not None else load_vocoder(None, s)
    mouth_all, rest_all = bundle.normalise_motion(exp)
    ref_motion, ref_motion_source = None, None
    if ref is not None:
        m_ref = int(bundle.clock.motion_frames(ref.mel.shape[0]))
        if ref_exp is not None:
            idx = np.minimum(np.arange(m_ref), ref_exp.shape[0] - 1)
            ref_motion = bundle.normalise_motion(np.asarray(ref_exp, dtype=np.float32)[idx])
            ref_motion_source = "given with the reference"
        else:
            mouth_r, rest_r, ref_motion_source = _reference_motion(
                bundle, ref, None, rest_all, settings, seed
            )
            ref_motion = (mouth_r, rest_r)
    mel_out = torch.zeros(bundle.clock.mel_frames(m_total), s.n_mels)
    wave_out = np.zeros(m_total * hop, dtype=np.float32)
    clock, used = _Clock(), None
    for i, win in enumerate(windows):
        _progress(progress, "windows", i, len(windows))
        a0, m_win, n_ref, m_ref, n_ctx, off, given = _span(bundle, win, i, ref, mel_out)
        prefix = _prefix(windows, i, ref_text, n_ref)
        mouth = torch.zeros(m_ref + m_win, f.mouth_dim)
        rest = torch.zeros(m_ref + m_win, f.rest_dim)
        mouth[m_ref:], rest[m_ref:] = mouth_all[a0 : win.end], rest_all[a0 : win.end]
        if m_ref:  # the reference's own motion under the reference voice
            mouth[:m_ref], rest[:m_ref] = ref_motion
        mel, _, used = _timed_run(
            bundle,
            "dub",
            text_ids=_texts(bundle, prefix, win.text),
            mel=given,
            audio_from=n_ref + n_ctx,
            mouth=mouth,
            motion_from=None,
            rest=rest,
            settings=settings,
            seed=seed + i,
            clock=clock,
        )
        mel = mel[n_ref:]
        mel_out[off + n_ctx : off + mel.shape[0]] = mel[n_ctx:]
        piece = _vocode(mel, voc, "dub", clock)
        crossfade(wave_out, piece, a0 * hop, win.context * hop)
    _progress(progress, "windows", len(windows), len(windows))
    wave_out = reference_loudness(wave_out, ref)
    result = LongResult("dub", s.sample_rate, f.fps, windows, mel=mel_out, wave=wave_out, motion=exp)
    result.model_seconds, result.vocoder_seconds = clock.model, clock.vocoder
    _record(
        result,
        "dub",
        seed,
        settings,
        used,
        text=text,
        ref_audio=ref.source if ref else None,
        ref_text=ref_text,
        ref_motion=ref_motion_source,
    )
    return result


def audio2motion_long(
    bundle: ModelBundle,
    wave: np.ndarray,
    *,
    rest_exp: np.ndarray | None = None,
    window_s: float = 20.0,
    context_s: float = 2.0,
    settings: SamplerSettings = SamplerSettings(),
    seed: int | None = None,
    progress: Progress | None = None,
) -> LongResult:
    """Lip motion for speech ``wave [s]`` (24 kHz) of any length, in windows cut at its pauses.

    ``rest_exp [m, k, 3]`` (e.g. a video's own motion) gives the e_rest track (kept exactly in the output);
    without it e_rest is dropped and the output's other keypoints are the neutral expression."""
    s, f = bundle.mel, bundle.motion
    seed = _seed(seed)
    if wave.size < s.n_fft:
        raise InputError("--audio: the speech is too short (less than 0.05 s)")
    mel_all = log_mel(wave, s)
    m_total = bundle.clock.motion_frames(mel_all.shape[0])
    energy = frame_energy_db(wave, s.sample_rate, f.fps, m_total)
    bounds = cut_at_pauses(energy, m_total, _window_frames(window_s, f.fps))
    windows = [Window(a, b, c) for a, b, c in _with_context(bounds, _context_frames(context_s, f.fps))]
    rest_all = None
    if rest_exp is not None:
        rest_exp = _fit(rest_exp, m_total)
        _, rest_all = bundle.normalise_motion(rest_exp)
    mouth_out = torch.zeros(m_total, f.mouth_dim)
    clock, used = _Clock(), None
    for i, win in enumerate(windows):
        _progress(progress, "windows", i, len(windows))
        a0 = win.start - win.context
        off = a0 * s.sample_rate // (s.hop_length * f.fps)
        n = bundle.clock.mel_frames(win.end - a0)
        mel = mel_all[off : off + n]
        m_win = bundle.clock.motion_frames(mel.shape[0])
        mouth = torch.zeros(m_win, f.mouth_dim)
        mouth[: win.context] = mouth_out[a0 : win.start]
        _, mouth_gen, used = _timed_run(
            bundle,
            "audio2motion",
            text_ids=None,
            mel=mel,
            audio_from=None,
            mouth=mouth,
            motion_from=win.context,
            rest=rest_all[a0 : a0 + m_win] if rest_all is not None else None,
            settings=settings,
            seed=seed + i,
            clock=clock,
        )
        mouth_out[win.start : a0 + m_win] = mouth_gen[win.context :]
    _progress(progress, "windows", len(windows), len(windows))
    exp = bundle.denormalise_motion(mouth_out, rest_all).numpy()
    exp = _smooth_mouth(exp, [w.start for w in windows[1:]], f.mouth_indices)
    if rest_exp is not None:  # the given e_rest comes back exactly
        rest_idx = [k for k in range(exp.shape[1]) if k not in f.mouth_indices]
        exp[:, rest_idx] = rest_exp[:, rest_idx]
    result = LongResult("audio2motion", s.sample_rate, f.fps, windows, mel=mel_all, wave=wave, motion=exp)
    result.model_seconds = clock.model
    _record(result, "audio2motion", seed, settings, used)
    return result


def text2av_long(
    bundle: ModelBundle,
    text: str,
    *,
    ref_audio: AudioLike | None = None,
    ref_text: str | None = None,
    window_s: float = 20.0,
    context_s: float = 2.0,
    settings: SamplerSettings = SamplerSettings(),
    seed: int | None = None,
    vocoder: Vocoder | None = None,
    progress: Progress | None = None,
) -> LongResult:
    """Speech + lip motion for a text of any length, in windows of whole sentences (estimated durations)."""
    s, f = bundle.mel, bundle.motion
    seed = _seed(seed)
    ref = _reference(bundle, ref_audio, ref_text)
    window_frames = _window_frames(window_s, f.fps)
    sentences = split_sentences(text or "")
    if not sentences:
        raise InputError("--text: the text is empty")

    def gen_frames(piece: str) -> int:  # mel frames, rounded up to whole blocks
        n = _generated_frames(bundle, piece, ref, ref_text, None)
        block = bundle.clock.mel_frames(BLOCK)
        return -(-n // block) * block

    def seconds(piece: str) -> float:
        try:
            return gen_frames(piece) / s.frame_rate
        except InputError:  # over the 30 s limit: certainly longer than a window
            return float("inf")

    texts = pack_sentences(sentences, seconds, window_frames / f.fps)
    context = _context_frames(context_s, f.fps)
    windows, start = [], 0
    for i, piece in enumerate(texts):
        m_gen = bundle.clock.motion_frames(gen_frames(piece))
        c = (
            0
            if i == 0
            else round_block(min(context, windows[-1].end - windows[-1].start, max_given_frames(m_gen)))
        )
        windows.append(Window(start, start + m_gen, c, piece))
        start += m_gen
    m_total = start
    voc = vocoder if vocoder is not None else load_vocoder(None, s)
    hop = s.sample_rate // f.fps
    mel_out = torch.zeros(bundle.clock.mel_frames(m_total), s.n_mels)
    mouth_out = torch.zeros(m_total, f.mouth_dim)
    wave_out = np.zeros(m_total * hop, dtype=np.float32)
    clock, used = _Clock(), None
    for i, win in enumerate(windows):
        _progress(progress, "windows", i, len(windows))
        a0, m_win, n_ref, m_ref, n_ctx, off, given = _span(bundle, win, i, ref, mel_out)
        m = bundle.clock.motion_frames(given.shape[0])
        mouth = torch.zeros(m, f.mouth_dim)
        if win.context:  # the previous window's motion under the context; under a reference it is generated
            mouth[m_ref : m_ref + win.context] = mouth_out[a0 : win.start]
        prefix = _prefix(windows, i, ref_text, n_ref)
        mel, mouth_gen, used = _timed_run(
            bundle,
            "text2av",
            text_ids=_texts(bundle, prefix, win.text),
            mel=given,
            audio_from=n_ref + n_ctx,
            mouth=mouth,
            motion_from=m_ref + win.context if win.context else 0,
            rest=None,
            settings=settings,
            seed=seed + i,
            clock=clock,
        )
        mel, mouth_gen = mel[n_ref:], mouth_gen[m_ref:]
        mel_out[off + n_ctx : off + mel.shape[0]] = mel[n_ctx:]
        mouth_out[win.start : win.end] = mouth_gen[win.context : m_win]
        crossfade(wave_out, _vocode(mel, voc, "text2av", clock), a0 * hop, win.context * hop)
    _progress(progress, "windows", len(windows), len(windows))
    wave_out = reference_loudness(wave_out, ref)
    exp = bundle.denormalise_motion(mouth_out).numpy()
    exp = _smooth_mouth(exp, [w.start for w in windows[1:]], f.mouth_indices)
    result = LongResult("text2av", s.sample_rate, f.fps, windows, mel=mel_out, wave=wave_out, motion=exp)
    result.model_seconds, result.vocoder_seconds = clock.model, clock.vocoder
    _record(
        result,
        "text2av",
        seed,
        settings,
        used,
        text=text,
        ref_audio=ref.source if ref else None,
        ref_text=ref_text,
    )
    return result


def _smooth_mouth(exp: np.ndarray, seams: list[int], mouth: tuple[int, ...]) -> np.ndarray:
    idx = list(mouth)
    exp = exp.copy()
    exp[:, idx] = smooth_seams(exp[:, idx], seams)
    return exp


def _fit(track: np.ndarray, m: int) -> np.ndarray:
    """``track [m', ...]`` cut or extended (last frame repeated) to ``m`` frames."""
    if track.shape[0] >= m:
        return track[:m]
    return np.concatenate([track, np.repeat(track[-1:], m - track.shape[0], axis=0)])
