"""Audio-DiT: the F5-TTS DiT (paper §3.2, §4.2), re-implemented so that F5-TTS checkpoints load strictly and give
the same numbers (``tests/test_models_f5_parity.py`` checks it against the ``f5-tts`` package).

Dimension legend: b batch, n mel frames, c model width, nt text tokens, h heads, d head dim.
Masks mean True = valid (``mask`` ``[b, n]`` is a prefix mask). ``drop_*`` are a Python bool (F5-TTS's exact
behaviour) or a ``[b]`` bool tensor (per-sample classifier-free-guidance dropout during training).

Data flow (F5-TTS ``DiT``): time embedding -> text embedding on the mel axis -> ``proj([x, cond, text])`` plus
a convolutional position embedding -> ``depth`` adaLN-Zero DiT blocks with RoPE self-attention -> optional long
skip -> final adaLN -> ``proj_out`` to ``mel_dim``. The output is not masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from jam_flow.errors import InputError
from jam_flow.models.branch import DiTBranch
from jam_flow.models.validation import (
    as_time,
    check_backend,
    check_flag,
    check_frames,
    check_mask,
    constructor_args,
)
from jam_flow.nn.embeddings import InputEmbedding, TextEmbedding, TimestepEmbedding
from jam_flow.nn.modules import (
    AdaLayerNormFinal,
    check_dit_sizes,
    dit_blocks,
)
from jam_flow.nn.rope import RotaryEmbedding

__all__ = ["AudioDiT", "AudioState"]


@dataclass
class AudioState:
    """The audio stream between the embedding and the output head (used by :class:`~jam_flow.models.JointDiT`).

    ``h`` ``[b, n, c]`` hidden states, ``t`` ``[b, c]`` time embedding, ``mask`` ``[b, n]`` or None,
    ``lens`` ``[b]`` valid lengths, ``key_lens`` ``[b]`` frames that act as attention keys (all ``n`` unless
    ``attn_mask_enabled``, as in F5-TTS), ``residual`` the input embedding for the long skip (or None).
    """

    h: Tensor
    t: Tensor
    mask: Tensor | None
    lens: Tensor
    key_lens: Tensor
    residual: Tensor | None


class AudioDiT(DiTBranch):
    """F5-TTS's DiT with F5-TTS's constructor arguments (same names and defaults) plus ``attention_backend``.

    Args mirror ``f5_tts.model.backbones.dit.DiT``: ``dim`` width, ``depth`` blocks, ``heads`` x ``dim_head``
    attention, ``dropout`` (attention output and feed-forward), ``ff_mult`` feed-forward expansion, ``mel_dim``
    mel channels, ``text_num_embeds`` vocabulary size (the embedding has one more row, the filler),
    ``text_dim`` text width (None: ``mel_dim``), ``text_mask_padding`` keep text filler at zero through the
    ConvNeXt blocks (F5TTS_v1), ``text_embedding_average_upsampling`` spread tokens evenly over the frames,
    ``qk_norm`` None | "rms_norm", ``conv_layers`` ConvNeXt-V2 blocks on the text, ``pe_attn_head`` number of
    heads that get RoPE (None: all; F5TTS_Base uses 1), ``attn_mask_enabled`` mask padded frames as attention
    keys (F5-TTS's default False lets them act as keys), ``long_skip_connection``, ``checkpoint_activations``
    (recompute each block in backward). ``attention_backend`` is a :mod:`jam_flow.nn.attention` backend name.
    """

    def __init__(
        self,
        *,
        dim: int,
        depth: int = 8,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.1,
        ff_mult: float = 4,
        mel_dim: int = 100,
        text_num_embeds: int = 256,
        text_dim: int | None = None,
        text_mask_padding: bool = True,
        text_embedding_average_upsampling: bool = False,
        qk_norm: Literal["rms_norm"] | None = None,
        conv_layers: int = 0,
        pe_attn_head: int | None = None,
        attn_mask_enabled: bool = False,
        long_skip_connection: bool = False,
        checkpoint_activations: bool = False,
        attention_backend: str = "auto",
    ) -> None:
        super().__init__()
        if text_embedding_average_upsampling and not text_mask_padding:
            raise InputError(
                "AudioDiT: text_embedding_average_upsampling=True requires text_mask_padding=True"
            )
        check_backend("AudioDiT", attention_backend)
        check_dit_sizes("AudioDiT", dim, depth, heads, dim_head)
        # constructor arguments as plain values (written into checkpoints to rebuild the network)
        self.init_args = constructor_args(AudioDiT.__init__, locals())
        text_dim = mel_dim if text_dim is None else text_dim
        self.dim, self.depth, self.heads, self.dim_head = dim, depth, heads, dim_head
        self.mel_dim = mel_dim
        self.attn_mask_enabled = attn_mask_enabled
        self.checkpoint_activations = checkpoint_activations
        self.attention_backend = attention_backend

        self.time_embed = TimestepEmbedding(dim)
        self.text_embed = TextEmbedding(
            text_num_embeds,
            text_dim,
            mask_padding=text_mask_padding,
            average_upsampling=text_embedding_average_upsampling,
            conv_layers=conv_layers,
        )
        self.input_embed = InputEmbedding(mel_dim, text_dim, dim)
        self.rotary_embed = RotaryEmbedding(dim_head)
        self.transformer_blocks = dit_blocks(
            depth, dim, heads, dim_head, ff_mult, dropout, qk_norm, pe_attn_head
        )
        self.long_skip_connection = nn.Linear(dim * 2, dim, bias=False) if long_skip_connection else None
        self.norm_out = AdaLayerNormFinal(dim)
        self.proj_out = nn.Linear(dim, mel_dim)
        self.initialize_weights()

    # -- stages (shared with JointDiT) ------------------------------------------------------------------------------
    def embed(
        self,
        x: Tensor,
        cond: Tensor,
        text: Tensor,
        time: float | Tensor,
        mask: Tensor | None = None,
        drop_audio_cond: bool | Tensor = False,
        drop_text: bool | Tensor = False,
        arg_names: tuple[str, str, str, str, str] = ("x", "cond", "text", "time", "mask"),
        text_emb: Tensor | None = None,
    ) -> AudioState:
        """Validate the inputs and build the stream state before the first block. ``text_emb``: the text features
        of :meth:`text_features` for these ``text`` / ``mask`` / ``drop_text``, computed earlier (None: here)."""
        nx, ncond, ntext, ntime, nmask = arg_names
        check_frames(nx, x, None, None, self.mel_dim)
        b, n = x.shape[:2]
        check_frames(ncond, cond, b, n, self.mel_dim)
        if not isinstance(text, Tensor) or text.ndim != 2 or text.shape[0] != b or text.is_floating_point():
            got = tuple(text.shape) if isinstance(text, Tensor) else type(text).__name__
            raise InputError(f"{ntext}: expected an int64 tensor [{b}, nt] of token ids (pad -1), got {got}")
        lens = check_mask(nmask, mask, b, n)
        check_flag("drop_audio_cond", drop_audio_cond, b)
        check_flag("drop_text", drop_text, b)
        t = self.time_embed(as_time(ntime, time, b, x))

        if text_emb is None:
            text_emb = self._text_features(text, n, lens, drop_text)
        elif tuple(text_emb.shape[:2]) != (b, n):
            raise InputError(f"text_emb: expected text features [{b}, {n}, ct], got {tuple(text_emb.shape)}")
        if lens is None:
            lens = torch.full((b,), n, dtype=torch.long, device=x.device)
        h = self.input_embed(x, cond, text_emb, drop_audio_cond, mask)
        key_lens = lens if (self.attn_mask_enabled and mask is not None) else torch.full_like(lens, n)
        residual = h if self.long_skip_connection is not None else None
        return AudioState(h, t, mask, lens, key_lens, residual)

    def _text_features(self, text: Tensor, n: int, lens: Tensor | None, drop_text: bool | Tensor) -> Tensor:
        if lens is None:
            return self.text_embed(text, n, drop_text)
        text_emb = self.text_embed(text, lens, drop_text)
        if text_emb.shape[1] < n:  # the longest sample is shorter than n: the rest is padding anyway
            text_emb = nn.functional.pad(text_emb, (0, 0, 0, n - text_emb.shape[1]))
        return text_emb

    def text_features(
        self, text: Tensor, n: int, mask: Tensor | None = None, drop_text: bool | Tensor = False
    ) -> Tensor:
        """The text embedding ``[b, n, ct]`` that :meth:`forward` would compute for ``text`` on ``n`` mel frames
        (valid ``mask``, ``drop_text``). It depends on neither ``x`` nor the flow time, so a sampler computes it once
        per sample and passes it to every step (``text_emb=``; F5-TTS's ``cache=True``)."""
        b = text.shape[0]
        check_flag("drop_text", drop_text, b)
        return self._text_features(text, n, check_mask("mask", mask, b, n), drop_text)

    def key_lens(self, s: AudioState) -> Tensor:
        """Global self-attention over the key frames (all ``n`` unless ``attn_mask_enabled``, as in F5-TTS)."""
        return s.key_lens

    def head(self, s: AudioState) -> Tensor:
        """Long skip (if any), final adaLN and projection to ``mel_dim``."""
        h = s.h
        if self.long_skip_connection is not None:
            h = self.long_skip_connection(torch.cat((h, s.residual), dim=-1))
        return self.proj_out(self.norm_out(h, s.t))

    # -- F5-TTS forward ---------------------------------------------------------------------------------------------
    def forward(
        self,
        x: Tensor,
        cond: Tensor,
        text: Tensor,
        time: float | Tensor,
        mask: Tensor | None = None,
        drop_audio_cond: bool | Tensor = False,
        drop_text: bool | Tensor = False,
        text_emb: Tensor | None = None,
    ) -> Tensor:
        """Predicted flow ``[b, n, mel_dim]`` for noisy mel ``x`` ``[b, n, mel_dim]``, masked mel ``cond``, text ids
        ``[b, nt]`` (pad -1), flow time ``[b]`` or scalar and the valid-frame ``mask`` ``[b, n]``. ``text_emb``:
        :meth:`text_features` of the same text, mask and ``drop_text``, computed once (None: computed here)."""
        state = self.embed(x, cond, text, time, mask, drop_audio_cond, drop_text, text_emb=text_emb)
        return self.head(self.run_blocks(state))
