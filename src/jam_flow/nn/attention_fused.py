"""``fused`` attention backend: exact JAM-Flow joint attention without any L x L mask (paper §4.4, Algorithm 2).

Dimension legend: b batch, h heads, d head dim, n audio frames, m motion frames, L frames of one stream.
Masks mean True = valid.

On CUDA (with Triton importable) the work goes to the Triton kernel of :mod:`jam_flow.nn.attention_triton`; on
the CPU to the exact decomposition of :mod:`jam_flow.nn.attention_cpu` (flash attention over the audio keys plus
the aligned motion key merged through log-sum-exp; blocked local windows for the motion queries). With
``window=None`` (masks off) both streams attend to every valid key of ``[audio; motion]`` through a key-padding
vector ``[b, 1, 1, n + m]`` (a vector, not an L x L mask).

The frame map ``f(i) = (i * hop * fps) // sr`` is evaluated in exact integers (the fraction reduced to
``num / den``, :func:`frame_ratio`); its inverse ``g(j) = ceil(j * den / num)`` is the first audio frame of motion
frame ``j`` (:func:`first_audio_frame`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from jam_flow.nn.attention_cpu import joint_attention_cpu, local_attention_cpu
from jam_flow.nn.masks import as_batch_flags, first_audio_frame, frame_of, frame_ratio, lengths_to_mask

__all__ = [
    "frame_ratio",
    "frame_of",
    "first_audio_frame",
    "joint_attention_fused",
    "self_attention_fused",
    "triton_available",
]


def triton_available() -> bool:
    """True when Triton can be imported (the CUDA kernel of the ``fused`` backend)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _use_triton(t: Tensor) -> bool:
    return t.is_cuda and triton_available()


def _padded_sdpa(q: Tensor, k: Tensor, v: Tensor, key_valid: Tensor, q_valid: Tensor) -> Tensor:
    """SDPA with a key-padding vector; samples without any valid key attend everywhere (rows zeroed after)."""
    key_valid = key_valid | ~key_valid.any(1, keepdim=True)
    all_valid = bool(key_valid.all())
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=None if all_valid else key_valid[:, None, None, :]
    )
    if bool(q_valid.all()):
        return out
    return out * q_valid[:, None, :, None].to(out.dtype)


def joint_attention_fused(
    q_a: Tensor,
    k_a: Tensor,
    v_a: Tensor,
    q_m: Tensor,
    k_m: Tensor,
    v_m: Tensor,
    audio_lens: Tensor,
    motion_lens: Tensor,
    window: int | None,
    audio_sees_motion: bool | Tensor = True,
    motion_sees_audio: bool | Tensor = True,
    sample_rate: int = 24000,
    hop_length: int = 256,
    fps: int = 25,
) -> tuple[Tensor, Tensor]:
    """Exact joint attention (same result as ``reference``) without an L x L mask; see the module docstring."""
    if _use_triton(q_a):
        from jam_flow.nn.attention_triton import joint_attention_triton

        return joint_attention_triton(
            q_a,
            k_a,
            v_a,
            q_m,
            k_m,
            v_m,
            audio_lens,
            motion_lens,
            window,
            audio_sees_motion,
            motion_sees_audio,
            sample_rate,
            hop_length,
            fps,
        )
    b, _, n, _ = q_a.shape
    m = q_m.shape[2]
    dev = q_a.device
    num, den = frame_ratio(sample_rate, hop_length, fps)
    audio_lens, motion_lens = audio_lens.to(dev), motion_lens.to(dev)
    a_sees = as_batch_flags(audio_sees_motion, b, dev)
    m_sees = as_batch_flags(motion_sees_audio, b, dev)
    if window is None:  # masks off: one key-padding vector per query stream
        a_valid = lengths_to_mask(audio_lens, n)
        m_valid = lengths_to_mask(motion_lens, m)
        keys_a = torch.cat([a_valid, m_valid & a_sees[:, None]], 1)
        keys_m = torch.cat([m_valid, a_valid & m_sees[:, None]], 1)
        out_a = _padded_sdpa(q_a, torch.cat([k_a, k_m], 2), torch.cat([v_a, v_m], 2), keys_a, a_valid)
        out_m = _padded_sdpa(q_m, torch.cat([k_m, k_a], 2), torch.cat([v_m, v_a], 2), keys_m, m_valid)
        return out_a, out_m
    if window < 0:
        raise ValueError(f"window must be >= 0 or None, got {window}")
    return joint_attention_cpu(
        q_a, k_a, v_a, q_m, k_m, v_m, audio_lens, motion_lens, window, a_sees, m_sees, num, den
    )


def self_attention_fused(q: Tensor, k: Tensor, v: Tensor, lens: Tensor, window: int | None = None) -> Tensor:
    """One stream with key padding (a ``[b, 1, 1, L]`` vector) and an optional local window (blocked)."""
    if _use_triton(q):
        from jam_flow.nn.attention_triton import self_attention_triton

        return self_attention_triton(q, k, v, lens, window)
    L = q.shape[2]
    lens = lens.to(q.device)
    valid = lengths_to_mask(lens, L)
    if window is None or window >= L - 1:
        return _padded_sdpa(q, k, v, valid, valid)
    if window < 0:
        raise ValueError(f"window must be >= 0 or None, got {window}")
    return local_attention_cpu(q, k, v, lens, window)
