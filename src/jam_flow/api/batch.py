"""Batched generation on dataset clips for evaluation: the ``audio2motion``, ``motion2audio``, ``dub`` and
``text2av`` tasks on a padded batch, laid out by :func:`jam_flow.flow.layouts.task_layout` (the owner ``jam-flow
generate`` uses for one clip) and run through the shared sampler (``jam_flow.flow.sampler.sample``).

Dimension legend: b batch, n mel frames, c mel channels (100), m motion frames, k keypoints (21), dm mouth dims (12),
dr rest dims (51), nt text tokens. Masks are bool, True = valid; ``*_known`` masks are True = given.

Per task (paper §5.2 / cases 1 and 4):

* ``audio2motion``: the clip's whole mel is given; the mouth motion is generated for
  ``FrameClock.motion_frames(n)`` frames; text dropped; e_rest dropped unless ``use_rest`` (the paper's V2V
  "clue", §5.2) gives the clip's own.
* ``motion2audio``: the clip's whole motion (mouth + e_rest) is given; the mel is generated for
  ``FrameClock.mel_frames(m)`` frames (``ceil(m * sr / (hop * fps))``: the mel that covers the ``m`` frames); text
  dropped (case 4).
* ``dub``: as ``motion2audio`` but the clip's text is given too (paper case 3: motion + text -> speech timed to
  the lips).
* ``text2av``: the clip's text is given; mel and mouth motion are generated (case 1, no reference voice). The
  length is the reference clip's (``duration="reference"``) or the tasks' chars-per-second rule
  (``duration="text"``, ``len(utf8) / CHARS_PER_SECOND`` seconds).
* ``tts``: F5-TTS inference through the audio branch alone (runs on a stage-1 Audio-DiT too): another clip's mel
  (``reference``) is the voice prompt, the text is its text joined with the clip's (``inference.inputs.join_text``
  rule), and the clip's own number of frames is generated after it; only that span is returned. No motion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from jam_flow.errors import InputError
from jam_flow.flow.layouts import Given, task_layout
from jam_flow.flow.sampler import SamplerSettings, sample
from jam_flow.inference.bundle import ModelBundle
from jam_flow.inference.inputs import CHARS_PER_SECOND

__all__ = ["EVAL_TASKS", "Generated", "generate_batch"]

EVAL_TASKS = ("audio2motion", "motion2audio", "dub", "text2av", "tts")
Task = Literal["audio2motion", "motion2audio", "dub", "text2av", "tts"]


@dataclass
class Generated:
    """One batch after generation, in raw units (natural-log mel, LivePortrait ``exp``)."""

    mel: Tensor  # [b, n, c] generated (or given, for audio2motion)
    audio_mask: Tensor  # [b, n]
    exp: Tensor  # [b, m, k, 3] generated mouth (+ given or neutral rest)
    motion_mask: Tensor  # [b, m]
    nfe: int


def _plain_texts(bundle: ModelBundle, batch: dict[str, Any]) -> list[str]:
    """Each clip's plain text: the batch's ``transcripts`` (what a phoneme model's ids came from), else the ids
    decoded (characters)."""
    texts = batch.get("transcripts")
    if texts is not None and all(t is not None for t in texts):
        return list(texts)
    return [bundle.vocab.decode(row[row >= 0].tolist()) for row in batch["text"].cpu()]


def _text_frames(bundle: ModelBundle, batch: dict[str, Any], device: torch.device) -> Tensor:
    """``[b]`` mel frames of speech for the batch's text by the tasks' chars-per-second rule (plain text)."""
    n_bytes = torch.tensor([len(t.encode("utf-8")) for t in _plain_texts(bundle, batch)], device=device)
    return torch.round(n_bytes / CHARS_PER_SECOND * bundle.mel.frame_rate).long().clamp_min(1)


@torch.no_grad()
def generate_batch(
    bundle: ModelBundle,
    batch: dict[str, Any],
    task: Task,
    settings: SamplerSettings,
    generator: torch.Generator,
    use_rest: bool = False,
    duration: Literal["reference", "text"] = "reference",
    reference: dict[str, Any] | None = None,
    audio_feats: torch.Tensor | None = None,
) -> Generated:
    """Generate ``task`` for a ``collate_clips`` batch (``mel``, ``exp``, ``text``, ``audio_mask``,
    ``motion_mask``); the noise comes from ``generator`` (CPU), so a seed fixes the whole run. The conditions are
    :func:`jam_flow.flow.layouts.task_layout`'s, as for ``jam-flow generate``. ``reference`` (``tts`` only): the
    collated voice-prompt clips, one per clip of ``batch``. ``audio_feats [b, m, d]`` (a stage-1 Motion-DiT,
    ``audio2motion``): its per-frame audio features (:meth:`ModelBundle.joint_net`)."""
    if task not in EVAL_TASKS:
        raise InputError(f"--task: expected one of {', '.join(EVAL_TASKS)}, got {task!r}")
    dev = bundle.device
    a_len = batch["audio_mask"].to(dev).sum(1)
    m_len = batch["motion_mask"].to(dev).sum(1)
    gen_frames = None
    if task == "tts":
        if reference is None:
            raise InputError("--task tts: a reference clip is needed for every clip")
        return _tts_batch(bundle, batch, reference, settings, generator)
    if task == "audio2motion":
        given = Given(mel=bundle.mel_to_model(batch["mel"].to(dev)), mel_lens=a_len)
        if use_rest:
            given.rest, given.motion_lens = bundle.normalise_motion(batch["exp"].to(dev))[1], m_len
    elif task in ("motion2audio", "dub"):
        mouth, rest = bundle.normalise_motion(batch["exp"].to(dev))
        text = batch["text"].to(dev) if task == "dub" else None
        given = Given(text=text, mouth=mouth, rest=rest, motion_lens=m_len)
    else:  # text2av
        text = batch["text"].to(dev)
        if duration == "reference":
            gen_frames = a_len
        elif duration == "text":
            gen_frames = _text_frames(bundle, batch, text.device)
        else:
            raise InputError(f"--text2av-duration: expected 'reference' or 'text', got {duration!r}")
        gen_frames = torch.maximum(
            gen_frames, (text >= 0).sum(1) + 1
        )  # the text must fit in the mel (F5 padding)
        given = Given(text=text)
    layout = task_layout(task, given, bundle.mel, bundle.motion, gen_frames=gen_frames)
    cond = layout.cond
    feats = audio_feats.to(dev) if audio_feats is not None else None
    out = sample(bundle.joint_net(task, feats), cond, settings, generator=generator)
    mel = bundle.mel_from_model(out.audio).float() * cond.audio_mask[..., None]
    exp = bundle.denormalise_motion(out.motion, None if cond.drop_rest else cond.motion_rest)
    return Generated(
        mel=mel.cpu(),
        audio_mask=cond.audio_mask.cpu(),
        exp=exp.cpu(),
        motion_mask=cond.motion_mask.cpu(),
        nfe=out.nfe,
    )


def _tts_batch(
    bundle: ModelBundle,
    batch: dict[str, Any],
    reference: dict[str, Any],
    settings: SamplerSettings,
    generator: torch.Generator,
) -> Generated:
    """``tts`` (module docstring): [reference mel | generated span], text = reference text + own text."""
    from jam_flow.inference.inputs import _join_text

    dev = bundle.device
    n_ref = reference["audio_mask"].to(dev).sum(1)
    n_gen = batch["audio_mask"].to(dev).sum(1)
    joined = []
    for own, ref in zip(_plain_texts(bundle, batch), _plain_texts(bundle, reference), strict=True):
        joined.append(bundle.vocab.encode(_join_text(ref, own), where="tts text"))
    text = torch.full((len(joined), max(len(t) for t in joined)), -1, dtype=torch.long, device=dev)
    for j, ids in enumerate(joined):
        text[j, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    given = Given(text=text, mel=bundle.mel_to_model(reference["mel"].to(dev)), mel_lens=n_ref)
    cond = task_layout("tts", given, bundle.mel, bundle.motion, gen_frames=n_gen).cond
    out = sample(bundle.joint_net("tts"), cond, settings, generator=generator)
    full = bundle.mel_from_model(out.audio).float().cpu()
    b, span = full.shape[0], int(n_gen.max())
    mel = torch.zeros(b, span, full.shape[2])
    for j in range(b):
        k, g = int(n_ref[j]), int(n_gen[j])
        mel[j, :g] = full[j, k : k + g]
    m = int(bundle.clock.motion_frames(n_gen.cpu()).max())
    exp = bundle.denormalise_motion(torch.zeros(b, m, bundle.motion.mouth_dim))
    return Generated(
        mel=mel,
        audio_mask=batch["audio_mask"][:, :span].bool().cpu(),
        exp=exp,
        motion_mask=torch.zeros(b, m, dtype=torch.bool),
        nfe=out.nfe,
    )
