"""Conditional flow matching objective for the joint audio-motion network (paper eq. 1-4).

Dimension legend: b batch, n mel frames, c mel channels (100), m motion frames, dm mouth dims (12),
dr rest dims (51), nt text tokens. Validity masks are **True = valid**; generation masks (``audio_gen``,
``motion_gen``, from :mod:`jam_flow.flow.masking`) are **True = to generate**.

Per stream (F5-TTS convention): ``x0 ~ N(0, I)`` is noise, ``x1`` the data,
``x_t = (1 - t) x0 + t x1`` and the regression target is the velocity ``x1 - x0``. The conditioning input of a
stream is ``x1`` with the frames to generate zeroed (``ã^masked`` / ``ẽ^masked``). Each stream's loss is the mean
squared error over the elements of frames that are both generated and valid; ``L = L_audio + L_motion`` (eq. 4).

A stream that is *not hidden* for a sample (scenario ``MOTION_ONLY`` / ``AUDIO_ONLY``) is given to the network as
clean data at time 1 (``x_1`` *is* the data), exactly what the ODE sampler (:mod:`jam_flow.flow.sampler`) feeds for
a fully given stream at inference; its loss weight is 0.

Time sampling: ``"uniform"`` (F5-TTS, default) or ``"logit_normal"`` (``sigmoid(N(mu, s))``, SD3-style). With
``shared_time=True`` (default) both hidden streams of a sample get the same ``t``: the joint sampler integrates
both streams on one time grid, so shared times train exactly the noise-level pairs met at inference; independent
times (``shared_time=False``) spend capacity on mismatched pairs that are never queried.

The network is an argument, never an attribute: ``net`` is anything with the ``JointDiT.forward`` interface
(docs/CONVENTIONS.md); stage-1 adapters in :mod:`jam_flow.models.stages` present Audio-DiT / Motion-DiT that way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from jam_flow.flow.masking import DropFlags, TrainingMasks

__all__ = [
    "FlowBatch",
    "FlowLoss",
    "FlowObjective",
    "sample_time",
    "interpolate",
    "masked_mse",
    "masked_input",
]


@dataclass
class FlowBatch:
    """Clean training data in model space (motion normalised, mel as the network expects it)."""

    audio: Tensor  # [b, n, c] x1 mel
    audio_mask: Tensor  # [b, n] bool, True = valid
    text: Tensor  # [b, nt] int64, pad -1
    motion: Tensor | None = None  # [b, m, dm] x1 e_mouth
    motion_rest: Tensor | None = None  # [b, m, dr]
    motion_mask: Tensor | None = None  # [b, m] bool, True = valid
    audio_feats: Tensor | None = (
        None  # [b, m, d] stage-1 audio features on the motion grid (wav2vec2), or None
    )


@dataclass
class FlowLoss:
    """Loss terms (scalars) plus what was sampled, for logging and tests."""

    total: Tensor
    audio: Tensor
    motion: Tensor
    audio_frames: int  # supervised (generated & valid) audio frames in the batch
    motion_frames: int
    time_audio: Tensor  # [b]
    time_motion: Tensor  # [b]
    pred_audio: Tensor | None = None  # [b, n, c]
    pred_motion: Tensor | None = None  # [b, m, dm]


def sample_time(
    b: int,
    mode: Literal["uniform", "logit_normal"] = "uniform",
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``[b]`` float32 flow times in [0, 1) (uniform) or (0, 1) (logit-normal), drawn on the CPU."""
    if mode == "uniform":
        return torch.rand(b, generator=generator)
    if mode == "logit_normal":
        return torch.sigmoid(torch.randn(b, generator=generator) * std + mean)
    raise ValueError(f"time_sampling: expected 'uniform' or 'logit_normal', got {mode!r}")


def interpolate(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """``x_t = (1 - t) x0 + t x1`` with ``t [b]`` broadcast over the frame and channel axes (eq. 1)."""
    t = t.to(x1.dtype).view(-1, *([1] * (x1.dim() - 1)))
    return (1 - t) * x0 + t * x1


def masked_input(x1: Tensor, gen: Tensor) -> Tensor:
    """The conditioning input: ``x1`` where given, zeros on the frames to generate (``gen`` True)."""
    return torch.where(gen[..., None], torch.zeros_like(x1), x1)


def masked_mse(pred: Tensor, target: Tensor, region: Tensor) -> tuple[Tensor, int]:
    """Mean squared error over the elements of frames where ``region [b, L]`` is True, and the frame count.

    An empty region gives ``0 * pred.sum()`` so the graph (and DDP's gradient buckets) stays connected."""
    frames = int(region.sum())
    if frames == 0:
        return pred.sum() * 0.0, 0
    diff = (pred.float() - target.float()) ** 2
    weight = region[..., None].to(diff.dtype)
    return (diff * weight).sum() / (frames * pred.shape[-1]), frames


class FlowObjective:
    """Inpainting conditional flow matching for one batch (paper eq. 1-4).

    Args:
        time_sampling: ``"uniform"`` (default, F5-TTS) or ``"logit_normal"``.
        logit_normal_mean: mean of the normal before the sigmoid.
        logit_normal_std: std of the normal before the sigmoid.
        shared_time: one ``t`` per sample for both streams (default) or an independent ``t`` per stream.
    """

    def __init__(
        self,
        time_sampling: Literal["uniform", "logit_normal"] = "uniform",
        logit_normal_mean: float = 0.0,
        logit_normal_std: float = 1.0,
        shared_time: bool = True,
    ) -> None:
        if time_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"time_sampling: expected 'uniform' or 'logit_normal', got {time_sampling!r}")
        if logit_normal_std <= 0:
            raise ValueError(f"logit_normal_std: expected > 0, got {logit_normal_std}")
        self.time_sampling = time_sampling
        self.logit_normal_mean = logit_normal_mean
        self.logit_normal_std = logit_normal_std
        self.shared_time = shared_time

    def sample_times(self, b: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(t_audio [b], t_motion [b])`` on the CPU. Both are always drawn (a fixed number of draws)."""
        t_a = sample_time(b, self.time_sampling, self.logit_normal_mean, self.logit_normal_std, generator)
        t_m = sample_time(b, self.time_sampling, self.logit_normal_mean, self.logit_normal_std, generator)
        return t_a, (t_a.clone() if self.shared_time else t_m)

    def __call__(
        self,
        net: Callable[..., tuple[Tensor, Tensor | None]],
        batch: FlowBatch,
        masks: TrainingMasks,
        drops: DropFlags,
        generator: torch.Generator | None = None,
    ) -> FlowLoss:
        """Noise, interpolate, run ``net`` once and return the per-stream losses.

        Random draws (CPU ``generator``): times, then audio noise, then motion noise."""
        device = batch.audio.device
        b = batch.audio.shape[0]
        has_motion = batch.motion is not None
        t_a, t_m = self.sample_times(b, generator)
        t_a, t_m = t_a.to(device), t_m.to(device)
        audio_gen = masks.audio_gen.to(device) & batch.audio_mask
        audio_hidden = masks.audio_hidden.to(device)
        # a stream that is not hidden is clean data at t = 1 (what the sampler feeds for a given stream)
        t_a = torch.where(audio_hidden, t_a, torch.ones_like(t_a))
        x0_a = torch.randn(batch.audio.shape, generator=generator).to(device=device, dtype=batch.audio.dtype)
        xt_a = interpolate(x0_a, batch.audio, t_a)
        target_a = batch.audio - x0_a
        kwargs: dict = {
            "audio_x": xt_a,
            "audio_cond": masked_input(batch.audio, audio_gen),
            "text": batch.text,
            "time": t_a,
            "audio_mask": batch.audio_mask,
        }
        motion_gen = target_m = None
        if has_motion:
            assert masks.motion_gen is not None and batch.motion_mask is not None
            motion_gen = masks.motion_gen.to(device) & batch.motion_mask
            motion_hidden = masks.motion_hidden.to(device)
            t_m = torch.where(motion_hidden, t_m, torch.ones_like(t_m))
            x0_m = torch.randn(batch.motion.shape, generator=generator).to(
                device=device, dtype=batch.motion.dtype
            )
            target_m = batch.motion - x0_m
            kwargs.update(
                motion_x=interpolate(x0_m, batch.motion, t_m),
                motion_cond=masked_input(batch.motion, motion_gen),
                motion_rest=batch.motion_rest,
                motion_mask=batch.motion_mask,
                motion_time=t_m,
            )
            if batch.audio_feats is not None:
                kwargs["motion_audio_feats"] = batch.audio_feats
        kwargs.update(drops.to(device).network_kwargs())
        v_a, v_m = net(**kwargs)
        if v_a is not None:
            loss_a, frames_a = masked_mse(v_a, target_a, audio_gen)
        else:
            loss_a, frames_a = torch.zeros((), device=device), 0
        if has_motion and v_m is not None:
            loss_m, frames_m = masked_mse(v_m, target_m, motion_gen)
        else:
            loss_m, frames_m = torch.zeros((), device=device), 0
        return FlowLoss(
            total=loss_a + loss_m,
            audio=loss_a,
            motion=loss_m,
            audio_frames=frames_a,
            motion_frames=frames_m,
            time_audio=t_a,
            time_motion=t_m,
            pred_audio=v_a,
            pred_motion=v_m,
        )
