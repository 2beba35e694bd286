"""JAM-Flow joint attention (paper §4.4, Algorithm 2) and masked self-attention, with interchangeable backends.

Dimension legend: b batch, h heads, d head dim, n audio frames, m motion frames, L frames of one stream.
Tensors are ``[b, h, L, d]``; lengths are ``[b]`` int (frames ``< len`` are valid); masks mean True = valid.

Backends (all numerically equivalent; see ``docs/attention.md``):

- ``reference``: builds the dense boolean masks of :mod:`jam_flow.nn.masks` and calls
  ``scaled_dot_product_attention`` over the concatenated keys, exactly as Algorithm 2 reads.
- ``fused`` (:mod:`jam_flow.nn.attention_fused`, :mod:`jam_flow.nn.attention_triton`): the project's kernel; a
  Triton FlashAttention-2 kernel computing the mask from frame indices on CUDA, an exact decomposition (flash
  attention + log-sum-exp merge + blocked local windows) on the CPU.
- ``flex`` (:mod:`jam_flow.nn.attention_flex`): ``torch.nn.attention.flex_attention`` with a ``BlockMask`` built
  from the same rules (CUDA; forward only on the CPU).
- ``auto`` picks the fastest exact one for the device (:func:`resolve_backend`).

Guarantees of every backend: padded query rows return zeros, padded keys get no weight, nothing is NaN (also for
a sample whose length is 0).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from jam_flow.nn.attention_flex import flex_available, joint_attention_flex, self_attention_flex
from jam_flow.nn.attention_fused import joint_attention_fused, self_attention_fused, triton_available
from jam_flow.nn.masks import joint_attention_masks, lengths_to_mask, local_window_mask

__all__ = ["joint_attention", "self_attention", "BACKENDS", "SELF_BACKENDS", "resolve_backend"]

JointFn = Callable[..., tuple[Tensor, Tensor]]
SelfFn = Callable[..., Tensor]


def _masked_sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, q_valid: Tensor) -> Tensor:
    """SDPA with a ``[b, Lq, Lk]`` bool mask; padded query rows attend everywhere (no NaN) and are then zeroed."""
    mask = mask | ~q_valid[:, :, None]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
    return out * q_valid[:, None, :, None].to(out.dtype)


def joint_attention_reference(
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
    """Algorithm 2 with dense masks: audio queries over ``[k_a; k_m]``, motion queries over ``[k_m; k_a]``."""
    n, m = q_a.shape[2], q_m.shape[2]
    mask_a, mask_m = joint_attention_masks(
        audio_lens,
        motion_lens,
        n,
        m,
        window,
        audio_sees_motion,
        motion_sees_audio,
        sample_rate,
        hop_length,
        fps,
    )
    out_a = _masked_sdpa(
        q_a, torch.cat([k_a, k_m], 2), torch.cat([v_a, v_m], 2), mask_a, lengths_to_mask(audio_lens, n)
    )
    out_m = _masked_sdpa(
        q_m, torch.cat([k_m, k_a], 2), torch.cat([v_m, v_a], 2), mask_m, lengths_to_mask(motion_lens, m)
    )
    return out_a, out_m


def self_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, lens: Tensor, window: int | None = None
) -> Tensor:
    """One stream: key-padding mask, plus a local band ``|i - j| <= window`` when ``window`` is given."""
    L = q.shape[2]
    return _masked_sdpa(q, k, v, local_window_mask(lens, L, window), lengths_to_mask(lens, L))


BACKENDS: dict[str, JointFn] = {
    "reference": joint_attention_reference,
    "fused": joint_attention_fused,
    "flex": joint_attention_flex,
}
SELF_BACKENDS: dict[str, SelfFn] = {
    "reference": self_attention_reference,
    "fused": self_attention_fused,
    "flex": self_attention_flex,
}


def resolve_backend(backend: str, device: torch.device | str, table: dict | None = None) -> str:
    """Map ``auto`` to the fastest exact backend available for ``device``; validate explicit names.

    ``auto``: on the CPU ``fused`` (the exact decomposition; ``flex`` has no CPU backward, so it is never
    chosen there); on CUDA ``fused`` (the Triton kernel) when Triton imports, else ``flex`` when
    FlexAttention is available, else ``reference``.
    """
    table = BACKENDS if table is None else table
    if backend == "auto":
        if torch.device(device).type != "cuda":
            return "fused"
        if triton_available():
            return "fused"
        return "flex" if flex_available() else "reference"
    if backend not in table:
        raise ValueError(f"attention backend must be one of {sorted([*table, 'auto'])}, got {backend!r}")
    return backend


def joint_attention(
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
    backend: str = "auto",
    sample_rate: int = 24000,
    hop_length: int = 256,
    fps: int = 25,
) -> tuple[Tensor, Tensor]:
    """Joint attention of the audio and motion streams; returns ``(out_a [b,h,n,d], out_m [b,h,m,d])``."""
    name = resolve_backend(backend, q_a.device)
    return BACKENDS[name](
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


def self_attention(
    q: Tensor, k: Tensor, v: Tensor, lens: Tensor, window: int | None = None, backend: str = "auto"
) -> Tensor:
    """Self-attention of one stream with key padding (and an optional local window); ``[b, h, L, d]``."""
    name = resolve_backend(backend, q.device, SELF_BACKENDS)
    return SELF_BACKENDS[name](q, k, v, lens, window)
