"""Motion-DiT: generates the mouth expression ``e_mouth`` (paper §3.1, §4.2) with the Audio-DiT's block design.

Dimension legend: b batch, m motion frames (25 / s), c model width, k mouth keypoints (4), h heads, d head dim.
Motion tensors are flattened per frame: ``e_mouth`` ``[b, m, 3k]`` (12), ``e_rest`` ``[b, m, 3 (21 - k)]`` (51),
both normalised with dataset statistics outside the network. Masks mean True = valid (prefix masks).
``drop_*`` are a Python bool or a ``[b]`` bool tensor.

Data flow: time embedding -> ``proj([x, cond, rest, audio_feats])`` plus a convolutional position embedding ->
``depth`` adaLN-Zero DiT blocks -> final adaLN -> ``proj_out`` to ``3k``. Self-attention is local
(``|j - j'| <= window``, paper §4.4) only where ``motion_window_layers`` says: ``"joint"`` (default) windows the
motion queries only inside joint attention (Algorithm 2 step 4: the mask M is empty where alpha = 0), so this
standalone branch, and every non-joint layer of a JointDiT, attends globally over the valid frames; ``"all"``
windows every layer (the behaviour of checkpoints written before the key existed). ``audio_feats`` (``audio_feat_dim > 0``) are stage-1 per-frame audio features already
on the motion clock (e.g. a resampled mel or wav2vec2-style features computed elsewhere; paper §4.5 stage 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from jam_flow.errors import InputError
from jam_flow.features import DEFAULT_MOUTH_INDICES, MotionSettings
from jam_flow.models.branch import DiTBranch
from jam_flow.models.validation import (
    as_time,
    check_backend,
    check_flag,
    check_frames,
    check_mask,
    constructor_args,
)
from jam_flow.nn.embeddings import MotionInputEmbedding, TimestepEmbedding
from jam_flow.nn.modules import (
    AdaLayerNormFinal,
    check_dit_sizes,
    dit_blocks,
)
from jam_flow.nn.rope import RotaryEmbedding

__all__ = ["MotionDiT", "MotionState"]


@dataclass
class MotionState:
    """The motion stream between the embedding and the head: ``h`` ``[b, m, c]``, ``t`` ``[b, c]``,
    ``mask`` ``[b, m]`` or None, ``lens`` ``[b]`` valid lengths (padded frames never act as keys)."""

    h: Tensor
    t: Tensor
    mask: Tensor | None
    lens: Tensor


class MotionDiT(DiTBranch):
    """Flow network for ``e_mouth`` conditioned on the masked ``e_mouth``, ``e_rest`` and optional audio features.

    Args: ``dim`` / ``depth`` / ``heads`` / ``dim_head`` / ``dropout`` / ``ff_mult`` / ``qk_norm`` as in
    :class:`~jam_flow.models.AudioDiT` (defaults: the paper's 1024 / 22 / 16 / 64 / 0.1, ff_mult 2 as F5TTS_v1);
    ``mouth_indices`` / ``num_keypoints`` the LivePortrait keypoints generated (see
    :class:`jam_flow.features.MotionSettings`; they set ``motion_dim = 3 len(mouth_indices)`` and
    ``rest_dim = 3 (num_keypoints - len(mouth_indices))``); ``audio_feat_dim`` width of the per-frame stage-1
    audio features (0: none); ``conv_pos_kernel`` kernel of the convolutional position embedding (9 frames =
    0.36 s, about F5-TTS's 31 mel frames); ``pe_attn_head`` heads that get RoPE (None: all; in a JointDiT it
    must equal the audio branch's, so that a head treats positions alike in both streams); ``window`` local
    attention half-width in frames (None: global); ``motion_window_layers`` ``"joint"`` (the window only inside
    joint attention, paper Algorithm 2; standalone: no layer is windowed) or ``"all"`` (every self-attention
    layer windowed; old checkpoints); ``checkpoint_activations``; ``attention_backend`` a
    :mod:`jam_flow.nn.attention` backend name.
    """

    def __init__(
        self,
        *,
        dim: int = 1024,
        depth: int = 22,
        heads: int = 16,
        dim_head: int = 64,
        dropout: float = 0.1,
        ff_mult: float = 2,
        mouth_indices: Sequence[int] = DEFAULT_MOUTH_INDICES,
        num_keypoints: int = 21,
        audio_feat_dim: int = 0,
        conv_pos_kernel: int = 9,
        qk_norm: Literal["rms_norm"] | None = None,
        pe_attn_head: int | None = None,
        window: int | None = 4,
        motion_window_layers: Literal["joint", "all"] = "joint",
        checkpoint_activations: bool = False,
        attention_backend: str = "auto",
    ) -> None:
        super().__init__()
        try:
            settings = MotionSettings(num_kp=num_keypoints, mouth_indices=tuple(mouth_indices))
        except ValueError as err:
            raise InputError(f"MotionDiT: {err}") from err
        check_backend("MotionDiT", attention_backend)
        check_dit_sizes("MotionDiT", dim, depth, heads, dim_head)
        if window is not None and window < 0:
            raise InputError(f"MotionDiT: window must be >= 0 frames or None (global), got {window}")
        if motion_window_layers not in ("joint", "all"):
            raise InputError(
                f"MotionDiT: motion_window_layers must be 'joint' or 'all', got {motion_window_layers!r}"
            )
        if audio_feat_dim < 0:
            raise InputError(f"MotionDiT: audio_feat_dim must be >= 0, got {audio_feat_dim}")
        self.init_args = constructor_args(MotionDiT.__init__, locals())
        self.init_args["mouth_indices"] = list(settings.mouth_indices)
        self.dim, self.depth, self.heads, self.dim_head = dim, depth, heads, dim_head
        self.mouth_indices: tuple[int, ...] = settings.mouth_indices
        self.rest_indices: tuple[int, ...] = settings.rest_indices
        self.motion_dim, self.rest_dim = settings.mouth_dim, settings.rest_dim
        self.audio_feat_dim = audio_feat_dim
        self.window = window
        self.motion_window_layers = motion_window_layers
        # the window of the self-attention layers run here (JointDiT runs its joint layers itself)
        self.self_attention_window = window if motion_window_layers == "all" else None
        self.checkpoint_activations = checkpoint_activations
        self.attention_backend = attention_backend

        self.time_embed = TimestepEmbedding(dim)
        self.input_embed = MotionInputEmbedding(
            self.motion_dim, self.rest_dim, audio_feat_dim, dim, conv_kernel_size=conv_pos_kernel
        )
        self.rotary_embed = RotaryEmbedding(dim_head)
        self.transformer_blocks = dit_blocks(
            depth, dim, heads, dim_head, ff_mult, dropout, qk_norm, pe_attn_head
        )
        self.norm_out = AdaLayerNormFinal(dim)
        self.proj_out = nn.Linear(dim, self.motion_dim)
        self.initialize_weights()

    # -- stages (shared with JointDiT) ------------------------------------------------------------------------------
    def embed(
        self,
        x: Tensor,
        cond: Tensor | None,
        rest: Tensor | None,
        time: float | Tensor,
        mask: Tensor | None = None,
        audio_feats: Tensor | None = None,
        drop_motion_cond: bool | Tensor = False,
        drop_rest: bool | Tensor = False,
        drop_audio_feats: bool | Tensor = False,
        arg_names: tuple[str, str, str, str, str] = ("x", "cond", "rest", "time", "mask"),
    ) -> MotionState:
        """Validate the inputs and build the stream state; ``cond`` / ``rest`` None mean zeros (nothing known)."""
        nx, ncond, nrest, ntime, nmask = arg_names
        check_frames(nx, x, None, None, self.motion_dim)
        b, m = x.shape[:2]
        cond = x.new_zeros(b, m, self.motion_dim) if cond is None else cond
        rest = x.new_zeros(b, m, self.rest_dim) if rest is None else rest
        check_frames(ncond, cond, b, m, self.motion_dim)
        check_frames(nrest, rest, b, m, self.rest_dim)
        if audio_feats is not None:
            if self.audio_feat_dim == 0:
                raise InputError(
                    "audio_feats: this Motion-DiT was built with audio_feat_dim=0 (no audio features)"
                )
            check_frames("audio_feats", audio_feats, b, m, self.audio_feat_dim)
        lens = check_mask(nmask, mask, b, m)
        for name, flag in (
            ("drop_motion_cond", drop_motion_cond),
            ("drop_rest", drop_rest),
            ("drop_audio_feats", drop_audio_feats),
        ):
            check_flag(name, flag, b)
        t = self.time_embed(as_time(ntime, time, b, x))
        h = self.input_embed(x, cond, rest, audio_feats, drop_motion_cond, drop_rest, drop_audio_feats, mask)
        if lens is None:
            lens = torch.full((b,), m, dtype=torch.long, device=x.device)
        return MotionState(h, t, mask, lens)

    def key_lens(self, s: MotionState) -> Tensor:
        """Self-attention over the valid motion frames (windowed with ``motion_window_layers`` ``"all"``, global
        with ``"joint"``: these layers have no joint attention, alpha = 0); padded frames are never keys."""
        return s.lens

    def head(self, s: MotionState) -> Tensor:
        return self.proj_out(self.norm_out(s.h, s.t))

    def forward(
        self,
        x: Tensor,
        cond: Tensor | None,
        rest: Tensor | None,
        time: float | Tensor,
        mask: Tensor | None = None,
        audio_feats: Tensor | None = None,
        drop_motion_cond: bool | Tensor = False,
        drop_rest: bool | Tensor = False,
        drop_audio_feats: bool | Tensor = False,
    ) -> Tensor:
        """Predicted flow ``[b, m, motion_dim]`` for noisy ``e_mouth`` ``x``, masked ``e_mouth`` ``cond``,
        ``e_rest`` ``rest``, flow time ``[b]`` or scalar, valid-frame ``mask`` ``[b, m]`` and optional
        per-frame ``audio_feats`` ``[b, m, audio_feat_dim]`` (None: zeros, the same as dropping them)."""
        s = self.embed(x, cond, rest, time, mask, audio_feats, drop_motion_cond, drop_rest, drop_audio_feats)
        return self.head(self.run_blocks(s))
