"""Attention masks of JAM-Flow's joint attention (paper §4.4, Algorithm 2), as plain dense boolean tensors.

Dimension legend: b batch, n audio (mel) frames, m motion frames.
Masks mean True = valid / may attend, everywhere.

The dense masks here are the *reference* definition that every fast attention backend must reproduce:

- audio -> audio: every valid audio key (global self-attention);
- audio -> motion: only the motion frame at the same instant, ``audio_to_motion_frame(i)``;
- motion -> motion: valid motion keys with ``|j - j'| <= window`` while the motion branch's joint attention is on
  (alpha_2 = 1); every valid motion key when it is off (Algorithm 2 line 4: M_2 = empty set when alpha_2 = 0);
- motion -> audio: valid audio keys ``i`` with ``|audio_to_motion_frame(i) - j| <= window``.

``window=None`` switches the structural masks off ("No Masking" ablation, Table 4): every valid key of either
stream may be attended; only padding is masked. The per-sample switches ``audio_sees_motion`` /
``motion_sees_audio`` remove the cross-modal blocks (joint-conditioning dropout for CFG, appendix A);
``motion_sees_audio`` off also lifts the motion window unless ``window_with_alpha=False`` (the masks of
checkpoints trained before Algorithm 2 line 4 was followed: the window stays).
"""

from __future__ import annotations

import torch
from torch import Tensor

from jam_flow.features import frame_of, frame_ratio

__all__ = [
    "lengths_to_mask",
    "as_batch_flags",
    "local_window_mask",
    "joint_attention_masks",
    "joint_masks_at_ratio",
]


def lengths_to_mask(lens: Tensor, max_len: int | None = None) -> Tensor:
    """``[b]`` int lengths -> ``[b, max_len]`` bool, True at positions ``< len``."""
    lens = torch.as_tensor(lens)
    if max_len is None:
        max_len = int(lens.max().item()) if lens.numel() else 0
    return torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]


def as_batch_flags(flag: bool | Tensor, batch: int, device: torch.device | str) -> Tensor:
    """A bool or a ``[b]`` bool tensor -> a ``[b]`` bool tensor on ``device``."""
    if isinstance(flag, Tensor):
        if flag.shape != (batch,):
            raise ValueError(f"per-sample switch must have shape [{batch}], got {tuple(flag.shape)}")
        return flag.to(device=device, dtype=torch.bool)
    return torch.full((batch,), bool(flag), dtype=torch.bool, device=device)


def local_window_mask(lens: Tensor, m: int, window: int | None) -> Tensor:
    """Motion self-attention mask ``[b, m, m]``: valid keys within ``|j - j'| <= window`` (None: all valid keys)."""
    key_valid = lengths_to_mask(lens, m)[:, None, :]
    if window is None:
        return key_valid.expand(-1, m, -1)
    pos = torch.arange(m, device=key_valid.device)
    band = (pos[:, None] - pos[None, :]).abs() <= window
    return key_valid & band[None]


def joint_attention_masks(
    audio_lens: Tensor,
    motion_lens: Tensor,
    n: int,
    m: int,
    window: int | None,
    audio_sees_motion: bool | Tensor = True,
    motion_sees_audio: bool | Tensor = True,
    sample_rate: int = 24000,
    hop_length: int = 256,
    fps: int = 25,
    window_with_alpha: bool = True,
) -> tuple[Tensor, Tensor]:
    """Dense joint masks at the given rates; see :func:`joint_masks_at_ratio`."""
    num, den = frame_ratio(sample_rate, hop_length, fps)
    return joint_masks_at_ratio(
        audio_lens,
        motion_lens,
        n,
        m,
        window,
        audio_sees_motion,
        motion_sees_audio,
        num,
        den,
        window_with_alpha,
    )


def joint_masks_at_ratio(
    audio_lens: Tensor,
    motion_lens: Tensor,
    n: int,
    m: int,
    window: int | None,
    audio_sees_motion: bool | Tensor,
    motion_sees_audio: bool | Tensor,
    num: int,
    den: int,
    window_with_alpha: bool = True,
) -> tuple[Tensor, Tensor]:
    """Dense joint masks, frame map ``f(i) = (i * num) // den``.

    ``window_with_alpha``: the motion -> motion window applies only to samples whose ``motion_sees_audio`` is on
    (Algorithm 2 line 4); False keeps it for every sample.

    Returns ``mask_a [b, n, n + m]`` (audio queries over keys ``[audio; motion]``) and
    ``mask_m [b, m, m + n]`` (motion queries over keys ``[motion; audio]``), the key orders of Algorithm 2.
    Rows of padded queries are left as computed (the attention functions zero those outputs).
    """
    device = audio_lens.device
    b = audio_lens.shape[0]
    a_valid = lengths_to_mask(audio_lens, n)  # [b, n]
    m_valid = lengths_to_mask(motion_lens, m)  # [b, m]
    a_sees = as_batch_flags(audio_sees_motion, b, device)[:, None, None]
    m_sees = as_batch_flags(motion_sees_audio, b, device)[:, None, None]

    a2m_frame = frame_of(torch.arange(n, device=device), num, den)  # [n]
    j = torch.arange(m, device=device)
    if window is None:
        a2m = torch.ones(n, m, dtype=torch.bool, device=device)
        m2a = torch.ones(m, n, dtype=torch.bool, device=device)
    else:
        a2m = a2m_frame[:, None] == j[None, :]  # [n, m]: the aligned motion frame only
        m2a = (a2m_frame[None, :] - j[:, None]).abs() <= window  # [m, n]: audio inside the window
    a2a = a_valid[:, None, :].expand(-1, n, -1)
    a2m = a2m[None] & m_valid[:, None, :] & a_sees
    m2m = local_window_mask(motion_lens, m, window)
    if window is not None and window_with_alpha:  # alpha_2 = 0: M_2 is empty, every valid motion key
        m2m = m2m | (m_valid[:, None, :] & ~m_sees)
    m2a = m2a[None] & a_valid[:, None, :] & m_sees
    return torch.cat([a2a, a2m], dim=2), torch.cat([m2m, m2a], dim=2)
