"""Scalar sync signals and their correlation: the speech-energy envelope at the motion frame rate, masked
Pearson correlation, and correlation as a function of lag.

Dimension legend: b batch (clips), n mel frames (93.75 / s), c mel channels (100), m motion frames (25 / s),
l lags (``2 * max_lag + 1``). Masks are bool, True = valid, everywhere.

The envelope is computed from the log-mel that the models produce, on the motion clock, through the exact
integer frame mapping of ``jam_flow.features.audio_to_motion_frame``: motion frame ``j`` averages the per-frame
log-energy of every audio frame ``i`` with ``audio_to_motion_frame(i) == j`` (3 or 4 mel frames per motion
frame at 24 kHz / hop 256 / 25 fps). The log-energy of a mel frame is ``log(sum_c exp(2 * mel[c]))`` (the log of
its mel power), so silence sits near the log clamp and speech rises well above it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from jam_flow.errors import InputError
from jam_flow.features import MelSettings, MotionSettings, audio_to_motion_frame

__all__ = [
    "frame_log_energy",
    "speech_envelope",
    "masked_pearson",
    "lagged_pearson",
    "best_lag",
    "crop_pair",
]


def frame_log_energy(mel: Tensor) -> Tensor:
    """Log mel power per audio frame: ``[b, n, c]`` natural-log mel -> ``[b, n]``."""
    if mel.dim() != 3:
        raise InputError(f"mel: expected [batch, frames, channels], got shape {tuple(mel.shape)}")
    return torch.logsumexp(2.0 * mel.float(), dim=-1)


def speech_envelope(
    mel: Tensor,
    audio_mask: Tensor | None = None,
    mel_settings: MelSettings = MelSettings(),
    motion_settings: MotionSettings = MotionSettings(),
) -> tuple[Tensor, Tensor]:
    """Speech-energy envelope on the motion clock.

    ``mel [b, n, c]`` (natural-log mel), ``audio_mask [b, n]`` -> ``(envelope [b, m], mask [b, m])`` with
    ``m = audio_to_motion_frame(n - 1) + 1``. A motion frame is valid when at least one valid audio frame falls
    in it; its value is the mean log-energy of those frames.
    """
    b, n, _ = mel.shape
    if audio_mask is None:
        audio_mask = torch.ones(b, n, dtype=torch.bool, device=mel.device)
    if audio_mask.shape != (b, n):
        raise InputError(f"audio_mask: expected shape {(b, n)} to match mel, got {tuple(audio_mask.shape)}")
    energy = frame_log_energy(mel)  # [b, n]
    frame_of = audio_to_motion_frame(
        torch.arange(n, device=mel.device),
        sample_rate=mel_settings.sample_rate,
        hop_length=mel_settings.hop_length,
        fps=motion_settings.fps,
    )  # [n] motion frame of each audio frame
    m = int(frame_of[-1].item()) + 1 if n > 0 else 0
    weight = audio_mask.float()
    index = frame_of.unsqueeze(0).expand(b, n)
    total = torch.zeros(b, m, device=mel.device).scatter_add_(1, index, energy * weight)
    count = torch.zeros(b, m, device=mel.device).scatter_add_(1, index, weight)
    valid = count > 0
    envelope = torch.where(valid, total / count.clamp_min(1.0), torch.zeros_like(total))
    return envelope, valid


def crop_pair(x: Tensor, y: Tensor, x_mask: Tensor, y_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Crop two ``[b, t]`` signals (and masks) to their common length; returns ``(x, y, mask)``."""
    t = min(x.shape[1], y.shape[1])
    return x[:, :t], y[:, :t], x_mask[:, :t] & y_mask[:, :t]


def masked_pearson(
    x: Tensor, y: Tensor, mask: Tensor | None = None, min_frames: int = 2
) -> tuple[Tensor, Tensor]:
    """Per-row Pearson correlation of ``x [b, t]`` and ``y [b, t]`` over the valid frames.

    Returns ``(corr [b], defined [b] bool)``. A row with fewer than ``min_frames`` valid frames is undefined
    (``defined`` False, corr 0). A row where either signal is constant has correlation 0 (defined): a model
    that never moves the mouth has no correlation with speech.
    """
    if x.shape != y.shape or x.dim() != 2:
        raise InputError(
            f"pearson: expected two [batch, frames] signals of equal shape, got {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )
    if mask is None:
        mask = torch.ones_like(x, dtype=torch.bool)
    x, y, w = x.double(), y.double(), mask.double()
    count = w.sum(dim=1)
    denom = count.clamp_min(1.0)
    mx = (x * w).sum(1) / denom
    my = (y * w).sum(1) / denom
    dx = (x - mx[:, None]) * w
    dy = (y - my[:, None]) * w
    cov = (dx * dy).sum(1)
    vx = (dx * dx).sum(1)
    vy = (dy * dy).sum(1)
    scale = torch.sqrt(vx * vy)
    eps = 1e-12
    corr = torch.where(scale > eps, cov / scale.clamp_min(eps), torch.zeros_like(cov))
    defined = count >= min_frames
    corr = torch.where(defined, corr, torch.zeros_like(corr))
    return corr.float().clamp(-1.0, 1.0), defined


def lagged_pearson(
    x: Tensor, y: Tensor, mask_x: Tensor, mask_y: Tensor, max_lag: int, min_frames: int = 2
) -> tuple[Tensor, Tensor]:
    """Correlation of ``x[j + lag]`` with ``y[j]`` for every lag in ``[-max_lag, max_lag]``.

    ``x, y [b, t]`` with masks ``[b, t]`` -> ``(corr [b, l], defined [b, l])``, lag ``k - max_lag`` at column
    ``k``. A positive best lag means ``x`` follows ``y`` (e.g. the mouth opens ``lag`` frames after the sound).
    """
    if max_lag < 0:
        raise InputError(f"max_lag: expected a non-negative number of frames, got {max_lag}")
    b, t = x.shape
    pad = max_lag
    xp = torch.nn.functional.pad(x, (pad, pad))
    mp = torch.nn.functional.pad(mask_x, (pad, pad), value=False)
    shifted_x = torch.stack([xp[:, pad + lag : pad + lag + t] for lag in range(-max_lag, max_lag + 1)], 1)
    shifted_m = torch.stack([mp[:, pad + lag : pad + lag + t] for lag in range(-max_lag, max_lag + 1)], 1)
    nl = 2 * max_lag + 1
    yy = y.unsqueeze(1).expand(b, nl, t)
    mm = shifted_m & mask_y.unsqueeze(1)
    corr, defined = masked_pearson(
        shifted_x.reshape(b * nl, t), yy.reshape(b * nl, t), mm.reshape(b * nl, t), min_frames=min_frames
    )
    return corr.view(b, nl), defined.view(b, nl)


def best_lag(corr: Tensor, defined: Tensor, max_lag: int) -> Tensor:
    """Lag (``[b]`` int64) of the highest defined correlation per row; ties go to the smallest ``|lag|``."""
    lags = torch.arange(-max_lag, max_lag + 1, device=corr.device)
    # a tiny penalty on |lag| breaks exact ties toward 0 without moving real maxima
    score = torch.where(
        defined, corr.double() - 1e-9 * lags.abs().double(), torch.full_like(corr, -3.0).double()
    )
    return lags[score.argmax(dim=1)]
