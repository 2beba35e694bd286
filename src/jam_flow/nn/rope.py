"""Rotary position embeddings (RoPE) and JAM-Flow's cross-modal position alignment (paper §4.3).

Dimension legend: b batch, h heads, d head dim, L frames of one stream, n audio (mel) frames, m motion frames.
Lengths are ``[b]`` int (frames ``< len`` are valid); masks mean True = valid.

Rotation (as x-transformers / F5-TTS, so that pretrained F5-TTS weights see identical numbers): a head vector
is split into interleaved pairs ``(x[2j], x[2j+1])`` (GPT-J pairing), pair ``j`` is rotated by the angle
``position * inv_freq[j]`` with ``inv_freq[j] = base ** (-2j / d)``; the whole head width is rotated and, when
``rotary_heads`` is set (F5's ``pe_attn_head``), only the first that many heads are.

Alignment (paper §4.3): the angle of position ``p`` in a stream of valid length ``L`` is
``phi(p, j) = p * (L_ref / L) * inv_freq[j]`` with ``L_ref = max(L_a, L_m)``, computed *per sample* from the
valid lengths so that padding never moves a valid token. An audio frame (93.75 / s) and a motion frame (25 / s)
at the same instant then get (nearly) the same angle. Modes:

- ``"length"``: the paper's rule above;
- ``"rate"``: audio keeps integer positions, motion frame ``j`` sits at ``j * (sample_rate / hop) / fps``
  (exactly 3.75 j at the defaults): the same alignment from the configured clocks instead of the lengths;
- ``"off"``: plain integer positions per stream (ablation "without RoPE alignment").

With motion absent, ``L_ref = L_a`` and the audio scale is exactly 1.0, so the audio angles are exactly F5-TTS's
integer-position angles.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from jam_flow.errors import InputError

__all__ = ["RotaryEmbedding", "RopeAlignment", "aligned_positions", "apply_rope", "rotate_pairs"]

RopeAlignment = Literal["length", "rate", "off"]


class RotaryEmbedding(nn.Module):
    """Holds ``inv_freq`` ``[d / 2]`` (a persistent buffer, as in F5-TTS checkpoints) and turns positions into angles."""

    inv_freq: Tensor

    def __init__(self, dim_head: int, base: int = 10000) -> None:
        super().__init__()
        if dim_head % 2:
            raise InputError(f"dim_head must be even for rotary embeddings, got {dim_head}")
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim_head, 2).float() / dim_head)))

    def angles(self, positions: Tensor) -> Tensor:
        """Positions ``[L]`` or ``[b, L]`` (int or float) -> angles ``[1 or b, L, d]``, each frequency repeated
        in place (``[f0, f0, f1, f1, ...]``) to match the interleaved pairing."""
        pos = positions.to(device=self.inv_freq.device, dtype=torch.float32)
        if pos.ndim == 1:
            pos = pos[None]
        freqs = pos[..., None] * self.inv_freq.float()  # [b, L, d/2]
        return freqs.repeat_interleave(2, dim=-1)

    def forward(self, positions: Tensor) -> Tensor:
        return self.angles(positions)


def rotate_pairs(x: Tensor) -> Tensor:
    """Interleaved rotation by 90 degrees: ``(x[2j], x[2j+1]) -> (-x[2j+1], x[2j])``."""
    pairs = x.unflatten(-1, (-1, 2))
    first, second = pairs.unbind(-1)
    return torch.stack((-second, first), dim=-1).flatten(-2)


def apply_rope(x: Tensor, angles: Tensor, rotary_heads: int | None = None) -> Tensor:
    """Rotate ``x`` ``[b, h, L, d]`` by ``angles`` ``[1 or b, L, d]``; only heads ``[0, rotary_heads)`` if given.

    Computed in float32 and cast back to ``x``'s dtype (as x-transformers does under autocast).
    """
    if angles.shape[-2] != x.shape[-2] or angles.shape[-1] != x.shape[-1]:
        raise ValueError(f"rope angles {tuple(angles.shape)} do not fit a tensor {tuple(x.shape)}")
    if rotary_heads is not None and rotary_heads < x.shape[1]:
        return torch.cat([apply_rope(x[:, :rotary_heads], angles), x[:, rotary_heads:]], dim=1)
    cos, sin = angles.cos()[:, None], angles.sin()[:, None]  # [b, 1, L, d]
    return (x * cos + rotate_pairs(x) * sin).to(x.dtype)


def aligned_positions(
    audio_lens: Tensor,
    motion_lens: Tensor,
    n: int,
    m: int,
    mode: RopeAlignment = "length",
    rate_ratio: float = 3.75,
) -> tuple[Tensor, Tensor]:
    """Per-sample RoPE positions of both streams: ``(pos_a [b, n], pos_m [b, m])`` float32.

    ``audio_lens`` / ``motion_lens`` are the valid lengths ``[b]``; ``rate_ratio`` is audio frames per motion
    frame (``(sample_rate / hop) / fps``), used by ``mode="rate"``. A zero length counts as one (no division by 0).
    """
    device = audio_lens.device
    b = audio_lens.shape[0]
    pa = torch.arange(n, device=device, dtype=torch.float32)[None].expand(b, n)
    pm = torch.arange(m, device=device, dtype=torch.float32)[None].expand(b, m)
    if mode == "off":
        return pa, pm
    if mode == "rate":
        return pa, pm * float(rate_ratio)
    if mode != "length":
        raise ValueError(f"rope alignment must be 'length', 'rate' or 'off', got {mode!r}")
    la = audio_lens.to(device=device, dtype=torch.float32).clamp(min=1.0)
    lm = motion_lens.to(device=device, dtype=torch.float32).clamp(min=1.0)
    l_ref = torch.maximum(la, lm)
    # paper §4.3: phi(p) = p / L * L_ref; written as p * (L_ref / L) so that the longer stream keeps exact integers
    return pa * (l_ref / la)[:, None], pm * (l_ref / lm)[:, None]
