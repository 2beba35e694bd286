"""Training masks for inpainting-style joint flow matching (paper §4.2, §4.5, appendix A).

Dimension legend: b batch, n mel frames, m motion frames.

Two kinds of boolean tensors appear here:

* validity masks (``audio_mask [b, n]``, ``motion_mask [b, m]``): **True = valid** (not padding), as everywhere;
* generation masks (``audio_gen [b, n]``, ``motion_gen [b, m]``): **True = to be generated** (hidden from the
  network's ``*_cond`` input and supervised by the loss). They are always a subset of the valid frames.

Per sample we draw

1. a *modality scenario* (paper §4.2: "sometimes only motion is hidden, sometimes only audio, and at other times
   both"): ``MOTION_ONLY`` / ``AUDIO_ONLY`` / ``BOTH`` with configurable probabilities. A stream that is not hidden
   gets an empty span (its loss weight is 0 for that sample) and is fully given to the network;
2. an F5-TTS-style random span per hidden stream: ``frac ~ U(frac_min, frac_max)`` of the clip's valid length,
   ``length = floor(frac * len)``, ``start = floor((len - length) * u)``;
3. conditioning dropout flags (appendix A): ``drop_audio_cond`` 0.1, ``drop_motion_cond`` 0.1, ``drop_text`` 0.2,
   ``drop_rest`` 0.8 and joint-attention dropout 0.1, which switches off *both* cross-modal directions of that
   sample (``audio_sees_motion = motion_sees_audio = False``) to learn the unconditional branch used by CFG.

When both streams are hidden and ``span_alignment="aligned"`` (default) the motion span covers exactly the time
region of the audio span through the exact frame mapping ``audio_to_motion_frame`` (``(4 i) // 15`` at 24 kHz,
hop 256, 25 fps): audio frames ``[s, e)`` -> motion frames ``[a2m(s), a2m(e - 1) + 1)``. The inference tasks
(``text2av`` with a reference, ``edit``) hide one time region in both streams, so training on aligned regions
matches them; ``"independent"`` draws a separate span for motion (F5-style) and is kept for ablations.

Every draw uses an explicit ``torch.Generator`` (CPU) so a run is reproducible and resumable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from jam_flow.features import audio_to_motion_frame

__all__ = [
    "BOTH",
    "MOTION_ONLY",
    "AUDIO_ONLY",
    "MaskConfig",
    "DropoutConfig",
    "TrainingMasks",
    "DropFlags",
    "lengths_to_mask",
    "random_span",
    "aligned_motion_span",
    "sample_scenarios",
    "sample_masks",
    "sample_dropout",
]

# scenario codes (per sample)
BOTH = 0  # audio and motion hidden (joint generation)
MOTION_ONLY = 1  # only motion hidden (audio given: audio -> motion)
AUDIO_ONLY = 2  # only audio hidden (motion given: motion -> audio, dubbing)


@dataclass
class MaskConfig:
    """Span and scenario settings.

    Args:
        frac_min: smallest span as a fraction of the clip's valid length (F5-TTS: 0.7).
        frac_max: largest span fraction (F5-TTS: 1.0).
        p_both: probability that both streams are hidden.
        p_motion_only: probability that only the motion is hidden (audio fully given).
        p_audio_only: probability that only the audio is hidden (motion fully given).
        span_alignment: ``"aligned"`` (motion span = the audio span's time region when both are hidden) or
            ``"independent"`` (separate random spans).
    """

    frac_min: float = 0.7
    frac_max: float = 1.0
    p_both: float = 0.5
    p_motion_only: float = 0.25
    p_audio_only: float = 0.25
    span_alignment: Literal["aligned", "independent"] = "aligned"

    def __post_init__(self) -> None:
        if not 0.0 <= self.frac_min <= self.frac_max <= 1.0:
            raise ValueError(
                f"masking: need 0 <= frac_min <= frac_max <= 1, got {self.frac_min}, {self.frac_max}"
            )
        probs = (self.p_both, self.p_motion_only, self.p_audio_only)
        if min(probs) < 0 or sum(probs) <= 0:
            raise ValueError(f"masking: scenario probabilities must be >= 0 with a positive sum, got {probs}")
        if self.span_alignment not in ("aligned", "independent"):
            raise ValueError(
                f"masking.span_alignment: expected 'aligned' or 'independent', got {self.span_alignment!r}"
            )


@dataclass
class DropoutConfig:
    """Per-sample conditioning dropout probabilities (paper appendix A).

    Args:
        cond_audio: drop the masked reference mel (``drop_audio_cond``).
        cond_motion: drop the masked mouth motion (``drop_motion_cond``).
        text: drop the text (``drop_text``).
        rest_motion: drop e_rest (``drop_rest``).
        joint_attention: switch off both cross-modal attention directions (CFG on joint conditioning).
    """

    cond_audio: float = 0.1
    cond_motion: float = 0.1
    text: float = 0.2
    rest_motion: float = 0.8
    joint_attention: float = 0.1

    def __post_init__(self) -> None:
        for name in ("cond_audio", "cond_motion", "text", "rest_motion", "joint_attention"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"dropout.{name}: expected a probability in [0, 1], got {p}")


@dataclass
class TrainingMasks:
    """Generation masks of one batch (True = generate & supervise) and the scenario of each sample."""

    audio_gen: Tensor  # [b, n] bool
    motion_gen: Tensor | None  # [b, m] bool (None without a motion stream)
    scenario: Tensor  # [b] int64 (BOTH / MOTION_ONLY / AUDIO_ONLY)

    @property
    def audio_hidden(self) -> Tensor:  # [b] bool
        return self.scenario != MOTION_ONLY

    @property
    def motion_hidden(self) -> Tensor:  # [b] bool
        return self.scenario != AUDIO_ONLY


@dataclass
class DropFlags:
    """Per-sample ``[b]`` bool switches passed straight to ``JointDiT.forward``."""

    drop_audio_cond: Tensor
    drop_motion_cond: Tensor
    drop_text: Tensor
    drop_rest: Tensor
    drop_joint: Tensor  # True: this sample sees no other modality (both directions off)

    def network_kwargs(self) -> dict[str, Tensor]:
        sees = ~self.drop_joint
        return {
            "drop_audio_cond": self.drop_audio_cond,
            "drop_text": self.drop_text,
            "drop_motion_cond": self.drop_motion_cond,
            "drop_rest": self.drop_rest,
            "audio_sees_motion": sees,
            "motion_sees_audio": sees.clone(),
        }

    def to(self, device: torch.device | str) -> DropFlags:
        return DropFlags(
            *(
                getattr(self, f).to(device)
                for f in ("drop_audio_cond", "drop_motion_cond", "drop_text", "drop_rest", "drop_joint")
            )
        )


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """``lengths [b]`` -> ``[b, max_len]`` bool, True for the first ``lengths[i]`` positions (valid)."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def random_span(
    lengths: Tensor, max_len: int, frac_min: float, frac_max: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """F5-TTS span per sample: returns ``(start [b], end [b])`` int64 with ``0 <= start <= end <= length``."""
    b = lengths.shape[0]
    lengths = lengths.cpu().long()
    frac = torch.rand(b, generator=generator) * (frac_max - frac_min) + frac_min
    span = (frac * lengths).long().clamp(min=0, max=max_len)
    start = ((lengths - span).clamp(min=0) * torch.rand(b, generator=generator)).long()
    return start, start + span


def _span_to_mask(start: Tensor, end: Tensor, max_len: int) -> Tensor:
    pos = torch.arange(max_len)[None, :]
    return (pos >= start[:, None]) & (pos < end[:, None])


def aligned_motion_span(
    audio_start: Tensor,
    audio_end: Tensor,
    motion_lengths: Tensor,
    sample_rate: int = 24000,
    hop_length: int = 256,
    fps: int = 25,
) -> tuple[Tensor, Tensor]:
    """Motion frames covering audio frames ``[start, end)``: ``[a2m(start), a2m(end - 1) + 1)``, clipped to the
    valid motion length; an empty audio span gives an empty motion span."""
    m_start = audio_to_motion_frame(audio_start, sample_rate, hop_length, fps)
    m_end = audio_to_motion_frame((audio_end - 1).clamp(min=0), sample_rate, hop_length, fps) + 1
    m_end = torch.where(audio_end > audio_start, m_end, m_start)
    lengths = motion_lengths.cpu().long()
    m_start = torch.minimum(m_start, lengths)
    m_end = torch.minimum(torch.maximum(m_end, m_start), lengths)
    return m_start, m_end


def sample_scenarios(b: int, cfg: MaskConfig, generator: torch.Generator | None = None) -> Tensor:
    """``[b]`` int64 scenario codes drawn with probabilities ``(p_both, p_motion_only, p_audio_only)``."""
    probs = torch.tensor([cfg.p_both, cfg.p_motion_only, cfg.p_audio_only], dtype=torch.float64)
    return torch.multinomial(probs, b, replacement=True, generator=generator)


def sample_masks(
    audio_lengths: Tensor,
    n: int,
    motion_lengths: Tensor | None,
    m: int | None,
    cfg: MaskConfig,
    generator: torch.Generator | None = None,
    scenario: int | None = None,
    sample_rate: int = 24000,
    hop_length: int = 256,
    fps: int = 25,
) -> TrainingMasks:
    """Draw scenarios and spans for a batch (all on the CPU; move the result to the device).

    ``scenario`` forces one scenario for every sample (stage 1: ``AUDIO_ONLY`` for the F5-TTS fine-tune,
    ``MOTION_ONLY`` for the Motion-DiT). Without a motion stream (``motion_lengths=None``) only the audio span
    is drawn and the scenario is ``AUDIO_ONLY``.
    """
    b = audio_lengths.shape[0]
    audio_lengths = audio_lengths.cpu().long()
    if motion_lengths is None:
        scenario = AUDIO_ONLY
    if scenario is None:
        scen = sample_scenarios(b, cfg, generator)
    else:
        if scenario not in (BOTH, MOTION_ONLY, AUDIO_ONLY):
            raise ValueError(f"scenario: expected one of {BOTH}, {MOTION_ONLY}, {AUDIO_ONLY}, got {scenario}")
        scen = torch.full((b,), scenario, dtype=torch.long)
    # draw every random number for every sample, whatever its scenario, so the stream of draws does not
    # depend on the scenario outcome (easier to reason about; the cost is a few scalars)
    a_start, a_end = random_span(audio_lengths, n, cfg.frac_min, cfg.frac_max, generator)
    audio_hidden = scen != MOTION_ONLY
    a_start = torch.where(audio_hidden, a_start, torch.zeros_like(a_start))
    a_end = torch.where(audio_hidden, a_end, torch.zeros_like(a_end))
    audio_gen = _span_to_mask(a_start, a_end, n)
    motion_gen = None
    if motion_lengths is not None:
        assert m is not None
        motion_lengths = motion_lengths.cpu().long()
        i_start, i_end = random_span(motion_lengths, m, cfg.frac_min, cfg.frac_max, generator)
        if cfg.span_alignment == "aligned":
            al_start, al_end = aligned_motion_span(
                a_start, a_end, motion_lengths, sample_rate, hop_length, fps
            )
            both = scen == BOTH
            i_start = torch.where(both, al_start, i_start)
            i_end = torch.where(both, al_end, i_end)
        motion_hidden = scen != AUDIO_ONLY
        i_start = torch.where(motion_hidden, i_start, torch.zeros_like(i_start))
        i_end = torch.where(motion_hidden, i_end, torch.zeros_like(i_end))
        motion_gen = _span_to_mask(i_start, i_end, m)
    return TrainingMasks(audio_gen=audio_gen, motion_gen=motion_gen, scenario=scen)


def sample_dropout(b: int, cfg: DropoutConfig, generator: torch.Generator | None = None) -> DropFlags:
    """Independent per-sample Bernoulli draws for each switch (CPU tensors; move them to the device)."""
    u = torch.rand(5, b, generator=generator)
    return DropFlags(
        drop_audio_cond=u[0] < cfg.cond_audio,
        drop_motion_cond=u[1] < cfg.cond_motion,
        drop_text=u[2] < cfg.text,
        drop_rest=u[3] < cfg.rest_motion,
        drop_joint=u[4] < cfg.joint_attention,
    )
