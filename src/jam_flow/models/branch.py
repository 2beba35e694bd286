"""What the Audio-DiT and the Motion-DiT share (paper §4.2: both branches are the same DiT design): RoPE angles, the
self-attention block run, the block loop and the adaLN-Zero initialisation. No parameters of its own, so the
subclasses' state-dict keys are exactly their own modules'.

Dimension legend: b batch, L frames of the branch (n mel or m motion), c width, d head dim. Masks mean
True = valid (prefix masks).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from jam_flow.nn.modules import AdaLayerNormFinal, maybe_checkpoint, zero_init_adaln
from jam_flow.nn.rope import RotaryEmbedding

__all__ = ["DiTBranch"]


class DiTBranch(nn.Module, ABC):
    """Base of :class:`~jam_flow.models.AudioDiT` and :class:`~jam_flow.models.MotionDiT`.

    A subclass builds ``rotary_embed``, ``transformer_blocks``, ``norm_out`` and ``proj_out`` and sets ``depth``,
    ``checkpoint_activations``, ``attention_backend`` and ``self_attention_window`` (None: global); it says which
    frames act as attention keys (:meth:`key_lens`) and holds its stream state in an object with ``h``, ``t`` and
    ``mask``."""

    rotary_embed: RotaryEmbedding
    transformer_blocks: nn.ModuleList
    norm_out: AdaLayerNormFinal
    proj_out: nn.Linear
    depth: int
    checkpoint_activations: bool
    attention_backend: str
    self_attention_window: int | None = None

    def initialize_weights(self) -> None:
        """adaLN-Zero initialisation (as F5-TTS): block modulations and the output head start at zero."""
        zero_init_adaln(self.transformer_blocks, self.norm_out, self.proj_out)

    def rope(self, positions: Tensor) -> Tensor:
        """RoPE angles ``[1 or b, L, d]`` for positions ``[L]`` or ``[b, L]``."""
        return self.rotary_embed.angles(positions)

    @abstractmethod
    def key_lens(self, s: Any) -> Tensor:
        """``[b]`` number of leading frames that act as attention keys."""

    def run_block(self, i: int, s: Any, rope: Tensor) -> Tensor:
        """Block ``i`` as a plain self-attention block (``self_attention_window`` frames around each query, or
        global); returns the new hidden states ``[b, L, c]``."""
        block = self.transformer_blocks[i]
        args = (s.h, s.t, self.key_lens(s), s.mask, rope, self.self_attention_window, self.attention_backend)
        return maybe_checkpoint(block, *args, enabled=self.checkpoint_activations)

    def run_blocks(self, s: Any) -> Any:
        """Every block in order on the stream state ``s`` (positions ``0..L-1``); returns ``s``."""
        rope = self.rope(torch.arange(s.h.shape[1], device=s.h.device))
        for i in range(self.depth):
            s.h = self.run_block(i, s, rope)
        return s
