"""The JAM-Flow tasks (paper §5.2-5.3, cases 1-4), one function per ``jam-flow generate --task``.

Dimension legend: n mel frames (93.75 / s), c mel channels (100), m motion frames (25 / s), k keypoints (21),
dm mouth dims (12), dr rest dims (51), s samples (24 kHz).

Every task lays out one timeline, marks per stream which frames are *given* (kept exactly) and which are
*generated* (:func:`jam_flow.flow.layouts.task_layout`, the one owner of the task layouts, on a batch of one), and
calls :func:`jam_flow.flow.sampler.sample` once:

=============  =======================================  =============================================
task           given                                    generated
=============  =======================================  =============================================
tts            reference mel (+ text)                   mel after the reference (audio branch only)
text2av        text [+ reference mel]                   mel + mouth motion (cases 1-2)
audio2motion   the whole mel [+ e_rest, + text]         mouth motion
dub            the whole motion + text [+ reference]    mel timed to the motion (case 3)
motion2audio   the whole motion [+ reference]           mel, text dropped (case 4)
edit           a clip outside [start, end)              that span, in audio, motion or both
=============  =======================================  =============================================

Stream layouts (what the network sees: ``given`` = every valid frame given, time 1; ``partial`` = a generated
region next to given frames; ``generated`` = no frame given; ``absent`` = the audio branch alone). Training draws
each of them with a stated rate (:func:`jam_flow.flow.masking.layout_rate`,
:data:`jam_flow.flow.layouts.TASK_LAYOUTS`):

=============  ==========================================  =====================================================
task           (audio, motion)                             training scenario that draws it
=============  ==========================================  =====================================================
tts            (partial, absent)                           audio span hidden, joint attention off (joint config)
text2av        (generated, generated); with a reference    both hidden, ``p_whole_audio`` x ``p_whole_motion``;
               (partial, generated) (paper case 2)         with a reference audio span x ``p_whole_motion``
audio2motion   (given, generated)                          motion only, ``p_whole_motion``
dub            (generated, given); with a reference        audio only, ``p_whole_audio``; with a reference an
motion2audio   (partial, given): the reference's own       audio span (``1 - p_whole_audio``)
               motion (``ref_motion``, else generated
               from its audio) is given under it
edit           (partial, given) / (given, partial) /       audio only / motion only / both with aligned spans;
               (partial, partial) / (partial, absent)      audio alone as tts
=============  ==========================================  =====================================================

Timeline and durations:
* A reference voice occupies the start of the timeline (F5-TTS). When motion is on the timeline, the reference wave
  is trimmed at its end to a whole number of 0.16 s blocks (3840 samples = 15 mel frames = 4 motion frames) so the
  generated part starts on a motion frame boundary; its frames are ``nw // hop`` (F5's ``ref_audio_len``).
* Given motion of ``m`` frames fixes the mel length exactly: ``n = ceil(m * sr / (hop * fps))`` (``ceil(15 m / 4)``,
  :meth:`jam_flow.features.FrameClock.mel_frames`: the mel that covers the ``m`` frames). Otherwise
  ``m = audio_to_motion_frame(n - 1) + 1`` (:meth:`~jam_flow.features.FrameClock.motion_frames`).
* Generated speech length, when no motion fixes it: ``--duration`` (seconds of *generated* speech, unlike F5's
  ``fix_duration`` which includes the reference); else F5-TTS's rule ``ref_len / ref_text_bytes * gen_text_bytes``
  (UTF-8 bytes, ``speed`` forced to 0.3 below 10 bytes, as F5 does); else, with no reference text,
  :data:`CHARS_PER_SECOND` UTF-8 bytes per second (a typical read-speech rate, LibriTTS-like). Estimates are raised
  to :data:`MIN_SECONDS`; an estimate over :data:`MAX_SECONDS` is refused.
* Reference audio of any rate / channel count is resampled to 24 kHz and downmixed; F5's loudness rule applies:
  below ``TARGET_RMS = 0.1`` it is scaled up, and the output is scaled back by ``rms / 0.1``.
* e_rest: a given track (dub / motion2audio: the clip's own; audio2motion / edit: ``--motion``) is fed with
  ``drop_rest = False``. Without one, ``drop_rest = True`` (trained with p = 0.8) and the written motion's
  non-mouth keypoints are the neutral expression (the training-set mean).

Nothing is written to disk unless :meth:`GenerationResult.save` is called (:mod:`jam_flow.inference.result`).
"""

from __future__ import annotations

import logging
import math
import secrets
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from jam_flow.data.mel import log_mel
from jam_flow.data.vocoder import Vocoder, load_vocoder
from jam_flow.errors import InputError
from jam_flow.flow.layouts import TASK_LAYOUTS, Given, TaskLayout, task_layout
from jam_flow.flow.sampler import SamplerSettings, sample
from jam_flow.inference.bundle import ModelBundle
from jam_flow.inference.inputs import (
    CHARS_PER_SECOND,
    MAX_REF_SECONDS,
    MAX_SECONDS,
    MAX_TEXT_CHARS,
    MIN_SECONDS,
    SILENCE_RMS,
    TARGET_RMS,
    TASKS,
    AudioLike,
    MotionInput,
    ReferenceAudio,
    _encode_text,
    _fit_frames,
    _generated_frames,
    _join_text,
    _read_wave,
    _rms,
    load_motion,
    load_reference,
    reference_loudness,
)
from jam_flow.inference.outputs import VOCODER_CAUSES, check_finite
from jam_flow.inference.result import GenerationResult, Used, generation_record, new_result

__all__ = [
    "TASKS",
    "TASK_LAYOUTS",
    "TARGET_RMS",
    "SILENCE_RMS",
    "CHARS_PER_SECOND",
    "MAX_TEXT_CHARS",
    "MIN_SECONDS",
    "MAX_SECONDS",
    "MAX_REF_SECONDS",
    "GenerationResult",
    "ReferenceAudio",
    "MotionInput",
    "load_motion",
    "load_reference",
    "tts",
    "text2av",
    "audio2motion",
    "dub",
    "motion2audio",
    "edit",
]

log = logging.getLogger(__name__)


def _with_mouth(
    original: np.ndarray, generated: np.ndarray, bundle: ModelBundle, frames: np.ndarray
) -> np.ndarray:
    """``original [m, k, 3]`` with the mouth keypoints of ``frames`` (bool [m]) taken from ``generated``."""
    out = original.copy()
    mouth = list(bundle.motion.mouth_indices)
    out[np.ix_(frames, mouth)] = generated[np.ix_(frames, mouth)]
    return out


def _splice(
    original: np.ndarray, generated: np.ndarray, s0: int, s1: int, sample_rate: int, fade_s: float = 0.01
) -> np.ndarray:
    """``original`` with samples ``[s0, s1)`` from ``generated`` (same timeline), 10 ms linear cross-fades."""
    out = original.astype(np.float32).copy()
    s1 = min(s1, out.shape[0], generated.shape[0])
    if s1 <= s0:
        return out
    out[s0:s1] = generated[s0:s1]
    fade = int(fade_s * sample_rate)
    for edge, inward in ((s0, 1), (s1, -1)):
        lo, hi = (edge, min(edge + fade, s1)) if inward > 0 else (max(edge - fade, s0), edge)
        if hi <= lo or (inward > 0 and edge == 0) or (inward < 0 and edge >= original.shape[0]):
            continue
        ramp = np.linspace(0.0, 1.0, hi - lo, dtype=np.float32)
        if inward < 0:
            ramp = ramp[::-1]
        out[lo:hi] = ramp * generated[lo:hi] + (1.0 - ramp) * original[lo:hi]
    return out


# the shared core --------------------------------------------------------------------------------------------------
def _layout(
    bundle: ModelBundle,
    task: str,
    *,
    text: list[int] | None = None,
    mel: torch.Tensor | None = None,
    mouth: torch.Tensor | None = None,
    rest: torch.Tensor | None = None,
    ref_mouth: torch.Tensor | None = None,
    ref_rest: torch.Tensor | None = None,
    gen_frames: int | None = None,
    audio_span: tuple[int, int] | None = None,
    motion_span: tuple[int, int] | None = None,
) -> TaskLayout:
    """The task's layout for one clip (a batch of one): ``mel`` natural-log ``[n, c]``, ``mouth`` / ``rest``
    model space ``[m, dm]`` / ``[m, dr]``, ``text`` token ids (None: dropped)."""
    dev = bundle.device

    def one(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x[None].to(dev).float()

    def span(s: tuple[int, int] | None) -> torch.Tensor | None:
        return None if s is None else torch.tensor([s], dtype=torch.long, device=dev)

    given = Given(
        text=torch.tensor([text], dtype=torch.long, device=dev) if text is not None else None,
        mel=bundle.mel_to_model(one(mel)) if mel is not None else None,
        mouth=one(mouth),
        rest=one(rest),
        ref_mouth=one(ref_mouth),
        ref_rest=one(ref_rest),
    )
    frames = torch.tensor([gen_frames], device=dev) if gen_frames is not None else None
    return task_layout(
        task,
        given,
        bundle.mel,
        bundle.motion,
        gen_frames=frames,
        audio_span=span(audio_span),
        motion_span=span(motion_span),
    )


def _run(
    bundle: ModelBundle, layout: TaskLayout, settings: SamplerSettings, seed: int, task: str
) -> tuple[torch.Tensor, torch.Tensor | None, Used]:
    """Sample once; returns (natural-log mel [n, c], model-space mouth [m, dm] or None, what the sampler did)."""
    cond = layout.cond
    if cond.has_motion and not bundle.has_motion:
        raise InputError(
            f"--task {task}: {bundle.source} holds an audio-only (stage-1) model; only --task tts runs "
            f"on it (use a stage-2 JointDiT checkpoint)"
        )
    n = cond.audio_cond.shape[1]
    if not cond.drop_text and cond.text.shape[1] >= n:
        raise InputError(
            f"--text: {cond.text.shape[1]} characters do not fit in {n} mel frames; "
            f"give a longer --duration or a shorter text"
        )
    out = sample(bundle.joint_net(task), cond, settings, seed=seed)
    mel = bundle.mel_from_model(out.audio[0]).float().cpu()
    mouth_out = out.motion[0].float().cpu() if out.motion is not None else None
    check_finite(mel, "sampled mel spectrogram (audio stream)", task)
    if mouth_out is not None:
        check_finite(mouth_out, "sampled mouth motion (motion stream)", task)
    return mel, mouth_out, Used(out.nfe, out.guidance)


def _seed(seed: int | None) -> int:
    return int(seed) if seed is not None else secrets.randbelow(2**31 - 1)


def _vocode(mel: torch.Tensor, vocoder: Vocoder | None, bundle: ModelBundle, task: str = "") -> np.ndarray:
    voc = vocoder if vocoder is not None else load_vocoder(None, bundle.mel)
    wave = voc.decode(mel).numpy().astype(np.float32)
    check_finite(wave, "vocoded waveform (audio stream)", task or "generate", VOCODER_CAUSES)
    return wave


def _clip_seconds(wave: np.ndarray, source: str, sample_rate: int) -> float:
    """The length of an ``--audio`` clip in seconds; ``InputError`` outside ``[MIN_SECONDS, MAX_SECONDS]``."""
    seconds = wave.shape[0] / sample_rate
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise InputError(
            f"--audio: {source} is {seconds:.2f} s long; expected {MIN_SECONDS}-{MAX_SECONDS:.0f} s"
        )
    return seconds


def _speech_inputs(
    bundle: ModelBundle,
    text: str | None,
    ref_audio: AudioLike | None,
    ref_text: str | None,
    motion: bool,
    drop_text: bool = False,
) -> tuple[ReferenceAudio | None, list[int] | None]:
    """The reference voice (optional; on a motion timeline trimmed to whole frame-clock blocks) and the text ids
    (``ref_text + text``; None when the text is dropped)."""
    block = bundle.clock.block_samples if motion else 1
    ref = load_reference(ref_audio, bundle, block=block) if ref_audio is not None else None
    if ref_text is not None and not ref_text.strip():
        raise InputError("--ref-text: the reference text is empty (leave it out instead)")
    if ref_text is not None and ref is None:
        raise InputError("--ref-text: given without --ref-audio")
    if ref_text is not None:
        _encode_text(bundle, ref_text, where="--ref-text")
    ids = None
    if not drop_text:
        _encode_text(bundle, text, where="--text")
        ids = _encode_text(bundle, _join_text(ref_text, text), where="--text")
    return ref, ids


def _finish_speech(
    bundle: ModelBundle, mel: torch.Tensor, ref: ReferenceAudio | None, vocoder: Vocoder | None, task: str
) -> np.ndarray:
    return reference_loudness(_vocode(mel, vocoder, bundle, task), ref)


# the tasks --------------------------------------------------------------------------------------------------------
def _speak(
    task: Literal["tts", "text2av"],
    bundle: ModelBundle,
    text: str,
    ref_audio: AudioLike | None,
    ref_text: str | None,
    duration: float | None,
    settings: SamplerSettings,
    seed: int | None,
    vocoder: Vocoder | None,
) -> GenerationResult:
    seed = _seed(seed)
    ref, ids = _speech_inputs(bundle, text, ref_audio, ref_text, motion=task == "text2av")
    n_gen = _generated_frames(bundle, text, ref, ref_text, duration)
    layout = _layout(bundle, task, text=ids, mel=ref.mel if ref is not None else None, gen_frames=n_gen)
    mel, mouth, used = _run(bundle, layout, settings, seed, task)
    n_ref, m_ref = int(layout.ref_frames[0]), int(layout.ref_motion_frames[0])
    mel = mel[n_ref:]
    meta = generation_record(
        task, seed, settings, used, text=text, ref_audio=ref.source if ref else None, ref_text=ref_text
    )
    motion = bundle.denormalise_motion(mouth[m_ref:]).numpy() if mouth is not None else None
    wave = _finish_speech(bundle, mel, ref, vocoder, task)
    return new_result(bundle, task, mel=mel, wave=wave, motion=motion, meta=meta)


def tts(
    bundle: ModelBundle,
    text: str,
    ref_audio: AudioLike,
    ref_text: str | None = None,
    *,
    duration: float | None = None,
    settings: SamplerSettings = SamplerSettings(),
    seed: int | None = None,
    vocoder: Vocoder | None = None,
) -> GenerationResult:
    """Text + reference voice -> speech (F5-TTS inference through the audio branch alone)."""
    if ref_audio is None:
        raise InputError("--ref-audio: tts needs a reference voice (use --task text2av for text alone)")
    return _speak("tts", bundle, text, ref_audio, ref_text, duration, settings, seed, vocoder)


def text2av(
    bundle: ModelBundle,
    text: str,
    ref_audio: AudioLike | None = None,
    ref_text: str | None = None,
    *,
    duration: float | None = None,
    settings: SamplerSettings = SamplerSettings(),
    seed: int | None = None,
    vocoder: Vocoder | None = None,
) -> GenerationResult:
    """Text [+ reference voice] -> speech + lip motion (paper cases 1 and 2)."""
    return _speak("text2av", bundle, text, ref_audio, ref_text, duration, settings, seed, vocoder)


def audio2motion(
    bundle: ModelBundle,
    audio: AudioLike,
    *,
    rest_motion: str | Path | None = None,
    text: str | None = None,
    settings: SamplerSettings = SamplerSettings(),
    seed: int | None = None,
) -> GenerationResult:
    """Speech [+ e_rest track from a motion file, + transcript] -> lip motion (talking head)."""
    seed = _seed(seed)
    wave, source = _read_wave(audio, bundle.mel.sample_rate, "--audio")
    _clip_seconds(wave, source, bundle.mel.sample_rate)
    mel = log_mel(wave, bundle.mel)
    m = bundle.clock.motion_frames(mel.shape[0])
    rest = kp = given_exp = None
    if rest_motion is not None:
        mi = load_motion(rest_motion, bundle)
        given_exp = _fit_frames(mi.exp, m, "--motion")
        _, rest = bundle.normalise_motion(given_exp)
        kp = _fit_frames(mi.kp, m, "--motion") if mi.kp is not None else None
    ids = _encode_text(bundle, text) if text is not None else None
    layout = _layout(bundle, "audio2motion", text=ids, mel=mel, rest=rest)
    _, mouth, used = _run(bundle, layout, settings, seed, "audio2motion")
    exp = bundle.denormalise_motion(mouth).numpy()  # rest = neutral
    if given_exp is not None:  # the given e_rest comes back exactly; only the mouth is generated
        exp = _with_mouth(given_exp, exp, bundle, np.ones(m, dtype=bool))
    return new_result(
        bundle,
        "audio2motion",
        mel=mel,
        wave=wave,
        motion=exp,
        kp=kp,
        has_rest=rest_motion is not None,
        meta=generation_record(
            "audio2motion", seed, settings, used, audio=source, motion=rest_motion, text=text
        ),
    )


def _reference_motion(
    bundle: ModelBundle,
    ref: ReferenceAudio,
    ref_motion: str | Path | None,
    rest: torch.Tensor,
    settings: SamplerSettings,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The motion under a reference voice (model space ``[m_ref, dm]``, ``[m_ref, dr]``) and where it came from.

    ``ref_motion`` (the reference's own clip ``.npz`` / keypoint ``.npy``): its first ``m_ref`` frames (the last one
    repeated when shorter). None: generated from the reference audio by ``audio2motion`` (one more sampler call,
    same settings and seed), its e_rest the given track's first frame held still."""
    m_ref = int(bundle.clock.motion_frames(torch.tensor(ref.mel.shape[0])))
    if ref_motion is not None:
        mi = load_motion(ref_motion, bundle, where="--ref-motion")
        idx = torch.arange(m_ref).clamp(max=mi.exp.shape[0] - 1)
        mouth, rest_ref = bundle.normalise_motion(mi.exp)
        return mouth[idx], rest_ref[idx], mi.source
    layout = _layout(bundle, "audio2motion", mel=ref.mel)
    _, mouth, _ = _run(bundle, layout, settings, seed, "audio2motion")
    assert mouth is not None
    mouth = mouth[:m_ref].to(rest.dtype)
    return mouth, rest[:1].expand(mouth.shape[0], -1), "generated from the reference audio (audio2motion)"


def _motion_to_speech(
    task: Literal["dub", "motion2audio"],
    bundle: ModelBundle,
    motion: str | Path,
    text: str | None,
    ref_audio: AudioLike | None,
    ref_text: str | None,
    settings: SamplerSettings,
    seed: int | None,
    vocoder: Vocoder | None,
    ref_motion: str | Path | None = None,
) -> GenerationResult:
    seed = _seed(seed)
    mi = load_motion(motion, bundle)
    ref, ids = _speech_inputs(bundle, text, ref_audio, ref_text, motion=True, drop_text=text is None)
    if ref_motion is not None and ref is None:
        raise InputError("--ref-motion: the reference's motion needs its voice (--ref-audio)")
    mouth, rest = bundle.normalise_motion(mi.exp)
    ref_mouth = ref_rest = ref_motion_source = None
    if ref is not None:
        # the reference voice comes with its own motion, so the timeline is one real clip whose motion is given
        # throughout and whose audio after the reference is generated: the trained (partial, given) layout
        ref_mouth, ref_rest, ref_motion_source = _reference_motion(
            bundle, ref, ref_motion, rest, settings, seed
        )
    layout = _layout(
        bundle, task, text=ids, mel=ref.mel if ref is not None else None, mouth=mouth, rest=rest,
        ref_mouth=ref_mouth, ref_rest=ref_rest,
    )  # fmt: skip
    mel, _, used = _run(bundle, layout, settings, seed, task)
    mel = mel[int(layout.ref_frames[0]) :]
    meta = generation_record(
        task,
        seed,
        settings,
        used,
        motion=mi.source,
        text=text,
        ref_audio=ref.source if ref else None,
        ref_text=ref_text,
        ref_motion=ref_motion_source,
    )
    wave = _finish_speech(bundle, mel, ref, vocoder, task)
    return new_result(bundle, task, mel=mel, wave=wave, motion=mi.exp, kp=mi.kp, has_rest=True, meta=meta)


def dub(
    bundle: ModelBundle,
    motion: str | Path,
    text: str,
    ref_audio: AudioLike | None = None,
    ref_text: str | None = None,
    *,
    settings: SamplerSettings = SamplerSettings(),
    seed: int | None = None,
    vocoder: Vocoder | None = None,
    ref_motion: str | Path | None = None,
) -> GenerationResult:
    """Given lip motion + new text [+ reference voice] -> speech timed to that motion (paper case 3).

    ``ref_motion``: the reference's own motion (its clip); None with a reference: generated from its audio."""
    if text is None:
        raise InputError("--text: dub needs the text to speak (use --task motion2audio for motion alone)")
    return _motion_to_speech(
        "dub", bundle, motion, text, ref_audio, ref_text, settings, seed, vocoder, ref_motion
    )


def motion2audio(
    bundle: ModelBundle,
    motion: str | Path,
    ref_audio: AudioLike | None = None,
    ref_text: str | None = None,
    *,
    settings: SamplerSettings = SamplerSettings(),
    seed: int | None = None,
    vocoder: Vocoder | None = None,
    ref_motion: str | Path | None = None,
) -> GenerationResult:
    """Lip motion only (text dropped) [+ reference voice] -> plausible time-aligned speech (paper case 4)."""
    return _motion_to_speech(
        "motion2audio", bundle, motion, None, ref_audio, ref_text, settings, seed, vocoder, ref_motion
    )


def edit(
    bundle: ModelBundle,
    audio: AudioLike,
    start: float,
    end: float,
    *,
    motion: str | Path | None = None,
    text: str | None = None,
    streams: Literal["audio", "motion", "both"] = "both",
    settings: SamplerSettings = SamplerSettings(),
    seed: int | None = None,
    vocoder: Vocoder | None = None,
) -> GenerationResult:
    """Regenerate ``[start, end)`` seconds of a clip (``audio`` [+ ``motion``]) in ``streams``; the rest is kept.

    ``text`` is the transcript of the whole clip *after* the edit (F5-TTS speech editing); without it the text is
    dropped. ``streams="both"`` needs ``motion``; without ``motion`` the audio branch runs alone."""
    if streams not in ("audio", "motion", "both"):
        raise InputError(f"--edit-streams: expected audio, motion or both, got {streams!r}")
    if streams in ("motion", "both") and motion is None:
        raise InputError(f"--motion: editing the {streams} stream(s) needs the clip's motion")
    seed = _seed(seed)
    s = bundle.mel
    wave, source = _read_wave(audio, s.sample_rate, "--audio")
    rms = _rms(wave)
    if rms < SILENCE_RMS and streams != "motion":
        raise InputError(f"--audio: {source} is silent (RMS {rms:.2e})")
    seconds = _clip_seconds(wave, source, s.sample_rate)
    if not (math.isfinite(start) and math.isfinite(end) and 0.0 <= start < end <= seconds + 1e-9):
        raise InputError(
            f"--edit-start/--edit-end: need 0 <= start < end <= {seconds:.3f} s (the clip), got [{start}, {end}]"
        )
    gain = TARGET_RMS / rms if 0 < rms < TARGET_RMS else 1.0
    mel = log_mel(wave * gain, s)
    n = mel.shape[0]
    a0, a1 = math.floor(start * s.frame_rate), min(n, math.ceil(end * s.frame_rate))
    fps = bundle.motion.fps
    audio_span = (a0, a1) if streams in ("audio", "both") else None
    motion_span = (math.floor(start * fps), math.ceil(end * fps)) if streams in ("motion", "both") else None
    ids = _encode_text(bundle, text) if text is not None else None
    mi = original = mouth = rest = None
    if motion is not None:
        mi = load_motion(motion, bundle)
        original = _fit_frames(mi.exp, bundle.clock.motion_frames(n), "--motion", crop=False)
        mouth, rest = bundle.normalise_motion(original)
    layout = _layout(
        bundle,
        "edit",
        text=ids,
        mel=mel,
        mouth=mouth,
        rest=rest,
        audio_span=audio_span,
        motion_span=motion_span,
    )
    out_mel, out_mouth, used = _run(bundle, layout, settings, seed, "edit")
    if audio_span is not None:
        generated = _vocode(out_mel, vocoder, bundle, "edit") / gain
        out_wave = _splice(wave, generated, a0 * s.hop_length, a1 * s.hop_length, s.sample_rate)
    else:
        out_wave, out_mel = wave, log_mel(wave, s)
    exp_out = kp = None
    if mi is not None:
        m = original.shape[0]
        generated_frames = ~layout.cond.motion_known[0].cpu().numpy()
        exp_out = _with_mouth(
            original, bundle.denormalise_motion(out_mouth).numpy(), bundle, generated_frames
        )
        kp = _fit_frames(mi.kp, m, "--motion", crop=False) if mi.kp is not None else None
    meta = generation_record(
        "edit", seed, settings, used, audio=source, motion=mi.source if mi else None, text=text
    )
    meta["edit"] = {"start": start, "end": end, "streams": streams}
    return new_result(
        bundle,
        "edit",
        mel=out_mel,
        wave=out_wave.astype(np.float32),
        motion=exp_out,
        kp=kp,
        has_rest=mi is not None,
        meta=meta,
    )
