"""Classifier-free guidance modes: which inputs the *unconditional* prediction of a guided step drops.

Dimension legend: b batch. Switches are ``[b]`` bool tensors with the meaning of ``JointDiT.forward``'s arguments
(``drop_*`` True = that condition is dropped; ``audio_sees_motion`` / ``motion_sees_audio`` True = the branch's
joint attention is on, the paper's alpha_1 / alpha_2 of Algorithms 1-2). Masks elsewhere mean True = valid.

One function, :func:`unconditional_flags`, turns the switches of the conditional prediction into those of the
unconditional one. The ODE sampler (:mod:`jam_flow.flow.sampler`) calls it for the unconditional half of every
guided batch, and training (:func:`jam_flow.flow.masking.sample_dropout`) calls it on the samples that draw that
mode's configuration, so training draws exactly the unconditional inputs that sampling uses, at a stated rate.

Modes (``generated`` = the streams the sampler integrates, or the streams hidden in a training sample):

* ``"joint"`` (default; paper appendix A: "we apply a 10% dropout on joint-attention conditioning to create paired
  conditional and unconditional predictions", appendix D / Algorithm 2: joint attention switched per branch,
  "e.g. for classifier-free guidance"): the joint attention of each generated branch is off (alpha = 0), every
  other condition stays as in the conditional prediction. Guidance then strengthens exactly the cross-modal
  conditioning. With no other stream to attend to (plain TTS, an audio-only model) the sampler falls back to
  ``"f5"`` and says so in :attr:`SampleOutput.guidance <jam_flow.flow.sampler.SampleOutput>`.
* ``"f5"`` (F5-TTS's CFG, applied per stream): a generated audio stream loses its reference mel and the text
  together (F5-TTS trains this with ``cond_drop_prob`` 0.2); a generated motion stream loses the masked motion and
  e_rest together. Joint attention stays on.
* ``"all"`` (the behaviour before guidance modes existed, kept for comparison): every condition is dropped and both
  joint-attention directions are off, whatever is generated.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["GUIDANCE_MODES", "GuidanceMode", "FLAG_NAMES", "unconditional_flags", "check_guidance"]

GuidanceMode = Literal["joint", "f5", "all"]
GUIDANCE_MODES: tuple[str, ...] = ("joint", "f5", "all")
FLAG_NAMES: tuple[str, ...] = (
    "drop_audio_cond",
    "drop_text",
    "drop_motion_cond",
    "drop_rest",
    "audio_sees_motion",
    "motion_sees_audio",
)


def check_guidance(mode: str, where: str = "guidance") -> str:
    if mode not in GUIDANCE_MODES:
        raise ValueError(f"{where}: expected one of {list(GUIDANCE_MODES)}, got {mode!r}")
    return mode


def unconditional_flags(
    mode: str, flags: dict[str, Tensor], audio_generated: Tensor, motion_generated: Tensor
) -> dict[str, Tensor]:
    """The switches of the unconditional prediction for ``mode`` (see the module docstring).

    ``flags`` holds the conditional switches (every name of :data:`FLAG_NAMES`, ``[b]`` bool); ``audio_generated``
    / ``motion_generated`` are ``[b]`` bool. Returns new tensors; ``flags`` is not modified."""
    check_guidance(mode)
    out = {name: flags[name].clone() for name in FLAG_NAMES}
    a, m = audio_generated.to(torch.bool), motion_generated.to(torch.bool)
    if mode == "joint":
        out["audio_sees_motion"] &= ~a
        out["motion_sees_audio"] &= ~m
    elif mode == "f5":
        out["drop_audio_cond"] |= a
        out["drop_text"] |= a
        out["drop_motion_cond"] |= m
        out["drop_rest"] |= m
    else:  # "all"
        for name in ("drop_audio_cond", "drop_text", "drop_motion_cond", "drop_rest"):
            out[name] = torch.ones_like(out[name])
        for name in ("audio_sees_motion", "motion_sees_audio"):
            out[name] = torch.zeros_like(out[name])
    return out
