"""The JAM-Flow tasks (paper §5.2-5.3, cases 1-4), one function per ``jam-flow generate --task``.

Dimension legend: n mel frames (93.75 / s), c mel channels (100), m motion frames (25 / s), k keypoints (21),
dm mouth dims (12), dr rest dims (51), s samples (24 kHz).

Every task lays out one timeline, marks per stream which frames are *given* (kept exactly) and which are
*generated*, and calls :func:`jam_flow.flow.sampler.sample` once:

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
each of them with a stated rate (:func:`jam_flow.flow.masking.layout_rate`, :data:`TASK_LAYOUTS`):

=============  ==========================================  =====================================================
task           (audio, motion)                             training scenario that draws it
=============  ==========================================  =====================================================
tts            (partial, absent)                           audio span hidden, joint attention off (joint config)
text2av        (generated, generated); with a reference    both hidden, ``p_whole_audio`` x ``p_whole_motion``;
               (partial, generated) (paper case 2)         with a reference audio span x ``p_whole_motion``
audio2motion   (given, generated)                          motion only, ``p_whole_motion``
dub            (generated, given); with a reference        audio only, ``p_whole_audio``; with a reference an
motion2audio   (partial, given): no motion exists under    audio span (``1 - p_whole_audio``)
               the reference, it is given as neutral
edit           (partial, given) / (given, partial) /       audio only / motion only / both with aligned spans;
               (partial, partial) / (partial, absent)      audio alone as tts
=============  ==========================================  =====================================================

Timeline and durations:
* A reference voice occupies the start of the timeline (F5-TTS). When motion is on the timeline, the reference wave
  is trimmed at its end to a whole number of 0.16 s blocks (3840 samples = 15 mel frames = 4 motion frames) so the
  generated part starts on a motion frame boundary; its frames are ``nw // hop`` (F5's ``ref_audio_len``).
* Given motion of ``m`` frames fixes the mel length exactly: ``n = ceil(m * sr / (hop * fps))`` (``ceil(15 m / 4)``),
  the smallest ``n`` with ``audio_to_motion_frame(n - 1) + 1 == m``. Otherwise ``m = audio_to_motion_frame(n - 1) + 1``.
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

Nothing is written to disk unless :meth:`GenerationResult.save` is called.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from jam_flow.data.mel import log_mel
from jam_flow.data.vocoder import Vocoder, load_vocoder
from jam_flow.errors import InputError
from jam_flow.flow.sampler import JointConditions, SamplerSettings, sample
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
    _mel_frames_for_motion,
    _motion_frames_for_mel,
    _read_wave,
    _ref_block,
    _rms,
    load_motion,
    load_reference,
)
from jam_flow.inference.outputs import (
    VOCODER_CAUSES,
    check_finite,
    write_motion,
    write_preview,
    write_wav,
)

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

# (audio, motion) stream layout of every task variant (see the module docstring; states of flow.masking.layout_rate)
TASK_LAYOUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "tts": (("partial", "absent"),),
    "text2av": (("generated", "generated"), ("partial", "generated")),
    "audio2motion": (("given", "generated"),),
    "dub": (("generated", "given"), ("partial", "given")),
    "motion2audio": (("generated", "given"), ("partial", "given")),
    "edit": (("partial", "given"), ("given", "partial"), ("partial", "partial"), ("partial", "absent")),
}


# ----------------------------------------------------------------------------------------------------------------
@dataclass
class GenerationResult:
    """What a task produced (CPU arrays). ``motion`` is raw LivePortrait ``exp`` (not normalised)."""

    task: str
    sample_rate: int
    fps: int
    mouth_indices: tuple[int, ...]
    mel: torch.Tensor | None = None  # [n, c] natural-log mel of the output speech
    wave: np.ndarray | None = None  # [s] float32
    motion: np.ndarray | None = None  # [m, k, 3]
    kp: np.ndarray | None = None  # canonical keypoints [k, 3] or [m, k, 3] for the preview, when known
    has_rest: bool = (
        False  # True: the non-mouth keypoints are a real e_rest track; False: the neutral expression
    )
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, out_dir: str | Path, preview: bool = True) -> dict[str, Path]:
        """Write ``audio.wav``, ``motion.npy`` + ``motion.json`` and ``preview.mp4`` (when both streams exist);
        without motion the generation record (seed, sampler, guidance) goes to ``generation.json``.

        Raises :class:`~jam_flow.errors.NonFiniteError` before writing anything when a stream holds NaN/inf."""
        if self.wave is not None:
            check_finite(self.wave, "speech (audio.wav)", self.task)
        if self.motion is not None:
            check_finite(self.motion, "motion (motion.npy)", self.task)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        if self.wave is not None:
            paths["audio"] = write_wav(out_dir / "audio.wav", self.wave, self.sample_rate)
        if self.motion is None:  # no motion.json to carry the generation record (tts, audio-only edit)
            record = out_dir / "generation.json"
            record.write_text(json.dumps({"task": self.task, **self.meta}, indent=2) + "\n", encoding="utf-8")
            paths["generation"] = record
        else:
            meta = {
                "fps": self.fps,
                "mouth_indices": list(self.mouth_indices),
                "has_rest": self.has_rest,
                **self.meta,
            }
            paths["motion"], paths["motion_json"] = write_motion(out_dir, self.motion, meta)
        if preview and self.wave is not None and self.motion is not None:
            paths["preview"] = write_preview(
                out_dir / "preview.mp4",
                self.motion,
                self.wave,
                self.sample_rate,
                self.fps,
                self.mouth_indices,
                kp=self.kp,
            )
        return paths


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
@dataclass
class _Plan:
    n: int
    audio_given: torch.Tensor  # [n, c] natural-log mel (anything where not known)
    audio_known: torch.Tensor  # [n] bool
    text_ids: list[int] | None  # None -> drop_text
    motion: bool = False
    mouth_given: torch.Tensor | None = None  # [m, dm] model space
    motion_known: torch.Tensor | None = None  # [m] bool
    rest: torch.Tensor | None = None  # [m, dr] model space, None -> neutral + drop_rest


@dataclass(frozen=True)
class _Used:
    """What the sampler actually did: network evaluations and the guidance mode (None: unguided)."""

    nfe: int
    guidance: str | None


def _run(
    bundle: ModelBundle, plan: _Plan, settings: SamplerSettings, seed: int, task: str
) -> tuple[torch.Tensor, torch.Tensor | None, _Used]:
    """Sample once; returns (natural-log mel [n, c], model-space mouth [m, dm] or None, what the sampler did)."""
    if plan.motion and not bundle.has_motion:
        raise InputError(
            f"--task {task}: {bundle.source} holds an audio-only (stage-1) model; only --task tts runs "
            f"on it (use a stage-2 JointDiT checkpoint)"
        )
    dev = bundle.device
    text = plan.text_ids if plan.text_ids else [-1]
    if plan.text_ids is not None and len(plan.text_ids) >= plan.n:
        raise InputError(
            f"--text: {len(plan.text_ids)} characters do not fit in {plan.n} mel frames; "
            f"give a longer --duration or a shorter text"
        )
    audio_known = plan.audio_known.to(dev)
    audio_cond = bundle.mel_to_model(plan.audio_given.to(dev).float())
    audio_cond = torch.where(audio_known[:, None], audio_cond, torch.zeros_like(audio_cond))
    cond = JointConditions(
        audio_cond=audio_cond[None],
        audio_known=audio_known[None],
        text=torch.tensor([text], dtype=torch.long, device=dev),
        drop_text=plan.text_ids is None,
    )
    if plan.motion:
        m = _motion_frames_for_mel(bundle, plan.n)
        mouth = plan.mouth_given if plan.mouth_given is not None else torch.zeros(m, bundle.motion.mouth_dim)
        known = plan.motion_known if plan.motion_known is not None else torch.zeros(m, dtype=torch.bool)
        rest = plan.rest if plan.rest is not None else torch.zeros(m, bundle.motion.rest_dim)
        if mouth.shape[0] != m or known.shape[0] != m or rest.shape[0] != m:
            raise InputError(f"motion: expected {m} frames for {plan.n} mel frames, got {mouth.shape[0]}")
        cond.motion_cond = mouth[None].to(dev).float()
        cond.motion_known = known[None].to(dev)
        cond.motion_rest = rest[None].to(dev).float()
        cond.drop_rest = plan.rest is None
    out = sample(bundle.joint_net(task), cond, settings, seed=seed)
    mel = bundle.mel_from_model(out.audio[0]).float().cpu()
    mouth_out = out.motion[0].float().cpu() if out.motion is not None else None
    check_finite(mel, "sampled mel spectrogram (audio stream)", task)
    if mouth_out is not None:
        check_finite(mouth_out, "sampled mouth motion (motion stream)", task)
    return mel, mouth_out, _Used(out.nfe, out.guidance)


def _meta(task: str, seed: int, settings: SamplerSettings, used: _Used, **sources: Any) -> dict[str, Any]:
    """The generation record (``motion.json`` / ``generation.json``). ``guidance`` is the mode asked for,
    ``guidance_used`` the one applied: ``"joint"`` falls back to ``"f5"`` without a motion stream (plain TTS),
    and an unguided run (every scale 0) records None."""
    return {
        "task": task,
        "seed": seed,
        "nfe": settings.nfe,
        "nfe_used": used.nfe,
        "method": settings.method,
        "sway_coef": settings.sway_coef,
        "cfg": settings.cfg,
        "audio_cfg": settings.audio_scale,
        "motion_cfg": settings.motion_scale,
        "guidance": settings.guidance,
        "guidance_used": used.guidance,
        "sources": {k: (str(v) if isinstance(v, Path) else v) for k, v in sources.items() if v is not None},
    }


def _seed(seed: int | None) -> int:
    return int(seed) if seed is not None else secrets.randbelow(2**31 - 1)


def _vocode(mel: torch.Tensor, vocoder: Vocoder | None, bundle: ModelBundle, task: str = "") -> np.ndarray:
    voc = vocoder if vocoder is not None else load_vocoder(None, bundle.mel)
    wave = voc.decode(mel).numpy().astype(np.float32)
    check_finite(wave, "vocoded waveform (audio stream)", task or "generate", VOCODER_CAUSES)
    return wave


def _result(bundle: ModelBundle, task: str, **kw: Any) -> GenerationResult:
    return GenerationResult(
        task=task,
        sample_rate=bundle.mel.sample_rate,
        fps=bundle.motion.fps,
        mouth_indices=bundle.motion.mouth_indices,
        **kw,
    )


def _clip_seconds(wave: np.ndarray, source: str, sample_rate: int) -> float:
    """The length of an ``--audio`` clip in seconds; ``InputError`` outside ``[MIN_SECONDS, MAX_SECONDS]``."""
    seconds = wave.shape[0] / sample_rate
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise InputError(
            f"--audio: {source} is {seconds:.2f} s long; expected {MIN_SECONDS}-{MAX_SECONDS:.0f} s"
        )
    return seconds


def _speech_timeline(
    bundle: ModelBundle,
    text: str | None,
    ref_audio: AudioLike | None,
    ref_text: str | None,
    n_gen: int | None,
    duration: float | None,
    motion: bool,
    drop_text: bool = False,
):
    """Reference (optional) + generated part. Returns (plan, reference or None, n_ref)."""
    ref = (
        load_reference(ref_audio, bundle, block=_ref_block(bundle) if motion else 1)
        if ref_audio is not None
        else None
    )
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
    if n_gen is None:
        n_gen = _generated_frames(bundle, text, ref, ref_text, duration)
    n_ref = ref.mel.shape[0] if ref is not None else 0
    n = n_ref + n_gen
    given = torch.zeros(n, bundle.mel.n_mels)
    known = torch.zeros(n, dtype=torch.bool)
    if ref is not None:
        given[:n_ref] = ref.mel
        known[:n_ref] = True
    return _Plan(n=n, audio_given=given, audio_known=known, text_ids=ids, motion=motion), ref, n_ref


def _finish_speech(
    bundle: ModelBundle, mel: torch.Tensor, ref: ReferenceAudio | None, vocoder: Vocoder | None, task: str
) -> np.ndarray:
    wave = _vocode(mel, vocoder, bundle, task)
    if ref is not None and ref.rms < TARGET_RMS:
        wave = wave * (ref.rms / TARGET_RMS)  # F5-TTS: back to the reference loudness
    return wave


# the tasks --------------------------------------------------------------------------------------------------------
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
    seed = _seed(seed)
    plan, ref, n_ref = _speech_timeline(bundle, text, ref_audio, ref_text, None, duration, motion=False)
    mel, _, used = _run(bundle, plan, settings, seed, "tts")
    mel = mel[n_ref:]
    wave = _finish_speech(bundle, mel, ref, vocoder, "tts")
    return _result(
        bundle,
        "tts",
        mel=mel,
        wave=wave,
        meta=_meta("tts", seed, settings, used, text=text, ref_audio=ref.source, ref_text=ref_text),
    )


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
    seed = _seed(seed)
    plan, ref, n_ref = _speech_timeline(bundle, text, ref_audio, ref_text, None, duration, motion=True)
    mel, mouth, used = _run(bundle, plan, settings, seed, "text2av")
    m_ref = _motion_frames_for_mel(bundle, n_ref) if n_ref else 0
    mel = mel[n_ref:]
    exp = bundle.denormalise_motion(mouth[m_ref:]).numpy()
    return _result(
        bundle,
        "text2av",
        mel=mel,
        wave=_finish_speech(bundle, mel, ref, vocoder, "text2av"),
        motion=exp,
        meta=_meta(
            "text2av",
            seed,
            settings,
            used,
            text=text,
            ref_audio=ref.source if ref else None,
            ref_text=ref_text,
        ),
    )


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
    n = mel.shape[0]
    m = _motion_frames_for_mel(bundle, n)
    rest = kp = None
    if rest_motion is not None:
        mi = load_motion(rest_motion, bundle)
        _, rest = bundle.normalise_motion(_fit_frames(mi.exp, m, "--motion"))
        kp = _fit_frames(mi.kp, m, "--motion") if mi.kp is not None else None
    ids = _encode_text(bundle, text) if text is not None else None
    plan = _Plan(
        n=n,
        audio_given=mel,
        audio_known=torch.ones(n, dtype=torch.bool),
        text_ids=ids,
        motion=True,
        rest=rest,
    )
    _, mouth, used = _run(bundle, plan, settings, seed, "audio2motion")
    exp = bundle.denormalise_motion(mouth).numpy()  # rest = neutral
    if rest_motion is not None:  # the given e_rest comes back exactly; only the mouth is generated
        exp = _with_mouth(_fit_frames(mi.exp, m, "--motion"), exp, bundle, np.ones(m, dtype=bool))
    return _result(
        bundle,
        "audio2motion",
        mel=mel,
        wave=wave,
        motion=exp,
        kp=kp,
        has_rest=rest_motion is not None,
        meta=_meta("audio2motion", seed, settings, used, audio=source, motion=rest_motion, text=text),
    )


def _motion_to_speech(
    task: str,
    bundle: ModelBundle,
    motion: str | Path,
    text: str | None,
    ref_audio: AudioLike | None,
    ref_text: str | None,
    settings: SamplerSettings,
    seed: int | None,
    vocoder: Vocoder | None,
) -> GenerationResult:
    seed = _seed(seed)
    mi = load_motion(motion, bundle)
    m_gen = mi.exp.shape[0]
    plan, ref, n_ref = _speech_timeline(
        bundle,
        text,
        ref_audio,
        ref_text,
        _mel_frames_for_motion(bundle, m_gen),
        None,
        motion=True,
        drop_text=text is None,
    )
    m_ref = _motion_frames_for_mel(bundle, n_ref) if n_ref else 0
    m = m_ref + m_gen
    mouth_given, rest_given = bundle.normalise_motion(mi.exp)
    # under the reference voice there is no motion: it is *given* as the neutral expression (the normalised
    # mean, zeros), so the motion stream is fully given (time 1) and the layout is the trained "audio span
    # generated, motion given" one (see TASK_LAYOUTS), not a motion prefix to generate next to a given audio
    mouth = torch.zeros(m, bundle.motion.mouth_dim)
    rest = torch.zeros(m, bundle.motion.rest_dim)
    known = torch.ones(m, dtype=torch.bool)
    mouth[m_ref:], rest[m_ref:] = mouth_given, rest_given
    plan.mouth_given, plan.motion_known, plan.rest = mouth, known, rest
    mel, _, used = _run(bundle, plan, settings, seed, task)
    mel = mel[n_ref:]
    return _result(
        bundle,
        task,
        mel=mel,
        wave=_finish_speech(bundle, mel, ref, vocoder, task),
        motion=mi.exp,
        kp=mi.kp,
        has_rest=True,
        meta=_meta(
            task,
            seed,
            settings,
            used,
            motion=mi.source,
            text=text,
            ref_audio=ref.source if ref else None,
            ref_text=ref_text,
        ),
    )


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
) -> GenerationResult:
    """Given lip motion + new text [+ reference voice] -> speech timed to that motion (paper case 3)."""
    if text is None:
        raise InputError("--text: dub needs the text to speak (use --task motion2audio for motion alone)")
    return _motion_to_speech("dub", bundle, motion, text, ref_audio, ref_text, settings, seed, vocoder)


def motion2audio(
    bundle: ModelBundle,
    motion: str | Path,
    ref_audio: AudioLike | None = None,
    ref_text: str | None = None,
    *,
    settings: SamplerSettings = SamplerSettings(),
    seed: int | None = None,
    vocoder: Vocoder | None = None,
) -> GenerationResult:
    """Lip motion only (text dropped) [+ reference voice] -> plausible time-aligned speech (paper case 4)."""
    return _motion_to_speech(
        "motion2audio", bundle, motion, None, ref_audio, ref_text, settings, seed, vocoder
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
    audio_known = torch.ones(n, dtype=torch.bool)
    if streams in ("audio", "both"):
        audio_known[a0:a1] = False
    ids = _encode_text(bundle, text) if text is not None else None
    plan = _Plan(n=n, audio_given=mel, audio_known=audio_known, text_ids=ids)
    mi = None
    if motion is not None:
        mi = load_motion(motion, bundle)
        m = _motion_frames_for_mel(bundle, n)
        exp = _fit_frames(mi.exp, m, "--motion", crop=False)
        mouth, rest = bundle.normalise_motion(exp)
        motion_known = torch.ones(m, dtype=torch.bool)
        if streams in ("motion", "both"):
            fps = bundle.motion.fps
            motion_known[math.floor(start * fps) : min(m, math.ceil(end * fps))] = False
        plan = replace(plan, motion=True, mouth_given=mouth, motion_known=motion_known, rest=rest)
    out_mel, out_mouth, used = _run(bundle, plan, settings, seed, "edit")
    if streams in ("audio", "both"):
        generated = _vocode(out_mel, vocoder, bundle, "edit") / gain
        out_wave = _splice(wave, generated, a0 * s.hop_length, a1 * s.hop_length, s.sample_rate)
    else:
        out_wave, out_mel = wave, log_mel(wave, s)
    exp_out = kp = None
    if mi is not None:
        m = plan.mouth_given.shape[0]
        original = _fit_frames(mi.exp, m, "--motion", crop=False)
        exp_out = _with_mouth(
            original, bundle.denormalise_motion(out_mouth).numpy(), bundle, ~plan.motion_known.numpy()
        )
        kp = _fit_frames(mi.kp, m, "--motion", crop=False) if mi.kp is not None else None
    meta = _meta("edit", seed, settings, used, audio=source, motion=mi.source if mi else None, text=text)
    meta["edit"] = {"start": start, "end": end, "streams": streams}
    return _result(
        bundle,
        "edit",
        mel=out_mel,
        wave=out_wave.astype(np.float32),
        motion=exp_out,
        kp=kp,
        has_rest=mi is not None,
        meta=meta,
    )
