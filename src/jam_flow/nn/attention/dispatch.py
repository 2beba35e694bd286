"""The public attention calls: build the batch's :class:`JointLayout`, resolve the backend, run it.

Dimension legend: b batch, h heads, d head dim, n audio frames, m motion frames, L frames of one stream.
Tensors are ``[b, h, L, d]``; lengths are ``[b]`` int (frames ``< len`` are valid); masks mean True = valid.
Paper: "JAM-Flow: Joint Audio-Motion Synthesis with Flow Matching", §4.4 and Algorithm 2.
"""

from __future__ import annotations

import torch
from torch import Tensor

from jam_flow.nn.attention.layout import JointLayout, check_window
from jam_flow.nn.attention.registry import resolve

__all__ = ["joint_attention", "joint_attention_in", "self_attention"]


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
    window_with_alpha: bool = True,
) -> tuple[Tensor, Tensor]:
    """Joint attention of the audio and motion streams; returns ``(out_a [b,h,n,d], out_m [b,h,m,d])``.

    ``window_with_alpha``: no motion window for samples with ``motion_sees_audio`` off (Algorithm 2 line 4);
    False keeps it (:class:`JointLayout`).

    Builds the layout on every call; a model with several joint layers builds it once per forward
    (:meth:`JointLayout.build`) and calls :func:`joint_attention_in`.
    """
    layout = JointLayout.build(
        audio_lens, motion_lens, q_a.shape[2], q_m.shape[2], window, audio_sees_motion, motion_sees_audio,
        sample_rate, hop_length, fps, device=q_a.device, window_with_alpha=window_with_alpha,
    )  # fmt: skip
    return joint_attention_in(layout, q_a, k_a, v_a, q_m, k_m, v_m, backend)


def joint_attention_in(
    layout: JointLayout,
    q_a: Tensor,
    k_a: Tensor,
    v_a: Tensor,
    q_m: Tensor,
    k_m: Tensor,
    v_m: Tensor,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Joint attention for a prepared ``layout`` (``n`` / ``m`` must be the queries' frame counts)."""
    return resolve(backend, q_a.device).joint(layout, q_a, k_a, v_a, q_m, k_m, v_m)


def self_attention(
    q: Tensor, k: Tensor, v: Tensor, lens: Tensor, window: int | None = None, backend: str = "auto"
) -> Tensor:
    """Self-attention of one stream with key padding (and an optional local window); ``[b, h, L, d]``."""
    check_window(window)
    return resolve(backend, q.device).single(q, k, v, torch.as_tensor(lens, device=q.device), window)
