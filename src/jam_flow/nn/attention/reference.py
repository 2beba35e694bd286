"""``reference`` attention: the dense boolean masks of :mod:`jam_flow.nn.masks` and SDPA over the concatenated keys,
exactly as Algorithm 2 reads (paper §4.4). Every other implementation is tested against this one.

Dimension legend: b batch, h heads, d head dim, n audio frames, m motion frames, L frames of one stream.
Masks mean True = valid / may attend.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from jam_flow.nn.attention.layout import JointLayout
from jam_flow.nn.masks import joint_masks_at_ratio, lengths_to_mask, local_window_mask

__all__ = ["joint", "single"]


def _masked_sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, q_valid: Tensor) -> Tensor:
    """SDPA with a ``[b, Lq, Lk]`` bool mask; padded query rows attend everywhere (no NaN) and are then zeroed."""
    mask = mask | ~q_valid[:, :, None]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
    return out * q_valid[:, None, :, None].to(out.dtype)


def joint(
    layout: JointLayout, q_a: Tensor, k_a: Tensor, v_a: Tensor, q_m: Tensor, k_m: Tensor, v_m: Tensor
) -> tuple[Tensor, Tensor]:
    """Algorithm 2 with dense masks: audio queries over ``[k_a; k_m]``, motion queries over ``[k_m; k_a]``."""
    lay = layout
    mask_a, mask_m = joint_masks_at_ratio(
        lay.audio_lens, lay.motion_lens, lay.n, lay.m, lay.window, lay.audio_sees_motion, lay.motion_sees_audio,
        lay.num, lay.den, lay.window_with_alpha,
    )  # fmt: skip
    a_valid, m_valid = lengths_to_mask(lay.audio_lens, lay.n), lengths_to_mask(lay.motion_lens, lay.m)
    out_a = _masked_sdpa(q_a, torch.cat([k_a, k_m], 2), torch.cat([v_a, v_m], 2), mask_a, a_valid)
    out_m = _masked_sdpa(q_m, torch.cat([k_m, k_a], 2), torch.cat([v_m, v_a], 2), mask_m, m_valid)
    return out_a, out_m


def single(q: Tensor, k: Tensor, v: Tensor, lens: Tensor, window: int | None) -> Tensor:
    """One stream: key-padding mask, plus a local band ``|i - j| <= window`` when ``window`` is given."""
    L = q.shape[2]
    return _masked_sdpa(q, k, v, local_window_mask(lens, L, window), lengths_to_mask(lens, L))
