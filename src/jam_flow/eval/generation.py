"""Batched generation on dataset clips for evaluation: the ``audio2motion``, ``motion2audio`` and ``text2av``
tasks laid out exactly like ``jam_flow.inference.tasks`` lays them out for one clip, but for a padded batch, through
the shared sampler (``jam_flow.flow.sampler.sample``).

Dimension legend: b batch, n mel frames, c mel channels (100), m motion frames, k keypoints (21), dm mouth dims (12),
dr rest dims (51), nt text tokens. Masks are bool, True = valid; ``*_known`` masks are True = given.

Per task (paper §5.2 / cases 1 and 4):

* ``audio2motion``: the clip's whole mel is given; the mouth motion is generated for
  ``audio_to_motion_frame(n - 1) + 1`` frames; text dropped; e_rest dropped unless ``use_rest`` (the paper's V2V
  "clue", §5.2) gives the clip's own.
* ``motion2audio``: the clip's whole motion (mouth + e_rest) is given; the mel is generated for
  ``ceil(m * sr / (hop * fps))`` frames (the task's rule: the smallest mel length with ``m`` motion frames); text
  dropped (case 4).
* ``dub``: as ``motion2audio`` but the clip's text is given too (paper case 3: motion + text -> speech timed to
  the lips).
* ``text2av``: the clip's text is given; mel and mouth motion are generated (case 1, no reference voice). The
  length is the reference clip's (``duration="reference"``) or the tasks' chars-per-second rule
  (``duration="text"``, ``len(utf8) / CHARS_PER_SECOND`` seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from jam_flow.errors import InputError
from jam_flow.features import audio_to_motion_frame
from jam_flow.flow.sampler import JointConditions, SamplerSettings, sample
from jam_flow.inference.bundle import ModelBundle
from jam_flow.inference.tasks import CHARS_PER_SECOND

__all__ = ["EVAL_TASKS", "Generated", "generate_batch", "motion_frames_for_mel", "mel_frames_for_motion"]

EVAL_TASKS = ("audio2motion", "motion2audio", "dub", "text2av")
Task = Literal["audio2motion", "motion2audio", "dub", "text2av"]


@dataclass
class Generated:
    """One batch after generation, in raw units (natural-log mel, LivePortrait ``exp``)."""

    mel: Tensor  # [b, n, c] generated (or given, for audio2motion)
    audio_mask: Tensor  # [b, n]
    exp: Tensor  # [b, m, k, 3] generated mouth (+ given or neutral rest)
    motion_mask: Tensor  # [b, m]
    nfe: int


def motion_frames_for_mel(bundle: ModelBundle, n: Tensor) -> Tensor:
    """``[b]`` mel lengths -> motion lengths ``audio_to_motion_frame(n - 1) + 1``."""
    s, f = bundle.mel, bundle.motion
    return audio_to_motion_frame(n - 1, s.sample_rate, s.hop_length, f.fps) + 1


def mel_frames_for_motion(bundle: ModelBundle, m: Tensor) -> Tensor:
    """``[b]`` motion lengths -> the smallest mel length with that many motion frames: ``ceil(m sr / (hop fps))``."""
    s, f = bundle.mel, bundle.motion
    return -((-m * s.sample_rate) // (s.hop_length * f.fps))


def _lengths_mask(lengths: Tensor, size: int) -> Tensor:
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def _fit(x: Tensor, size: int) -> Tensor:
    """Crop or zero-pad dim 1 to ``size``."""
    if x.shape[1] >= size:
        return x[:, :size]
    pad = torch.zeros(x.shape[0], size - x.shape[1], *x.shape[2:], dtype=x.dtype, device=x.device)
    return torch.cat([x, pad], 1)


def _dropped_text(b: int, device) -> Tensor:
    return torch.full((b, 1), -1, dtype=torch.long, device=device)


@torch.no_grad()
def generate_batch(
    bundle: ModelBundle,
    batch: dict[str, Any],
    task: Task,
    settings: SamplerSettings,
    generator: torch.Generator,
    use_rest: bool = False,
    duration: Literal["reference", "text"] = "reference",
) -> Generated:
    """Generate ``task`` for a ``collate_clips`` batch (``mel``, ``exp``, ``text``, ``audio_mask``,
    ``motion_mask``); the noise comes from ``generator`` (CPU), so a seed fixes the whole run."""
    if task not in EVAL_TASKS:
        raise InputError(f"--task: expected one of {', '.join(EVAL_TASKS)}, got {task!r}")
    dev = bundle.device
    ref_mel = batch["mel"].to(dev)
    ref_exp = batch["exp"].to(dev)
    a_mask = batch["audio_mask"].to(dev)
    m_mask = batch["motion_mask"].to(dev)
    b = ref_mel.shape[0]
    c = bundle.mel.n_mels
    mouth_ref, rest_ref = bundle.normalise_motion(ref_exp)  # [b, m, dm], [b, m, dr]

    if task == "audio2motion":
        n_len = a_mask.sum(1)
        m_len = motion_frames_for_mel(bundle, n_len)
        m = int(m_len.max())
        audio_mask, motion_mask = a_mask, _lengths_mask(m_len, m)
        audio_cond, audio_known = bundle.mel_to_model(ref_mel) * a_mask[..., None], a_mask
        motion_cond = torch.zeros(b, m, bundle.motion.mouth_dim, device=dev)
        motion_known = torch.zeros(b, m, dtype=torch.bool, device=dev)
        rest = _fit(rest_ref, m) if use_rest else torch.zeros(b, m, bundle.motion.rest_dim, device=dev)
        text, drop_text, drop_rest = _dropped_text(b, dev), True, not use_rest
    elif task in ("motion2audio", "dub"):
        m_len = m_mask.sum(1)
        n_len = mel_frames_for_motion(bundle, m_len)
        n, m = int(n_len.max()), ref_exp.shape[1]
        audio_mask, motion_mask = _lengths_mask(n_len, n), m_mask
        audio_cond = torch.zeros(b, n, c, device=dev)
        audio_known = torch.zeros(b, n, dtype=torch.bool, device=dev)
        motion_cond, motion_known = mouth_ref * m_mask[..., None], m_mask
        rest, drop_rest, drop_text = rest_ref, False, task == "motion2audio"
        text = _dropped_text(b, dev) if drop_text else batch["text"].to(dev)
    else:  # text2av
        text = batch["text"].to(dev)
        if duration == "reference":
            n_len = a_mask.sum(1)
        elif duration == "text":
            n_bytes = torch.tensor(
                [len(bundle.vocab.decode(row[row >= 0].tolist()).encode("utf-8")) for row in text.cpu()],
                device=dev,
            )
            n_len = torch.round(n_bytes / CHARS_PER_SECOND * bundle.mel.frame_rate).long().clamp_min(1)
        else:
            raise InputError(f"--text2av-duration: expected 'reference' or 'text', got {duration!r}")
        n_len = torch.maximum(n_len, (text >= 0).sum(1) + 1)  # the text must fit in the mel (F5 padding)
        m_len = motion_frames_for_mel(bundle, n_len)
        n, m = int(n_len.max()), int(m_len.max())
        audio_mask, motion_mask = _lengths_mask(n_len, n), _lengths_mask(m_len, m)
        audio_cond = torch.zeros(b, n, c, device=dev)
        audio_known = torch.zeros(b, n, dtype=torch.bool, device=dev)
        motion_cond = torch.zeros(b, m, bundle.motion.mouth_dim, device=dev)
        motion_known = torch.zeros(b, m, dtype=torch.bool, device=dev)
        rest, drop_text, drop_rest = torch.zeros(b, m, bundle.motion.rest_dim, device=dev), False, True

    cond = JointConditions(
        audio_cond=audio_cond,
        audio_known=audio_known,
        text=text,
        audio_mask=audio_mask,
        motion_cond=motion_cond,
        motion_known=motion_known,
        motion_rest=rest,
        motion_mask=motion_mask,
        drop_text=drop_text,
        drop_rest=drop_rest,
    )
    out = sample(bundle.model, cond, settings, generator=generator)
    mel = bundle.mel_from_model(out.audio).float() * audio_mask[..., None]
    exp = bundle.denormalise_motion(out.motion, rest if not drop_rest else None)
    return Generated(
        mel=mel.cpu(), audio_mask=audio_mask.cpu(), exp=exp.cpu(), motion_mask=motion_mask.cpu(), nfe=out.nfe
    )
