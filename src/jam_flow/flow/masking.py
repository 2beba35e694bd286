"""Training masks for inpainting-style joint flow matching (paper §4.2, §4.5, appendix A).

Dimension legend: b batch, n mel frames, m motion frames. Two kinds of boolean tensors appear here:

* validity masks (``audio_mask [b, n]``, ``motion_mask [b, m]``): **True = valid** (not padding), as everywhere;
* generation masks (``audio_gen [b, n]``, ``motion_gen [b, m]``): **True = to be generated** (hidden from the
  network's ``*_cond`` input and supervised by the loss), always a subset of the valid frames.

Per sample: a modality scenario (§4.2), an F5-TTS span or the whole stream per hidden stream (aligned across
streams through ``audio_to_motion_frame`` by default), and conditioning dropout (appendix A; the guidance
configurations of :mod:`jam_flow.flow.guidance`). :func:`layout_rate` states each task layout's training
rate. Every draw uses an explicit CPU ``torch.Generator`` (reproducible, resumable). Details: docs/training.md
"Masks and dropout".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from jam_flow.features import audio_to_motion_frame
from jam_flow.flow.guidance import unconditional_flags

__all__ = [
    "BOTH",
    "MOTION_ONLY",
    "AUDIO_ONLY",
    "MaskConfig",
    "DropoutConfig",
    "TrainingMasks",
    "DropFlags",
    "CONFIG_NONE",
    "CONFIG_JOINT",
    "CONFIG_F5",
    "CONFIG_ALL",
    "CONFIG_TTS",
    "CONFIG_MODES",
    "random_span",
    "aligned_motion_span",
    "sample_scenarios",
    "layout_rate",
    "LAYOUT_STATES",
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
        p_whole_audio: probability that a hidden audio stream is hidden entirely (no given frame; ``text2av``
            without a reference, ``dub`` / ``motion2audio`` without a reference) instead of an F5 span.
        p_whole_motion: probability that a hidden motion stream is hidden entirely (``audio2motion``, and
            ``text2av`` with a reference: the reference voice comes without motion, paper case 2).
    """

    frac_min: float = 0.7
    frac_max: float = 1.0
    p_both: float = 0.5
    p_motion_only: float = 0.25
    p_audio_only: float = 0.25
    span_alignment: Literal["aligned", "independent"] = "aligned"
    p_whole_audio: float = 0.1
    p_whole_motion: float = 0.25

    def __post_init__(self) -> None:
        for name in ("p_whole_audio", "p_whole_motion"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"masking.{name}: expected a probability in [0, 1], got {p}")
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
    """Conditioning dropout (paper appendix A) as stated rates plus explicit guidance configurations.

    ``rates="marginal"`` (default): ``cond_audio`` / ``cond_motion`` / ``text`` / ``rest_motion`` /
    ``joint_attention`` are each condition's *marginal* drop rate, the paper's numbers. Per sample one exclusive
    configuration is drawn (``f5`` / ``tts`` / ``all`` with their rates, else none); it forces its drops for the
    sample's hidden streams, and an independent coin per condition drops it otherwise with the rate
    ``(p - c) / (1 - c)``, ``c`` being the probability that this sample's configuration forces it. So every
    condition's marginal is exactly ``p`` whatever the sample's scenario, and the correlated unconditional inputs
    that guidance needs still occur at a stated rate. The joint-attention coin switches off the joint attention
    of every hidden branch (the unconditional input of ``--guidance joint``, conditions as drawn).

    ``rates="independent"`` (the scheme before; configs of checkpoints trained with it): independent coins at the
    condition rates, and on top one exclusive configuration ``joint_attention`` / ``f5`` / ``all`` (``tts`` must
    be 0). With the paper's numbers and ``f5`` 0.2 that gives marginals text 0.36, reference mel 0.28, masked
    motion 0.28, e_rest 0.84.

    Each configuration turns the sample's switches into unconditional ones through the function the sampler uses
    (:func:`jam_flow.flow.guidance.unconditional_flags`), for the sample's hidden streams. Measured rates:
    docs/training.md "Conditioning dropout and guidance".

    Args:
        cond_audio: drop the masked reference mel (``drop_audio_cond``; paper 0.1).
        cond_motion: drop the masked mouth motion (``drop_motion_cond``; paper 0.1).
        text: drop the text (``drop_text``; paper 0.2).
        rest_motion: drop e_rest (``drop_rest``; paper 0.8).
        joint_attention: joint attention off for each hidden branch (guidance mode ``joint``; paper: "a 10%
            dropout on joint-attention conditioning").
        f5: configuration ``f5``: a hidden audio stream loses reference mel + text, a hidden motion stream masked
            motion + e_rest (guidance mode ``f5``).
        tts: configuration ``tts`` (``rates="marginal"`` only): a hidden audio stream loses reference mel + text
            *and* every hidden branch its joint attention: the unconditional input of ``tts`` guidance (motion
            absent, which a JointDiT runs as audio with joint attention off). Independent coins alone draw it in
            only ``cond_audio * text`` = 2 % of the motion-absent samples.
        all: configuration ``all``: every condition and both joint-attention directions off (``--guidance all``;
            0 = never trained, so that mode is refused for validation).
        rates: ``"marginal"`` or ``"independent"`` (see above).
    """

    cond_audio: float = 0.1
    cond_motion: float = 0.1
    text: float = 0.2
    rest_motion: float = 0.8
    joint_attention: float = 0.1
    f5: float = 0.05
    tts: float = 0.02
    all: float = 0.0
    rates: Literal["marginal", "independent"] = "marginal"

    def __post_init__(self) -> None:
        for name in (
            "cond_audio",
            "cond_motion",
            "text",
            "rest_motion",
            "joint_attention",
            "f5",
            "tts",
            "all",
        ):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"dropout.{name}: expected a probability in [0, 1], got {p}")
        if self.rates not in ("marginal", "independent"):
            raise ValueError(f"dropout.rates: expected 'marginal' or 'independent', got {self.rates!r}")
        if self.rates == "independent":
            if self.tts > 0:
                raise ValueError(
                    "dropout.tts: needs rates 'marginal' (set dropout.tts: 0 with 'independent')"
                )
            total = self.joint_attention + self.f5 + self.all
            if total > 1.0 + 1e-9:
                raise ValueError(
                    "dropout: joint_attention + f5 + all are exclusive configurations and must sum to <= 1, "
                    f"got {total}"
                )
            return
        total = self.f5 + self.tts + self.all
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"dropout: f5 + tts + all are exclusive configurations and must sum to <= 1, got {total}"
            )
        # a marginal cannot be below the rate at which the configurations force that drop
        for name, forced_by in (
            ("cond_audio", ("f5", "tts", "all")),
            ("text", ("f5", "tts", "all")),
            ("cond_motion", ("f5", "all")),
            ("rest_motion", ("f5", "all")),
            ("joint_attention", ("tts", "all")),
        ):
            forced = sum(getattr(self, k) for k in forced_by)
            if getattr(self, name) < forced - 1e-9:
                raise ValueError(
                    f"dropout.{name}: the marginal rate {getattr(self, name)} is below the rate at which "
                    f"{' + '.join(forced_by)} force that drop ({forced:g}); raise it, lower those, or set "
                    "dropout.rates: independent (the earlier scheme)"
                )

    def guidance_rates(self) -> dict[str, float]:
        """The rate at which each guidance mode's unconditional configuration is drawn."""
        return {"joint": self.joint_attention, "f5": self.f5, "all": self.all}

    def check_trained(self, mode: str, where: str) -> None:
        """Raise ``ValueError`` when ``mode``'s unconditional configuration is never drawn in training."""
        field = {"joint": "joint_attention", "f5": "f5", "all": "all"}[mode]
        if self.guidance_rates()[mode] <= 0:
            raise ValueError(
                f"{where}: guidance mode {mode!r} extrapolates from an unconditional prediction this model never "
                f"trains (dropout.{field} = 0); set dropout.{field} > 0 or pick another guidance mode"
            )


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


# guidance configuration codes (per sample), see DropoutConfig
CONFIG_NONE, CONFIG_JOINT, CONFIG_F5, CONFIG_ALL, CONFIG_TTS = 0, 1, 2, 3, 4
CONFIG_MODES = {CONFIG_JOINT: "joint", CONFIG_F5: "f5", CONFIG_ALL: "all", CONFIG_TTS: "tts"}


@dataclass
class DropFlags:
    """Per-sample ``[b]`` bool switches passed straight to ``JointDiT.forward`` (``*_sees_*`` True = joint
    attention on for that branch), and the guidance configuration drawn for each sample (``[b]`` int64)."""

    drop_audio_cond: Tensor
    drop_motion_cond: Tensor
    drop_text: Tensor
    drop_rest: Tensor
    audio_sees_motion: Tensor
    motion_sees_audio: Tensor
    config: Tensor | None = None  # [b] CONFIG_* codes

    _SWITCHES = (
        "drop_audio_cond",
        "drop_motion_cond",
        "drop_text",
        "drop_rest",
        "audio_sees_motion",
        "motion_sees_audio",
    )

    def network_kwargs(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in self._SWITCHES}

    def to(self, device: torch.device | str) -> DropFlags:
        return DropFlags(
            *(getattr(self, f).to(device) for f in self._SWITCHES),
            config=None if self.config is None else self.config.to(device),
        )


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


LAYOUT_STATES = ("given", "partial", "generated", "absent")


def layout_rate(layout: tuple[str, str], masking: MaskConfig, dropout: DropoutConfig) -> float:
    """Probability that a stage-2 training sample shows the network the stream layout ``(audio, motion)``.

    Each stream is ``"given"`` (every valid frame given, time 1), ``"partial"`` (a hidden span with given context),
    ``"generated"`` (no frame given) or, for motion, ``"absent"`` (the audio branch alone: plain ``tts``, which a
    JointDiT runs as audio with its joint attention off; training shows it whenever the ``joint_attention``
    configuration switches off the joint attention of a hidden audio stream, RoPE positions of the audio being
    the standalone ones). Availability drops (e.g. ``cond_motion``) that also empty a stream's conditioning are
    not counted: this is the rate of the scenario sampler's explicit draws. With aligned spans a partial audio span
    near the clip's ends can still cover every motion frame (the motion clock is 3.75x coarser), which moves a few
    percent from ``(partial, partial)`` to ``(partial, generated)``: the latter's rate is a lower bound."""
    audio, motion = layout
    if audio not in LAYOUT_STATES[:3] or motion not in LAYOUT_STATES:
        raise ValueError(f"layout: expected (audio, motion) states from {LAYOUT_STATES}, got {layout}")
    total = masking.p_both + masking.p_motion_only + masking.p_audio_only
    scen = {
        BOTH: masking.p_both / total,
        MOTION_ONLY: masking.p_motion_only / total,
        AUDIO_ONLY: masking.p_audio_only / total,
    }

    def state(hidden: bool, whole_p: float, want: str) -> float:
        if not hidden:
            return 1.0 if want == "given" else 0.0
        return {"partial": 1.0 - whole_p, "generated": whole_p}.get(want, 0.0)

    if motion == "absent":
        p_audio = sum(
            p * state(code != MOTION_ONLY, masking.p_whole_audio, audio) for code, p in scen.items()
        )
        return p_audio * dropout.joint_attention if audio != "given" else 0.0
    total_rate = 0.0
    for code, p in scen.items():
        p_audio = state(code != MOTION_ONLY, masking.p_whole_audio, audio)
        p_motion = state(code != AUDIO_ONLY, masking.p_whole_motion, motion)
        if code == BOTH and masking.span_alignment == "aligned":
            # a whole audio span aligns to the whole motion; otherwise the whole-motion coin decides
            if audio == "generated":
                p_motion = 1.0 if motion == "generated" else 0.0
        total_rate += p * p_audio * p_motion
    return total_rate


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
    whole = torch.rand(2, b, generator=generator)
    whole_audio, whole_motion = whole[0] < cfg.p_whole_audio, whole[1] < cfg.p_whole_motion
    a_start = torch.where(whole_audio, torch.zeros_like(a_start), a_start)
    a_end = torch.where(whole_audio, audio_lengths.clamp(max=n), a_end)
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
        i_start = torch.where(whole_motion, torch.zeros_like(i_start), i_start)
        i_end = torch.where(whole_motion, motion_lengths.clamp(max=m), i_end)
        motion_hidden = scen != AUDIO_ONLY
        i_start = torch.where(motion_hidden, i_start, torch.zeros_like(i_start))
        i_end = torch.where(motion_hidden, i_end, torch.zeros_like(i_end))
        motion_gen = _span_to_mask(i_start, i_end, m)
    return TrainingMasks(audio_gen=audio_gen, motion_gen=motion_gen, scenario=scen)


def _config_flags(code: int, flags: dict[str, Tensor], a_hid: Tensor, m_hid: Tensor) -> dict[str, Tensor]:
    """The switches of configuration ``code`` applied to ``flags`` (the guidance modes' own function)."""
    if code == CONFIG_TTS:  # f5 on the audio stream, then joint attention off: tts's unconditional input
        no_motion = torch.zeros_like(m_hid)
        return unconditional_flags("joint", unconditional_flags("f5", flags, a_hid, no_motion), a_hid, m_hid)
    return unconditional_flags(CONFIG_MODES[code], flags, a_hid, m_hid)


def _apply_config(
    code: int, chosen: Tensor, flags: dict[str, Tensor], a_hid: Tensor, m_hid: Tensor
) -> dict[str, Tensor]:
    """``flags`` with configuration ``code``'s switches (:func:`_config_flags`) where ``chosen [b]`` is True."""
    return {
        k: torch.where(chosen, v2, flags[k]) for k, v2 in _config_flags(code, flags, a_hid, m_hid).items()
    }


_COND_FIELDS = (
    ("drop_audio_cond", "cond_audio"),
    ("drop_motion_cond", "cond_motion"),
    ("drop_text", "text"),
    ("drop_rest", "rest_motion"),
)


def sample_dropout(
    b: int,
    cfg: DropoutConfig,
    generator: torch.Generator | None = None,
    audio_hidden: Tensor | None = None,
    motion_hidden: Tensor | None = None,
) -> DropFlags:
    """Conditioning drops and one guidance configuration per sample (CPU tensors), see :class:`DropoutConfig`.

    ``audio_hidden`` / ``motion_hidden`` ``[b]`` bool say which streams each sample generates (from
    :class:`TrainingMasks`; default: both), i.e. which branches a drawn configuration acts on, exactly as the
    sampler applies it to the streams it generates. ``config [b]``: the exclusive configuration drawn
    (``CONFIG_F5`` / ``CONFIG_TTS`` / ``CONFIG_ALL``), else ``CONFIG_JOINT`` where the joint-attention coin fell,
    else ``CONFIG_NONE``. Draws: ``"marginal"`` 5 coins then one configuration; ``"independent"`` 4 coins then one
    configuration (the earlier stream, unchanged)."""
    on = torch.ones(b, dtype=torch.bool)
    a_hid = on if audio_hidden is None else audio_hidden.cpu().to(torch.bool)
    m_hid = on if motion_hidden is None else motion_hidden.cpu().to(torch.bool)
    if cfg.rates == "independent":
        u = torch.rand(4, b, generator=generator)
        probs = torch.tensor(
            [max(1.0 - cfg.joint_attention - cfg.f5 - cfg.all, 0.0), cfg.joint_attention, cfg.f5, cfg.all],
            dtype=torch.float64,
        )
        config = torch.multinomial(probs, b, replacement=True, generator=generator)
        flags = {name: u[i] < getattr(cfg, field) for i, (name, field) in enumerate(_COND_FIELDS)}
        flags.update(audio_sees_motion=on.clone(), motion_sees_audio=on.clone())
        for code in (CONFIG_JOINT, CONFIG_F5, CONFIG_ALL):
            chosen = config == code
            if bool(chosen.any()):
                flags = _apply_config(code, chosen, flags, a_hid, m_hid)
        return DropFlags(**{k: flags[k] for k in DropFlags._SWITCHES}, config=config)

    u = torch.rand(5, b, generator=generator)
    codes = (CONFIG_F5, CONFIG_TTS, CONFIG_ALL)
    rates = [getattr(cfg, CONFIG_MODES[c]) for c in codes]
    probs = torch.tensor([max(1.0 - sum(rates), 0.0), *rates], dtype=torch.float64)
    drawn = torch.multinomial(probs, b, replacement=True, generator=generator)  # 0: none, i: codes[i - 1]
    config = torch.tensor([CONFIG_NONE, *codes])[drawn]
    # c: the probability that this sample's configuration forces each drop (it depends on the hidden streams)
    base = {name: torch.zeros(b, dtype=torch.bool) for name, _ in _COND_FIELDS}
    base.update(audio_sees_motion=on.clone(), motion_sees_audio=on.clone())
    forced_p = {name: torch.zeros(b, dtype=torch.float64) for name in (*base, "joint")}
    for code, rate in zip(codes, rates, strict=True):
        if rate <= 0:
            continue
        forced = _config_flags(code, base, a_hid, m_hid)
        for name, _ in _COND_FIELDS:
            forced_p[name] += rate * forced[name].double()
        forced_p["joint"] += rate * (~forced["audio_sees_motion"] | ~forced["motion_sees_audio"]).double()

    def coin(row: int, p: float, c: Tensor) -> Tensor:
        rest = (1.0 - c).clamp(min=1e-12)
        return u[row].double() < ((p - c) / rest).clamp(0.0, 1.0)

    flags = {
        name: coin(i, getattr(cfg, field), forced_p[name]) for i, (name, field) in enumerate(_COND_FIELDS)
    }
    flags.update(audio_sees_motion=on.clone(), motion_sees_audio=on.clone())
    joint = coin(4, cfg.joint_attention, forced_p["joint"])
    flags = _apply_config(CONFIG_JOINT, joint, flags, a_hid, m_hid)
    for code in codes:
        chosen = config == code
        if bool(chosen.any()):
            flags = _apply_config(code, chosen, flags, a_hid, m_hid)
    config = torch.where((config == CONFIG_NONE) & joint, CONFIG_JOINT, config)
    return DropFlags(**{k: flags[k] for k in DropFlags._SWITCHES}, config=config)
