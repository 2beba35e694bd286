"""JointDiT: the Audio-DiT and the Motion-DiT coupled by joint attention in selected layers (paper §4.1-4.4,
appendix A and D, Algorithms 1-2).

Dimension legend: b batch, n mel frames (93.75 / s), m motion frames (25 / s), nt text tokens, c width,
h heads, d head dim. Masks mean True = valid (prefix masks). Switches (``drop_*``, ``audio_sees_motion``,
``motion_sees_audio``) are a Python bool or a ``[b]`` bool tensor.

Layer ``i`` of the audio branch pairs with layer ``i`` of the motion branch. In a *joint* layer (Algorithm 1)
each branch computes its own adaLN modulation, q/k/v projections and RoPE, then one joint attention call
(Algorithm 2, :func:`jam_flow.nn.attention.joint_attention`) lets audio queries attend to ``[audio; motion]``
keys and motion queries to ``[motion; audio]`` keys under the §4.4 masks; each branch then applies its own output
projection, gated residual and feed-forward. The audio rows of that attention that land on motion keys are
``f_motion`` and the motion rows that land on audio keys are ``f_audio`` (paper eq. 2-3): the cross-modal
conditioning features arise inside the joint attention rather than as separate tensors. Other layers run each
branch alone with global self-attention over the valid frames: Algorithm 2 step 4 builds the local-window mask
only where alpha = 1 (``motion_window_layers="joint"``, default); ``"all"`` also windows the motion self-attention
of the non-joint layers (the behaviour of checkpoints written before the key existed, which load with it). In a
joint layer a sample whose motion joint switch is off (alpha_2 = 0: the 10 % joint-attention dropout, the
unconditional pass of ``--guidance joint``) also loses the motion window (Algorithm 2 line 4: M_2 is empty),
so its motion attends every valid motion frame (``motion_window_with_alpha=True``, default); ``False`` keeps the
window there (checkpoints written before the key existed load with it).

RoPE positions of both streams are aligned per sample (paper §4.3, :mod:`jam_flow.nn.rope`) in every layer; with
motion absent the model is exactly :class:`~jam_flow.models.AudioDiT`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from jam_flow.errors import InputError
from jam_flow.models.audio_dit import AudioDiT, AudioState
from jam_flow.models.configs import AudioDiTConfig, MotionDiTConfig
from jam_flow.models.motion_dit import MotionDiT, MotionState
from jam_flow.models.validation import check_backend, check_flag, check_frames
from jam_flow.nn.attention import JointLayout, joint_attention_in
from jam_flow.nn.rope import RopeAlignment, aligned_positions

__all__ = ["JointDiT", "resolve_joint_layers"]

JointLayers = Literal["half", "full", "none"] | list[int]


def _as_config(name: str, value: Any, cls: type) -> Any:
    """A config dataclass from itself or from a mapping; unknown or missing keys raise InputError."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise InputError(f"JointDiT: {name}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        try:
            return cls(**value)
        except TypeError as err:
            raise InputError(f"JointDiT: {name}: {err}") from err
    raise InputError(f"JointDiT: {name}: expected a {cls.__name__} or a mapping, got {type(value).__name__}")


def resolve_joint_layers(spec: JointLayers, audio_depth: int, motion_depth: int) -> tuple[int, ...]:
    """Layer indices with joint attention: ``"half"`` the first ``min(depths) // 2`` (paper: 11 of 22),
    ``"full"`` all ``min(depths)``, ``"none"`` none, or an explicit list (each index must exist in both branches)."""
    both = min(audio_depth, motion_depth)
    if isinstance(spec, str):
        table = {"half": range(both // 2), "full": range(both), "none": range(0)}
        if spec not in table:
            raise InputError(
                f"JointDiT: joint_layers must be 'half', 'full', 'none' or a list of ints, got {spec!r}"
            )
        return tuple(table[spec])
    layers = [int(i) for i in spec]
    bad = [i for i in layers if not 0 <= i < both]
    if bad:
        raise InputError(
            f"JointDiT: joint_layers {bad} do not exist in both branches (audio depth {audio_depth}, "
            f"motion depth {motion_depth}: valid indices are 0..{both - 1})"
        )
    if len(set(layers)) != len(layers):
        raise InputError(f"JointDiT: joint_layers has duplicates: {layers}")
    return tuple(sorted(layers))


class JointDiT(nn.Module):
    """Joint audio-motion flow network (paper Figure 3).

    Args:
        audio: the Audio-DiT architecture (``AudioDiTConfig`` or a mapping of its fields; F5-TTS's DiT args).
        motion: the Motion-DiT architecture (``MotionDiTConfig`` or a mapping of its fields).
        joint_layers: ``"half"`` (default, paper's Half Joint), ``"full"``, ``"none"`` or a list of layer indices.
        window: motion local attention half-width in motion frames (paper §4.4); 4 frames = +-160 ms. ``None``
            switches the structural masks off ("No Masking" ablation: full joint attention, global motion
            self-attention; only padding stays masked).
        motion_window_layers: ``"joint"`` (default, Algorithm 2: the window only inside joint attention) or
            ``"all"`` (also in the motion self-attention of the non-joint layers; old checkpoints).
        motion_window_with_alpha: True (default, Algorithm 2 line 4): a joint layer's motion window holds only for
            samples whose ``motion_sees_audio`` is on; False: also when it is off (old checkpoints).
        rope_alignment: ``"length"`` (paper §4.3), ``"rate"`` (from the configured clocks) or ``"off"`` (ablation).
        attention_backend: a :mod:`jam_flow.nn.attention` backend name, used by both branches.
        sample_rate, hop_length, fps: the clocks that map audio frame ``i`` to motion frame
            ``(i * hop * fps) // sample_rate`` (masks) and set the ``"rate"`` alignment.
    """

    def __init__(
        self,
        audio: AudioDiTConfig,
        motion: MotionDiTConfig,
        joint_layers: JointLayers = "half",
        window: int | None = 4,
        motion_window_layers: Literal["joint", "all"] = "joint",
        motion_window_with_alpha: bool = True,
        rope_alignment: RopeAlignment = "length",
        attention_backend: str = "auto",
        sample_rate: int = 24000,
        hop_length: int = 256,
        fps: int = 25,
    ) -> None:
        super().__init__()
        audio_cfg = _as_config("audio", audio, AudioDiTConfig)
        motion_cfg = _as_config("motion", motion, MotionDiTConfig)
        if rope_alignment not in ("length", "rate", "off"):
            raise InputError(
                f"JointDiT: rope_alignment must be 'length', 'rate' or 'off', got {rope_alignment!r}"
            )
        if audio_cfg.heads != motion_cfg.heads or audio_cfg.dim_head != motion_cfg.dim_head:
            raise InputError(
                "JointDiT: joint attention needs the same heads and dim_head in both branches, got audio "
                f"{audio_cfg.heads} x {audio_cfg.dim_head} and motion {motion_cfg.heads} x {motion_cfg.dim_head}"
            )
        if audio_cfg.pe_attn_head != motion_cfg.pe_attn_head:
            raise InputError(
                "JointDiT: pe_attn_head (heads with RoPE) must be the same in both branches, got audio "
                f"{audio_cfg.pe_attn_head} and motion {motion_cfg.pe_attn_head}"
            )
        check_backend("JointDiT", attention_backend, joint=True)
        for name, value in (("sample_rate", sample_rate), ("hop_length", hop_length), ("fps", fps)):
            if value <= 0:
                raise InputError(f"JointDiT: {name} must be positive, got {value}")
        self.audio = AudioDiT(**asdict(audio_cfg), attention_backend=attention_backend)
        self.motion = MotionDiT(
            **asdict(motion_cfg),
            window=window,
            motion_window_layers=motion_window_layers,
            attention_backend=attention_backend,
        )
        self.joint_layers = resolve_joint_layers(joint_layers, audio_cfg.depth, motion_cfg.depth)
        self.window = window
        self.motion_window_with_alpha = bool(motion_window_with_alpha)
        self.rope_alignment = rope_alignment
        self.attention_backend = attention_backend
        self.sample_rate, self.hop_length, self.fps = sample_rate, hop_length, fps
        self.rate_ratio = sample_rate / hop_length / fps  # audio frames per motion frame (3.75)
        motion_dict = asdict(motion_cfg)
        motion_dict["mouth_indices"] = list(motion_cfg.mouth_indices)
        self.init_args: dict[str, Any] = {
            "audio": asdict(audio_cfg),
            "motion": motion_dict,
            "joint_layers": joint_layers if isinstance(joint_layers, str) else list(self.joint_layers),
            "window": window,
            "motion_window_layers": motion_window_layers,
            "motion_window_with_alpha": bool(motion_window_with_alpha),
            "rope_alignment": rope_alignment,
            "attention_backend": attention_backend,
            "sample_rate": sample_rate,
            "hop_length": hop_length,
            "fps": fps,
        }

    def text_features(
        self, text: Tensor, n: int, audio_mask: Tensor | None = None, drop_text: bool | Tensor = False
    ) -> Tensor:
        """The audio branch's text embedding ``[b, n, ct]`` (:meth:`AudioDiT.text_features`): independent of the
        noisy inputs and the flow time, so a sampler computes it once and passes ``text_emb=`` to every step."""
        return self.audio.text_features(text, n, audio_mask, drop_text)

    @property
    def checkpoint_activations(self) -> bool:
        """Joint layers are recomputed in backward when either branch checkpoints its activations."""
        return self.audio.checkpoint_activations or self.motion.checkpoint_activations

    def joint_layout(
        self,
        sa: AudioState,
        sm: MotionState,
        audio_sees_motion: bool | Tensor,
        motion_sees_audio: bool | Tensor,
    ) -> JointLayout:
        """The batch's joint-attention layout (lengths, window, switches, clocks), shared by every joint layer."""
        n, m = sa.h.shape[1], sm.h.shape[1]
        return JointLayout.build(
            sa.key_lens, sm.lens, n, m, self.window, audio_sees_motion, motion_sees_audio,
            self.sample_rate, self.hop_length, self.fps, device=sa.h.device,
            window_with_alpha=self.motion_window_with_alpha,
        )  # fmt: skip

    def joint_block(
        self,
        i: int,
        ha: Tensor,
        hm: Tensor,
        sa: AudioState,
        sm: MotionState,
        rope_a: Tensor,
        rope_m: Tensor,
        audio_sees_motion: bool | Tensor = True,
        motion_sees_audio: bool | Tensor = True,
        layout: JointLayout | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Algorithm 1 for layer ``i``: per-branch adaLN and projections around one joint attention.

        ``layout``: the batch's joint layout, built once per forward (None: built here from the switches)."""
        if layout is None:
            layout = self.joint_layout(sa, sm, audio_sees_motion, motion_sees_audio)
        block_a, block_m = self.audio.transformer_blocks[i], self.motion.transformer_blocks[i]
        xa, mod_a = block_a.modulate(ha, sa.t)
        xm, mod_m = block_m.modulate(hm, sm.t)
        qa, ka, va = block_a.attn.qkv(xa, rope_a)
        qm, km, vm = block_m.attn.qkv(xm, rope_m)
        oa, om = joint_attention_in(layout, qa, ka, va, qm, km, vm, self.attention_backend)
        return block_a.finish(ha, oa, mod_a, sa.mask), block_m.finish(hm, om, mod_m, sm.mask)

    def forward(
        self,
        audio_x: Tensor,
        audio_cond: Tensor,
        text: Tensor,
        time: float | Tensor,
        motion_x: Tensor | None = None,
        motion_cond: Tensor | None = None,
        motion_rest: Tensor | None = None,
        audio_mask: Tensor | None = None,
        motion_mask: Tensor | None = None,
        motion_time: float | Tensor | None = None,
        drop_audio_cond: bool | Tensor = False,
        drop_text: bool | Tensor = False,
        drop_motion_cond: bool | Tensor = False,
        drop_rest: bool | Tensor = False,
        audio_sees_motion: bool | Tensor = True,
        motion_sees_audio: bool | Tensor = True,
        motion_audio_feats: Tensor | None = None,
        text_emb: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Flows ``(v_audio [b, n, mel_dim], v_motion [b, m, 3k] or None)``; see ``docs/CONVENTIONS.md``.

        ``motion_x=None``: audio only, exactly ``AudioDiT``. ``motion_cond`` / ``motion_rest`` None mean zeros.
        ``motion_audio_feats`` feeds a motion branch built with ``audio_feat_dim > 0`` (stage 1; None = zeros).
        ``text_emb``: :meth:`text_features` of the same text, audio mask and ``drop_text`` (the sampler computes it
        once per sample; None: computed here).
        """
        if motion_x is None:
            given = [
                name
                for name, v in (
                    ("motion_cond", motion_cond),
                    ("motion_rest", motion_rest),
                    ("motion_mask", motion_mask),
                    ("motion_audio_feats", motion_audio_feats),
                )
                if v is not None
            ]
            if given:
                raise InputError(f"{', '.join(given)}: given without motion_x (pass motion_x to use motion)")
            v_audio = self.audio(
                audio_x, audio_cond, text, time, audio_mask, drop_audio_cond, drop_text, text_emb
            )
            return v_audio, None

        sa = self.audio.embed(
            audio_x, audio_cond, text, time, audio_mask, drop_audio_cond, drop_text,
            arg_names=("audio_x", "audio_cond", "text", "time", "audio_mask"), text_emb=text_emb,
        )  # fmt: skip
        check_frames("motion_x", motion_x, audio_x.shape[0], None, self.motion.motion_dim)
        sm = self.motion.embed(
            motion_x, motion_cond, motion_rest, time if motion_time is None else motion_time, motion_mask,
            motion_audio_feats, drop_motion_cond, drop_rest, False,
            arg_names=("motion_x", "motion_cond", "motion_rest", "motion_time", "motion_mask"),
        )  # fmt: skip
        (b, n), m = audio_x.shape[:2], motion_x.shape[1]
        check_flag("audio_sees_motion", audio_sees_motion, b)
        check_flag("motion_sees_audio", motion_sees_audio, b)

        # paper §4.3: without joint layers the streams never meet, so each keeps its standalone positions
        mode = self.rope_alignment if self.joint_layers else "off"
        pos_a, pos_m = aligned_positions(sa.lens, sm.lens, n, m, mode, self.rate_ratio)
        rope_a, rope_m = self.audio.rope(pos_a), self.motion.rope(pos_m)
        layout = self.joint_layout(sa, sm, audio_sees_motion, motion_sees_audio)  # once per forward
        joint = set(self.joint_layers)
        for i in range(max(self.audio.depth, self.motion.depth)):
            if i in joint:
                args = (i, sa.h, sm.h, sa, sm, rope_a, rope_m, audio_sees_motion, motion_sees_audio, layout)
                if self.checkpoint_activations and torch.is_grad_enabled():
                    sa.h, sm.h = checkpoint(self.joint_block, *args, use_reentrant=False)
                else:
                    sa.h, sm.h = self.joint_block(*args)
                continue
            if i < self.audio.depth:
                sa.h = self.audio.run_block(i, sa, rope_a)
            if i < self.motion.depth:
                sm.h = self.motion.run_block(i, sm, rope_m)
        return self.audio.head(sa), self.motion.head(sm)
