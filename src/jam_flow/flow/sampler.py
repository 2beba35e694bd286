"""ODE samplers for the joint flow (Euler, midpoint) with F5-TTS sway sampling and batched classifier-free guidance.

Dimension legend: b batch, n mel frames, c mel channels (100), m motion frames, dm mouth dims (12), dr rest dims (51),
nt text tokens. Masks mean **True = valid** (``audio_mask`` / ``motion_mask``); the ``*_known`` masks mean
**True = given** (kept exactly, never generated).

Convention (F5-TTS, paper eq. 1-3): ``x_0 ~ N(0, I)`` is noise, ``x_1`` is data, the network predicts the velocity
``x_1 - x_0`` and we integrate ``dx/dt = v(x, t)`` from t = 0 to t = 1.

* **Time grid**: ``steps + 1`` points of ``linspace(0, 1)`` warped by sway sampling (F5-TTS):
  ``t <- t + s * (cos(pi/2 t) - 1 + t)``; ``s = -1`` gives ``1 - cos(pi t / 2)`` (denser near t = 0).
* **NFE** counts network forward calls. A guided step evaluates the conditional and the unconditional branch in
  ONE batched forward (batch ``2b``), which counts as one evaluation, as in F5-TTS. Euler uses one evaluation per
  step (``steps = nfe``); midpoint uses two (``steps = nfe / 2``, so ``nfe`` must be even).
* **Classifier-free guidance**: the guided velocity per stream is ``v = v_cond + g * (v_cond - v_uncond)`` with
  ``g = audio_cfg`` for the mel and ``g = motion_cfg`` for the motion (both default to ``cfg``, gamma = 2 in the
  paper, appendix A). What the unconditional prediction drops is ``SamplerSettings.guidance``
  (:mod:`jam_flow.flow.guidance`): ``"joint"`` (default, the paper's: joint attention off for the generated
  branch(es), every other condition kept), ``"f5"`` (F5-TTS: reference mel + text of a generated audio stream,
  masked motion + e_rest of a generated motion stream) or ``"all"`` (everything dropped, both joint directions
  off). Without a motion stream ``"joint"`` has nothing to switch off and falls back to ``"f5"``;
  ``SampleOutput.guidance`` records the mode actually used. When every scale is 0 a single conditional pass is
  made (``SampleOutput.guidance`` is None).
* **Known regions** (inpainting): the ``cond`` inputs carry the given values (zeros elsewhere) during integration,
  and after the last step the given frames are overwritten with their values, so they come back bit-exact.
* **Fully given streams** (e.g. the motion in dubbing, the speech in audio-to-motion) are not integrated: their state
  is the given data at every step, their time input is 1 (``x_t`` at t = 1 *is* the data) and their velocity is
  ignored. The other stream is integrated as usual and attends to that clean data.
* **Text-embedding cache**: the text embedding (the ConvNeXt text encoder's output) depends on neither ``x_t`` nor
  ``t``, so it is computed once per sample for the whole integration (``model.text_features``, both guidance
  halves with their own ``drop_text``) and passed to every evaluation (``text_emb``); ``cache_text=False``
  recomputes it per step (identical result, checked by the tests).
* **Seeding**: noise is drawn on the CPU from a ``torch.Generator`` seeded with ``seed`` (audio noise first, then
  motion noise), then moved to the model's device, so a seed gives the same noise on every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from jam_flow.flow.guidance import GuidanceMode, check_guidance, unconditional_flags

__all__ = ["SamplerSettings", "JointConditions", "SampleOutput", "sway_time_grid", "sample"]


@dataclass(frozen=True)
class SamplerSettings:
    """How to integrate the flow.

    Args:
        nfe: network evaluations (Euler: steps = nfe; midpoint: steps = nfe / 2). Paper/F5-TTS: 32.
        method: ``"euler"`` (F5-TTS default) or ``"midpoint"`` (second order).
        sway_coef: F5-TTS sway sampling coefficient ``s``; ``None`` or 0 gives a uniform grid. Default -1.
        cfg: guidance scale gamma for both streams (paper appendix A: 2.0). 0 disables guidance.
        audio_cfg: guidance scale for the mel stream; ``None`` -> ``cfg``.
        motion_cfg: guidance scale for the motion stream; ``None`` -> ``cfg``.
        guidance: what the unconditional prediction drops (:mod:`jam_flow.flow.guidance`): ``"joint"`` (default,
            paper appendix A / D), ``"f5"`` (F5-TTS) or ``"all"`` (every condition; the old behaviour).
    """

    nfe: int = 32
    method: Literal["euler", "midpoint"] = "euler"
    sway_coef: float | None = -1.0
    cfg: float = 2.0
    audio_cfg: float | None = None
    motion_cfg: float | None = None
    guidance: GuidanceMode = "joint"

    def __post_init__(self) -> None:
        check_guidance(self.guidance)
        if self.method not in ("euler", "midpoint"):
            raise ValueError(f"method: expected 'euler' or 'midpoint', got {self.method!r}")
        if self.nfe < 1:
            raise ValueError(f"nfe: expected >= 1, got {self.nfe}")
        if self.method == "midpoint" and self.nfe % 2:
            raise ValueError(
                f"nfe: midpoint uses 2 evaluations per step, so nfe must be even, got {self.nfe}"
            )
        for name in ("cfg", "audio_cfg", "motion_cfg"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ValueError(f"{name}: expected a finite value >= 0, got {value}")

    @property
    def steps(self) -> int:
        return self.nfe if self.method == "euler" else self.nfe // 2

    @property
    def audio_scale(self) -> float:
        return self.cfg if self.audio_cfg is None else self.audio_cfg

    @property
    def motion_scale(self) -> float:
        return self.cfg if self.motion_cfg is None else self.motion_cfg


@dataclass
class JointConditions:
    """Everything the network is conditioned on, in model space (normalised where the model expects it).

    ``audio_cond`` / ``motion_cond`` hold the given values (anything where not known: they are zeroed here).
    ``motion_cond = None`` runs the audio branch alone (F5-TTS parity, plain TTS).
    """

    audio_cond: Tensor  # [b, n, c]
    audio_known: Tensor  # [b, n] bool, True = given
    text: Tensor  # [b, nt] int64, pad -1
    audio_mask: Tensor | None = None  # [b, n] bool, True = valid
    motion_cond: Tensor | None = None  # [b, m, dm]
    motion_known: Tensor | None = None  # [b, m] bool, True = given
    motion_rest: Tensor | None = None  # [b, m, dr]
    motion_mask: Tensor | None = None  # [b, m] bool, True = valid
    drop_text: bool = False  # no text at all (e.g. motion -> audio, paper case 4)
    drop_rest: bool = False  # no e_rest track given

    @property
    def has_motion(self) -> bool:
        return self.motion_cond is not None


@dataclass
class SampleOutput:
    audio: Tensor  # [b, n, c]   x at t = 1, given frames restored exactly
    motion: Tensor | None  # [b, m, dm] or None
    nfe: int  # network evaluations actually made
    guidance: str | None = None  # the guidance mode used ("joint" may fall back to "f5"); None: no guidance


def sway_time_grid(steps: int, sway_coef: float | None = -1.0, device=None, dtype=torch.float32) -> Tensor:
    """``[steps + 1]`` times from 0 to 1 (F5-TTS sway sampling; both end points stay exactly 0 and 1)."""
    t = torch.linspace(0.0, 1.0, steps + 1, device=device, dtype=dtype)
    if sway_coef:
        t = t + sway_coef * (torch.cos(torch.pi / 2 * t) - 1 + t)
        t[0], t[-1] = 0.0, 1.0  # cos(pi/2) is not exactly 0 in floating point
    return t


def _valid_known(known: Tensor, mask: Tensor | None) -> bool:
    """True when every valid frame of every item is given (the stream needs no integration)."""
    if mask is None:
        return bool(known.all())
    return bool((known | ~mask).all())


def _draw_noise(shape: tuple[int, ...], generator: torch.Generator | None, device, dtype) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


@torch.no_grad()
def sample(
    model: nn.Module | Callable[..., tuple[Tensor, Tensor | None]],
    cond: JointConditions,
    settings: SamplerSettings = SamplerSettings(),
    seed: int | None = None,
    generator: torch.Generator | None = None,
    cache_text: bool = True,
) -> SampleOutput:
    """Integrate the joint flow from noise to data; returns the final states with known frames restored.

    ``model`` has the ``JointDiT.forward`` interface (docs/CONVENTIONS.md). Pass either ``seed`` or a CPU
    ``generator`` (the generator wins); with neither, the global torch RNG is used. ``cache_text``: when ``model``
    has ``text_features`` (``JointDiT``, ``AudioDiT`` behind the joint interface), the text embedding is computed
    once for the whole integration and passed to every step as ``text_emb`` (it depends on neither the states nor
    the time; the conditional and unconditional halves keep their own ``drop_text``); the result is identical.
    """
    if generator is None and seed is not None:
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
    a_cond = cond.audio_cond
    b, n, c = a_cond.shape
    device, dtype = a_cond.device, a_cond.dtype
    a_known = cond.audio_known.to(device=device, dtype=torch.bool)
    a_data = torch.where(a_known[..., None], a_cond, torch.zeros_like(a_cond))
    a_fixed = _valid_known(a_known, cond.audio_mask)

    has_motion = cond.has_motion
    m_data = m_known = None
    m_fixed = False
    if has_motion:
        m_known = cond.motion_known
        if m_known is None:
            m_known = torch.zeros(cond.motion_cond.shape[:2], dtype=torch.bool, device=device)
        m_known = m_known.to(device=device, dtype=torch.bool)
        m_data = torch.where(m_known[..., None], cond.motion_cond, torch.zeros_like(cond.motion_cond))
        m_fixed = _valid_known(m_known, cond.motion_mask)
    if a_fixed and (not has_motion or m_fixed):
        # nothing to generate: every valid frame of every stream is given
        return SampleOutput(audio=a_data, motion=m_data, nfe=0)

    x_a = _draw_noise((b, n, c), generator, device, dtype)
    x_m = _draw_noise(tuple(m_data.shape), generator, device, dtype) if has_motion else None
    if a_fixed:
        x_a = a_data
    if m_fixed:
        x_m = m_data

    g_a = settings.audio_scale if not a_fixed else 0.0
    g_m = settings.motion_scale if (has_motion and not m_fixed) else 0.0
    guided = g_a > 0 or g_m > 0
    bb = 2 * b if guided else b

    def rep(x: Tensor | None) -> Tensor | None:
        if x is None or not guided:
            return x
        return torch.cat([x, x], dim=0)

    mode: str | None = None
    if guided:
        mode = settings.guidance
        if mode == "joint" and not has_motion:
            mode = "f5"  # no other stream to attend to: joint attention has nothing to switch off
    cond_flags = {
        "drop_audio_cond": False,
        "drop_text": cond.drop_text,
        "drop_motion_cond": False,
        "drop_rest": cond.drop_rest or cond.motion_rest is None,
        "audio_sees_motion": True,
        "motion_sees_audio": True,
    }
    cond_flags = {
        k: torch.full((b,), bool(v), dtype=torch.bool, device=device) for k, v in cond_flags.items()
    }
    switches = cond_flags
    if guided:  # the first b items are the conditional branch, the rest the unconditional one
        a_gen = torch.full((b,), not a_fixed, dtype=torch.bool, device=device)
        m_gen = torch.full((b,), has_motion and not m_fixed, dtype=torch.bool, device=device)
        uncond_flags = unconditional_flags(mode, cond_flags, a_gen, m_gen)
        switches = {k: torch.cat([cond_flags[k], uncond_flags[k]]) for k in cond_flags}

    text = rep(cond.text.to(device))
    audio_cond_in, audio_mask = rep(a_data), rep(cond.audio_mask)
    motion_cond_in, motion_rest, motion_mask = rep(m_data), rep(cond.motion_rest), rep(cond.motion_mask)
    evaluations = 0
    # the text embedding of every step, computed once (F5-TTS's cache=True): same text, mask and drop_text per item
    text_features = getattr(model, "text_features", None) if cache_text else None
    extra = {}
    if text_features is not None:
        extra["text_emb"] = text_features(text, n, audio_mask, switches["drop_text"])

    def velocity(xa: Tensor, xm: Tensor | None, t: float) -> tuple[Tensor, Tensor | None]:
        nonlocal evaluations
        evaluations += 1
        t_a = torch.full((bb,), 1.0 if a_fixed else t, device=device, dtype=dtype)
        t_m = torch.full((bb,), 1.0 if m_fixed else t, device=device, dtype=dtype)
        v_a, v_m = model(
            audio_x=rep(xa),
            audio_cond=audio_cond_in,
            text=text,
            time=t_a,
            motion_x=rep(xm),
            motion_cond=motion_cond_in,
            motion_rest=motion_rest,
            audio_mask=audio_mask,
            motion_mask=motion_mask,
            motion_time=t_m if has_motion else None,
            **switches,
            **extra,
        )
        if guided:
            va_c, va_u = v_a[:b], v_a[b:]
            v_a = va_c + g_a * (va_c - va_u)
            if v_m is not None:
                vm_c, vm_u = v_m[:b], v_m[b:]
                v_m = vm_c + g_m * (vm_c - vm_u)
        if a_fixed:
            v_a = torch.zeros_like(xa)
        if has_motion and (m_fixed or v_m is None):
            v_m = torch.zeros_like(xm)
        return v_a, v_m

    grid = sway_time_grid(settings.steps, settings.sway_coef, dtype=torch.float64).tolist()
    for t0, t1 in zip(grid[:-1], grid[1:], strict=True):
        dt = t1 - t0
        va, vm = velocity(x_a, x_m, t0)
        if settings.method == "midpoint":
            xa_mid = x_a + 0.5 * dt * va
            xm_mid = x_m + 0.5 * dt * vm if has_motion else None
            va, vm = velocity(xa_mid, xm_mid, t0 + 0.5 * dt)
        x_a = x_a + dt * va
        if has_motion:
            x_m = x_m + dt * vm

    # inpainting: given frames come back exactly (F5-TTS `where(cond_mask, cond, out)`)
    out_a = torch.where(a_known[..., None], a_data, x_a)
    out_m = torch.where(m_known[..., None], m_data, x_m) if has_motion else None
    return SampleOutput(audio=out_a, motion=out_m, nfe=evaluations, guidance=mode)
