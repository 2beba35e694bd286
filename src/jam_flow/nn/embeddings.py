"""Input embeddings of the DiT branches: flow time, text, and the per-frame input projections (paper §3.2, §4.2).

Dimension legend: b batch, n mel frames, m motion frames, L frames of one stream, nt text tokens, c model width,
ct text width. Masks mean True = valid. Per-sample switches (``drop_*``) are a Python bool or a ``[b]`` bool tensor.

The time and text embeddings and the audio input embedding reproduce F5-TTS's exactly (names, shapes and
numerics; see ``docs/architecture.md``). The motion input embedding has the same design with motion inputs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from jam_flow.errors import InputError
from jam_flow.nn.modules import ConvNeXtV2Block, ConvPositionEmbedding

__all__ = [
    "sinusoidal_time_features",
    "TimestepEmbedding",
    "text_position_table",
    "TextEmbedding",
    "InputEmbedding",
    "MotionInputEmbedding",
    "zero_where",
]


def zero_where(x: Tensor, drop: bool | Tensor) -> Tensor:
    """``x`` ``[b, ...]`` with the samples selected by ``drop`` (bool or ``[b]`` bool) replaced by zeros."""
    if isinstance(drop, Tensor):
        keep = ~drop.to(device=x.device, dtype=torch.bool)
        return x * keep.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return torch.zeros_like(x) if drop else x


def sinusoidal_time_features(time: Tensor, dim: int = 256, scale: float = 1000.0) -> Tensor:
    """``[b]`` flow times -> ``[b, dim]``: ``concat(sin(a), cos(a))`` with ``a_k = scale * t * exp(-k ln(1e4) / (dim/2 - 1))``."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=time.device).float() * -(math.log(10000) / (half - 1)))
    arg = scale * time[:, None] * freqs[None]
    return torch.cat((arg.sin(), arg.cos()), dim=-1)


class TimestepEmbedding(nn.Module):
    """Flow time ``[b]`` -> ``[b, c]``: sinusoidal features (256) then ``Linear, SiLU, Linear`` (``time_mlp``)."""

    def __init__(self, dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.time_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, time: Tensor) -> Tensor:
        return self.time_mlp(sinusoidal_time_features(time, self.freq_dim).to(time.dtype))


def text_position_table(dim: int, length: int, theta: float = 10000.0) -> Tensor:
    """Fixed additive text positions ``[length, dim]``: row p = ``concat(cos(p f), sin(p f))``, ``f_j = theta^(-2j/dim)``."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    angles = torch.outer(torch.arange(length), freqs).float()
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class TextEmbedding(nn.Module):
    """Character ids ``[b, nt]`` (pad -1) -> text features ``[b, L, ct]`` on the mel time axis (F5-TTS).

    Ids are shifted by +1 (row 0 is the filler), cut / filler-padded to the target length ``L`` (the valid mel
    length per sample, or ``n`` without a mask), optionally refined by ``conv_layers`` ConvNeXt-V2 blocks after a
    fixed additive position table. ``mask_padding`` keeps filler positions at zero through the blocks;
    ``average_upsampling`` spreads the real tokens evenly over the valid frames after the blocks (ZipVoice-style).
    """

    max_positions = 8192  # ~87 s of 24 kHz audio at hop 256

    def __init__(
        self,
        num_embeds: int,
        dim: int,
        mask_padding: bool = True,
        average_upsampling: bool = False,
        conv_layers: int = 0,
        conv_mult: int = 2,
    ) -> None:
        super().__init__()
        if average_upsampling and not mask_padding:
            raise InputError("text_embedding_average_upsampling=True requires text_mask_padding=True")
        self.text_embed = nn.Embedding(num_embeds + 1, dim)  # row 0 = filler / padding
        self.mask_padding = mask_padding
        self.average_upsampling = average_upsampling
        self.conv_layers = conv_layers
        if conv_layers > 0:
            self.register_buffer("freqs_cis", text_position_table(dim, self.max_positions), persistent=False)
            self.text_blocks = nn.Sequential(
                *[ConvNeXtV2Block(dim, dim * conv_mult) for _ in range(conv_layers)]
            )

    def forward(self, text: Tensor, seq_len: int | Tensor, drop_text: bool | Tensor = False) -> Tensor:
        ids = text + 1
        valid = None
        if isinstance(seq_len, Tensor):
            seq_len = seq_len.to(device=ids.device, dtype=torch.long)
            length = int(seq_len.max().item())
        else:
            length = int(seq_len)
        ids = ids[:, :length]
        ids = nn.functional.pad(ids, (0, length - ids.shape[1]), value=0)
        if isinstance(seq_len, Tensor):
            valid = torch.arange(length, device=ids.device)[None] < seq_len[:, None]  # [b, L]
            ids = ids.masked_fill(~valid, 0)
        filler = ids == 0  # computed before drop_text (F5-TTS)
        ids = zero_where(ids, drop_text)

        h = self.text_embed(ids)
        if valid is not None:
            h = h.masked_fill(~valid[..., None], 0.0)
        if self.conv_layers > 0:
            if length > self.max_positions:
                raise InputError(f"text embedding supports at most {self.max_positions} frames, got {length}")
            pos = self.freqs_cis[:length]
            if valid is not None:
                pos = pos[None] * valid[..., None].to(pos.dtype)
            h = h + pos
            if self.mask_padding:
                h = h.masked_fill(filler[..., None], 0.0)
                for block in self.text_blocks:
                    h = block(h).masked_fill(filler[..., None], 0.0)
            else:
                h = self.text_blocks(h)
        if self.average_upsampling:
            targets = seq_len if isinstance(seq_len, Tensor) else torch.full_like(ids[:, 0], length)
            h = average_upsample(h, ~filler, targets)
        return h


def average_upsample(h: Tensor, token_valid: Tensor, target_lens: Tensor) -> Tensor:
    """Spread the valid tokens of ``h`` ``[b, L, ct]`` evenly over the first ``target_lens`` frames of each sample.

    With ``T`` valid tokens and ``A`` frames, every token gets ``A // T`` frames and the last ``A % T`` tokens get
    one more, in order; frames from ``A`` on (and samples with no token) are zero.
    """
    b, length, _ = h.shape
    num_tok = token_valid.sum(dim=1)  # [b]
    t_safe = num_tok.clamp(min=1)
    base = target_lens // t_safe
    extra = target_lens % t_safe
    plain = (num_tok - extra) * base  # frames covered by the tokens that get exactly `base` frames
    k = torch.arange(length, device=h.device)[None]  # [1, L]
    tok = torch.where(
        k < plain[:, None],
        k // base.clamp(min=1)[:, None],
        (num_tok - extra)[:, None] + (k - plain[:, None]) // (base + 1)[:, None],
    )
    # position (in the sequence) of the tok-th valid token: valid positions first, in order
    order = torch.sort((~token_valid).to(torch.int8), dim=1, stable=True).indices
    src = order.gather(1, tok.clamp(0, length - 1))
    out = h.gather(1, src[..., None].expand(-1, -1, h.shape[-1]))
    keep = (k < target_lens[:, None]) & (num_tok > 0)[:, None]
    return out * keep[..., None].to(out.dtype)


class InputEmbedding(nn.Module):
    """Audio input: ``proj(concat[x, cond, text])`` plus a convolutional position embedding of it (F5-TTS)."""

    def __init__(self, mel_dim: int, text_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(mel_dim * 2 + text_dim, out_dim)
        self.conv_pos_embed = ConvPositionEmbedding(out_dim)

    def forward(
        self,
        x: Tensor,
        cond: Tensor,
        text_embed: Tensor,
        drop_audio_cond: bool | Tensor = False,
        mask: Tensor | None = None,
    ) -> Tensor:
        cond = zero_where(cond, drop_audio_cond)
        h = self.proj(torch.cat((x, cond, text_embed), dim=-1))
        return self.conv_pos_embed(h, mask) + h


class MotionInputEmbedding(nn.Module):
    """Motion input: ``proj(concat[x, cond, rest, audio_feats])`` plus a convolutional position embedding.

    ``x`` / ``cond`` are ``[b, m, motion_dim]`` (noisy / masked e_mouth), ``rest`` ``[b, m, rest_dim]`` (e_rest),
    ``audio_feats`` ``[b, m, audio_feat_dim]`` (stage-1 per-frame audio features; only when ``audio_feat_dim > 0``).
    """

    def __init__(
        self, motion_dim: int, rest_dim: int, audio_feat_dim: int, out_dim: int, conv_kernel_size: int = 9
    ) -> None:
        super().__init__()
        self.audio_feat_dim = audio_feat_dim
        self.proj = nn.Linear(motion_dim * 2 + rest_dim + audio_feat_dim, out_dim)
        self.conv_pos_embed = ConvPositionEmbedding(out_dim, kernel_size=conv_kernel_size)

    def forward(
        self,
        x: Tensor,
        cond: Tensor,
        rest: Tensor,
        audio_feats: Tensor | None = None,
        drop_motion_cond: bool | Tensor = False,
        drop_rest: bool | Tensor = False,
        drop_audio_feats: bool | Tensor = False,
        mask: Tensor | None = None,
    ) -> Tensor:
        parts = [x, zero_where(cond, drop_motion_cond), zero_where(rest, drop_rest)]
        if self.audio_feat_dim > 0:
            if audio_feats is None:
                audio_feats = x.new_zeros(*x.shape[:2], self.audio_feat_dim)
            parts.append(zero_where(audio_feats, drop_audio_feats))
        h = self.proj(torch.cat(parts, dim=-1))
        return self.conv_pos_embed(h, mask) + h
