"""Typed branch configurations of :class:`~jam_flow.models.JointDiT` and named model sizes.

Dimension legend: c model width (``dim``), h heads, d head dim (``dim_head``).

``AudioDiTConfig`` / ``MotionDiTConfig`` carry the constructor arguments of :class:`~jam_flow.models.AudioDiT` /
:class:`~jam_flow.models.MotionDiT` (minus ``attention_backend`` and the motion ``window``, which
:class:`~jam_flow.models.JointDiT` sets once for both branches); jsonargparse builds them from nested YAML
mappings. ``tiny_joint_config()`` / ``paper_joint_config()`` return plain (JSON / YAML-serialisable) keyword
dicts: ``JointDiT(**tiny_joint_config())``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from jam_flow.features import DEFAULT_MOUTH_INDICES

__all__ = [
    "AudioDiTConfig",
    "MotionDiTConfig",
    "tiny_joint_config",
    "paper_joint_config",
    "F5TTS_VOCAB_SIZE",
    "BUNDLED_VOCAB_SIZE",
    "LEGACY_INIT_ARGS",
    "with_legacy_defaults",
    "SIZE_INIT_ARGS",
]

F5TTS_VOCAB_SIZE = 2545  # tokens in F5-TTS's bundled vocab.txt (the pretrained text embedding has 2546 rows)
# tokens in jam_flow/assets/vocab.txt (``len(jam_flow.data.text.Vocab.default())``, checked by a test); a constant
# because the models layer does not import ``jam_flow.data`` (docs/CONVENTIONS.md "Layers")
BUNDLED_VOCAB_SIZE = 102


@dataclass(frozen=True)
class AudioDiTConfig:
    """Architecture of the audio branch: F5-TTS DiT's arguments, names and defaults (see ``AudioDiT``)."""

    dim: int
    depth: int = 8
    heads: int = 8
    dim_head: int = 64
    dropout: float = 0.1
    ff_mult: float = 4
    mel_dim: int = 100
    text_num_embeds: int = 256
    text_dim: int | None = None
    text_mask_padding: bool = True
    text_embedding_average_upsampling: bool = False
    qk_norm: Literal["rms_norm"] | None = None
    conv_layers: int = 0
    pe_attn_head: int | None = None
    attn_mask_enabled: bool = False
    long_skip_connection: bool = False
    checkpoint_activations: bool = False


@dataclass(frozen=True)
class MotionDiTConfig:
    """Architecture of the motion branch (see ``MotionDiT``); defaults are the paper's size."""

    dim: int = 1024
    depth: int = 22
    heads: int = 16
    dim_head: int = 64
    dropout: float = 0.1
    ff_mult: float = 2
    mouth_indices: tuple[int, ...] = field(default=DEFAULT_MOUTH_INDICES)
    num_keypoints: int = 21
    audio_feat_dim: int = 0
    conv_pos_kernel: int = 9
    qk_norm: Literal["rms_norm"] | None = None
    pe_attn_head: int | None = None
    checkpoint_activations: bool = False


# init args (of either branch) that size weights: each is at most the number of values the weights hold, which
# bounds a saved spec before any network is built from it (jam_flow.models.format.build_checked_model)
SIZE_INIT_ARGS = frozenset(
    {
        "dim",
        "depth",
        "heads",
        "dim_head",
        "mel_dim",
        "text_num_embeds",
        "text_dim",
        "conv_layers",
        "num_keypoints",
        "audio_feat_dim",
        "conv_pos_kernel",
    }
)


# init args added after checkpoints were first written, with the value that reproduces the old behaviour: a saved
# model spec lacking one of them is rebuilt with that value (old checkpoints and exports keep computing what they did)
LEGACY_INIT_ARGS: dict[str, dict[str, Any]] = {
    "JointDiT": {"motion_window_layers": "all", "motion_window_with_alpha": False},
    "MotionDiT": {"motion_window_layers": "all"},
}


def with_legacy_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """A saved ``{"class_path", "init_args"}`` spec with every missing :data:`LEGACY_INIT_ARGS` key filled in with
    its old-behaviour value (a new dict; the spec itself is not modified)."""
    cls_name = str(spec.get("class_path", "")).rsplit(".", 1)[-1]
    init_args = dict(spec.get("init_args") or {})
    for key, value in LEGACY_INIT_ARGS.get(cls_name, {}).items():
        init_args.setdefault(key, value)
    return {**spec, "init_args": init_args}


def tiny_joint_config(text_num_embeds: int | None = None) -> dict[str, Any]:
    """Init kwargs of a tiny JointDiT for tests (both branches dim 64, depth 4, 2 heads of 32, half joint).

    ``text_num_embeds`` defaults to the size of the bundled vocabulary (``Vocab.default()``).
    """
    vocab = BUNDLED_VOCAB_SIZE if text_num_embeds is None else text_num_embeds
    return {
        "audio": {
            "dim": 64,
            "depth": 4,
            "heads": 2,
            "dim_head": 32,
            "ff_mult": 2,
            "mel_dim": 100,
            "text_num_embeds": vocab,
            "text_dim": 32,
            "conv_layers": 1,
            "attn_mask_enabled": True,
        },
        "motion": {"dim": 64, "depth": 4, "heads": 2, "dim_head": 32, "ff_mult": 2},
        "joint_layers": "half",
        "window": 4,
        "rope_alignment": "length",
    }


def paper_joint_config(text_num_embeds: int = F5TTS_VOCAB_SIZE) -> dict[str, Any]:
    """Init kwargs of the paper's model (appendix A): two 1024-wide, 22-deep, 16-head branches, Half Joint.

    The audio branch is F5TTS_v1_Base (ff_mult 2, text_dim 512, 4 ConvNeXt layers) so that its checkpoint loads;
    ``text_num_embeds`` defaults to F5-TTS's vocabulary (2545). Padded frames are masked as attention keys
    (``attn_mask_enabled``) so that a sample's output never depends on its batch (see docs/architecture.md).
    """
    return {
        "audio": {
            "dim": 1024,
            "depth": 22,
            "heads": 16,
            "dim_head": 64,
            "ff_mult": 2,
            "mel_dim": 100,
            "text_num_embeds": text_num_embeds,
            "text_dim": 512,
            "text_mask_padding": True,
            "conv_layers": 4,
            "pe_attn_head": None,
            "attn_mask_enabled": True,
        },
        "motion": {"dim": 1024, "depth": 22, "heads": 16, "dim_head": 64, "ff_mult": 2},
        "joint_layers": "half",
        "window": 4,
        "rope_alignment": "length",
    }
