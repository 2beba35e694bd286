"""Task layouts: (task, given streams, lengths) -> the joint conditions of a padded batch (paper §5.2-5.3).

Dimension legend: b batch, n mel frames, c mel channels (100), m motion frames, dm mouth dims (12), dr rest dims (51),
nt text tokens. Masks are bool, **True = valid**; the ``*_known`` masks are **True = given** (the sampler's
convention). Every value here is in model space (normalised as the network sees it).

This module is the one owner of what each task gives and generates. ``jam-flow generate`` (a batch of one),
batched evaluation and the validation media all build their :class:`~jam_flow.flow.sampler.JointConditions` here;
the mel <-> motion lengths come from :class:`jam_flow.features.FrameClock`.

=============  ==================================================  =============================================
task           given (:class:`Given`)                              timeline
=============  ==================================================  =============================================
tts            ``mel`` = reference voice (optional here) + text    ``n = n_ref + gen_frames``; audio branch alone
text2av        text [+ ``mel`` = reference voice]                  ``n = n_ref + gen_frames``, ``m = motion_frames(n)``;
                                                                   no motion given
audio2motion   ``mel`` = the whole clip [+ ``rest``, + text]       ``n`` = the clip, ``m = motion_frames(n)``
dub            ``mouth`` + ``rest`` = the whole motion, text       ``n = n_ref + mel_frames(m_gen)``,
               [+ ``mel`` = reference voice, + ``ref_mouth`` /     ``m = motion_frames(n_ref) + m_gen``; the motion
               ``ref_rest`` = the reference's own motion]          under the reference is the reference's own
                                                                   (given), neutral zeros without it
motion2audio   as dub, text dropped (paper case 4)                 as dub
edit           ``mel`` = the clip [+ ``mouth`` + ``rest``, + text]  ``n`` = the clip, ``m = motion_frames(n)``; the
                                                                   frames in ``audio_span`` / ``motion_span`` are
                                                                   generated, the rest given
=============  ==================================================  =============================================

A reference voice in ``dub`` / ``motion2audio`` comes with its own motion (``ref_mouth``: from its clip, or generated
from its audio by ``audio2motion``, :mod:`jam_flow.inference.tasks`), so the timeline is one real clip whose audio
span after the reference is hidden and whose motion is given throughout: the (partial, given) layout that training
draws in every audio-only sample with an F5 span (``p_audio_only * (1 - p_whole_audio)``, 22.5 % under
configs/stage2.yaml). Without it the motion under the reference is the neutral expression (zeros), a motion
training never shows.

Text ``None`` drops the text (one filler token, ``drop_text``); ``rest`` ``None`` drops e_rest (``drop_rest``: the
written motion's non-mouth keypoints are the neutral expression). Given values are placed on the timeline and zeroed
wherever a frame is not given or not valid. Argument errors here are programming errors (``ValueError``): the
callers check user input first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from jam_flow.features import FrameClock, MelSettings, MotionSettings
from jam_flow.flow.sampler import JointConditions
from jam_flow.nn.masks import lengths_to_mask

__all__ = ["TASKS", "TASK_LAYOUTS", "Given", "TaskLayout", "task_layout"]

TASKS = ("tts", "text2av", "audio2motion", "dub", "motion2audio", "edit")

# (audio, motion) stream layout of every task variant: ``given`` = every valid frame given (time 1), ``partial`` =
# a generated region next to given frames, ``generated`` = no frame given, ``absent`` = the audio branch alone.
# These are the states of :func:`jam_flow.flow.masking.layout_rate` (what training draws, and at which rate).
TASK_LAYOUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "tts": (("partial", "absent"),),
    "text2av": (("generated", "generated"), ("partial", "generated")),
    "audio2motion": (("given", "generated"),),
    "dub": (("generated", "given"), ("partial", "given")),
    "motion2audio": (("generated", "given"), ("partial", "given")),
    "edit": (("partial", "given"), ("given", "partial"), ("partial", "partial"), ("partial", "absent")),
}


@dataclass
class Given:
    """What the caller has, as a padded batch in model space. Which fields a task reads: see the module table."""

    text: Tensor | None = None  # [b, nt] int64, pad -1; None: text dropped
    mel: Tensor | None = None  # [b, n_in, c]: the reference voice, or the whole clip (audio2motion, edit)
    mel_lens: Tensor | None = None  # [b] valid frames of ``mel`` (None: all n_in)
    mouth: Tensor | None = None  # [b, m_in, dm]: the clip's e_mouth (dub, motion2audio, edit)
    rest: Tensor | None = None  # [b, m_in, dr]: e_rest; None: dropped
    motion_lens: Tensor | None = None  # [b] valid frames of ``mouth`` / ``rest`` (None: all m_in)
    # dub / motion2audio with a reference voice: the reference's own motion (None: neutral zeros under it)
    ref_mouth: Tensor | None = None  # [b, m_r, dm]
    ref_rest: Tensor | None = None  # [b, m_r, dr] (read when ``rest`` is given)
    ref_motion_lens: Tensor | None = None  # [b] valid frames of ``ref_mouth`` (None: all m_r)


@dataclass
class TaskLayout:
    """The conditions of one task on a padded batch, with the timeline's bookkeeping."""

    cond: JointConditions  # masks always set; motion fields None when the audio branch runs alone
    audio_lens: Tensor  # [b] valid mel frames of the timeline
    motion_lens: Tensor | None  # [b] valid motion frames, None without a motion stream
    ref_frames: Tensor  # [b] mel frames of the reference voice at the start of the timeline (0: none)
    ref_motion_frames: Tensor  # [b] motion frames under that reference (``motion_frames(ref_frames)``)


def _device(given: Given) -> torch.device:
    for x in (given.mel, given.mouth, given.text, given.rest, given.mel_lens, given.motion_lens):
        if x is not None:
            return x.device
    return torch.device("cpu")


def _lens(x: Tensor | None, lens: Tensor | None, b: int, device: torch.device) -> Tensor:
    """``[b]`` valid frames of ``x`` (``lens``, else its full width; 0 without ``x``)."""
    if x is None:
        return torch.zeros(b, dtype=torch.long, device=device)
    if lens is None:
        return torch.full((b,), x.shape[1], dtype=torch.long, device=device)
    return lens.to(device=device, dtype=torch.long)


def _place(
    values: Tensor | None, offset: Tensor, lens: Tensor, size: int, dim: int, like: Tensor | None
) -> Tensor:
    """``[b, size, dim]``: ``values[i, :lens[i]]`` at frames ``offset[i] ..`` of row ``i``, zeros elsewhere."""
    b = offset.shape[0]
    dtype = like.dtype if like is not None else torch.float32
    if values is None or values.shape[1] == 0:
        return torch.zeros(b, size, dim, dtype=dtype, device=offset.device)
    pos = torch.arange(size, device=offset.device)[None] - offset[:, None]  # [b, size] source frame
    ok = (pos >= 0) & (pos < lens[:, None])
    src = pos.clamp(0, values.shape[1] - 1)
    out = values.gather(1, src[..., None].expand(-1, -1, values.shape[2]))
    return torch.where(ok[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device))


def _outside(size: int, span: Tensor | None, valid: Tensor) -> Tensor:
    """``[b, size]`` known mask: valid frames outside ``span`` (``[b, 2]`` frames ``[start, end)``; None: all)."""
    if span is None:
        return valid.clone()
    pos = torch.arange(size, device=valid.device)[None]
    span = span.to(device=valid.device, dtype=torch.long)
    return valid & ~((pos >= span[:, :1]) & (pos < span[:, 1:]))


def _text(given: Given, b: int, device: torch.device) -> tuple[Tensor, bool]:
    if given.text is None:
        return torch.full((b, 1), -1, dtype=torch.long, device=device), True
    return given.text.to(device=device, dtype=torch.long), False


def task_layout(
    task: str,
    given: Given,
    mel: MelSettings,
    motion: MotionSettings,
    *,
    gen_frames: Tensor | None = None,
    audio_span: Tensor | None = None,
    motion_span: Tensor | None = None,
    with_motion: bool = True,
) -> TaskLayout:
    """The joint conditions of ``task`` for a padded batch (see the module table).

    Args:
        task: one of :data:`TASKS`.
        given: the given streams (model space).
        mel, motion: the model's feature settings (channel sizes and the frame clock).
        gen_frames: ``[b]`` mel frames of speech to generate after the reference (tts, text2av).
        audio_span, motion_span: ``[b, 2]`` frames ``[start, end)`` to regenerate (edit; None: the stream is kept).
        with_motion: False runs the audio branch alone (text2av on an audio-only network; an edit without
            ``given.mouth`` always does).
    """
    if task not in TASKS:
        raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")
    clock = FrameClock.of(mel, motion)
    mel_dim, mouth_dim, rest_dim = mel.n_mels, motion.mouth_dim, motion.rest_dim
    dev = _device(given)
    b = next(x.shape[0] for x in (given.mel, given.mouth, given.text, gen_frames) if x is not None)
    text, drop_text = _text(given, b, dev)
    motion_given = task in ("dub", "motion2audio")  # the whole motion is given, after the (neutral) reference
    has_motion = with_motion and task != "tts" and (task != "edit" or given.mouth is not None)
    mel_kept = _lens(given.mel, given.mel_lens, b, dev)  # given mel frames (the reference, or the clip)

    if task in ("audio2motion", "edit"):  # the clip's mel is the timeline
        if given.mel is None:
            raise ValueError(f"{task}: the clip's mel (given.mel) is required")
        n_ref, n_len = torch.zeros_like(mel_kept), mel_kept
        span = audio_span if task == "edit" else None
    else:  # a reference voice (optional) starts the timeline, the speech after it is generated
        n_ref = mel_kept
        if motion_given:
            if given.mouth is None:
                raise ValueError(f"{task}: the motion (given.mouth) is required")
            m_gen = _lens(given.mouth, given.motion_lens, b, dev)
            n_len = n_ref + clock.mel_frames(m_gen)
        elif gen_frames is None:
            raise ValueError(f"{task}: gen_frames (mel frames to generate) is required")
        else:
            n_len = n_ref + gen_frames.to(device=dev, dtype=torch.long)
        span = torch.stack([n_ref, n_len], 1)
    n = int(n_len.max())
    audio_mask = lengths_to_mask(n_len, n)
    audio_known = _outside(n, span, audio_mask)
    audio_cond = _place(given.mel, torch.zeros_like(n_ref), mel_kept, n, mel_dim, given.mel)
    cond = JointConditions(
        audio_cond=_zero_unknown(audio_cond, audio_known),
        audio_known=audio_known,
        text=text,
        audio_mask=audio_mask,
        drop_text=drop_text,
    )
    m_ref = clock.motion_frames(n_ref)
    layout = TaskLayout(cond, n_len, None, n_ref, m_ref)
    if not has_motion:
        return layout

    like = given.mouth if given.mouth is not None else given.mel
    if motion_given:
        m_len, offset = m_ref + m_gen, m_ref
        motion_kept = rest_kept = m_gen
    else:
        m_len, offset = clock.motion_frames(n_len), torch.zeros_like(n_len)
        motion_kept = torch.minimum(_lens(given.mouth, given.motion_lens, b, dev), m_len)
        rest_kept = torch.minimum(_lens(given.rest, given.motion_lens, b, dev), m_len)
    m = int(m_len.max())
    motion_mask = lengths_to_mask(m_len, m)
    if motion_given:
        motion_known = motion_mask.clone()
    elif task == "edit":
        motion_known = _outside(m, motion_span, motion_mask)
    else:  # text2av / audio2motion: no motion frame is given
        motion_known = torch.zeros_like(motion_mask)
    mouth = _place(given.mouth, offset, motion_kept, m, mouth_dim, like)
    rest = _place(given.rest, offset, rest_kept, m, rest_dim, like)
    if motion_given and given.ref_mouth is not None:  # the reference's own motion under the reference voice
        ref_kept = torch.minimum(_lens(given.ref_mouth, given.ref_motion_lens, b, dev), m_ref)
        zero = torch.zeros_like(m_ref)
        mouth = mouth + _place(given.ref_mouth, zero, ref_kept, m, mouth_dim, like)
        if given.rest is not None and given.ref_rest is not None:
            rest = rest + _place(given.ref_rest, zero, ref_kept, m, rest_dim, like)
    cond.motion_cond = _zero_unknown(mouth, motion_known)
    cond.motion_known = motion_known
    cond.motion_rest = rest
    cond.motion_mask = motion_mask
    cond.drop_rest = given.rest is None
    layout.motion_lens = m_len
    return layout


def _zero_unknown(x: Tensor, known: Tensor) -> Tensor:
    return torch.where(known[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
