"""Building blocks of the DiT branches (paper §3.2, §4.2, Algorithm 1): adaLN-Zero DiT blocks, attention
projections, feed-forward, ConvNeXt-V2 and convolutional position embedding.

Dimension legend: b batch, L frames of one stream, c model width (``dim``), h heads, d head dim.
Masks mean True = valid; lengths are ``[b]`` int (frames ``< len`` are valid).

Submodule names, shapes, epsilons and operation order follow F5-TTS's DiT exactly (see
``docs/architecture.md``), so that an F5-TTS checkpoint loads strictly into the audio branch and gives the same
numbers. A block is split into ``modulate`` (adaLN), the attention call and ``finish`` (gated residuals and
feed-forward) so that :mod:`jam_flow.models.joint_dit` can run two blocks around one joint attention
(Algorithm 1) while each branch keeps its own projections, norms and feed-forward. ``check_dit_sizes``,
``dit_blocks``, ``zero_init_adaln`` and ``maybe_checkpoint`` are the pieces both DiT branches build and run their
block stack with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from jam_flow.errors import InputError
from jam_flow.nn.attention import self_attention
from jam_flow.nn.rope import apply_rope

__all__ = [
    "GRN",
    "ConvNeXtV2Block",
    "ConvPositionEmbedding",
    "RMSNorm",
    "AdaLayerNorm",
    "AdaLayerNormFinal",
    "FeedForward",
    "Attention",
    "Modulation",
    "DiTBlock",
    "check_dit_sizes",
    "dit_blocks",
    "zero_init_adaln",
    "maybe_checkpoint",
]

_LN_EPS = 1e-6


class GRN(nn.Module):
    """Global response normalisation over the time axis (ConvNeXt-V2), input ``[b, L, c]``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: Tensor) -> Tensor:
        gx = torch.norm(x, p=2, dim=1, keepdim=True)  # [b, 1, c]
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """Residual ConvNeXt-V2 block over ``[b, L, c]``: depthwise conv (k=7), LN, pointwise MLP with GELU and GRN."""

    def __init__(self, dim: int, intermediate_dim: int, dilation: int = 1) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3 * dilation, groups=dim, dilation=dilation)
        self.norm = nn.LayerNorm(dim, eps=_LN_EPS)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.grn = GRN(intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.dwconv(x.transpose(1, 2)).transpose(1, 2)
        h = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(h)))))
        return x + h


class ConvPositionEmbedding(nn.Module):
    """Two grouped convolutions with Mish over time, ``[b, L, c] -> [b, L, c]``.

    With a mask, padded frames are zeroed on the input and after each convolution, so that a valid frame never
    sees padding (it sees zeros, exactly as at the end of an unpadded sequence).
    """

    def __init__(self, dim: int, kernel_size: int = 31, groups: int = 16) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise InputError(f"conv position embedding kernel_size must be odd, got {kernel_size}")
        if dim % groups:
            raise InputError(f"conv position embedding: dim ({dim}) must be divisible by groups ({groups})")
        pad = kernel_size // 2
        self.conv1d = nn.Sequential(
            nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=pad),
            nn.Mish(),
            nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=pad),
            nn.Mish(),
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        keep = None if mask is None else mask[:, None, :]  # [b, 1, L]
        h = x.transpose(1, 2)
        if keep is not None:
            h = h.masked_fill(~keep, 0.0)
        for layer in self.conv1d:
            h = layer(h)
            if keep is not None and isinstance(layer, nn.Conv1d):
                h = h.masked_fill(~keep, 0.0)
        return h.transpose(1, 2)


class RMSNorm(nn.Module):
    """RMS norm over the last axis with a learnable weight (the ``qk_norm="rms_norm"`` option)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return F.rms_norm(x, (x.shape[-1],), weight=self.weight, eps=self.eps)


class Modulation(NamedTuple):
    """adaLN outputs that the second half of a block needs (each ``[b, c]``)."""

    gate_msa: Tensor
    shift_mlp: Tensor
    scale_mlp: Tensor
    gate_mlp: Tensor


class AdaLayerNorm(nn.Module):
    """adaLN-Zero: ``Linear(SiLU(t))`` -> 6 chunks (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, dim * 6)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=_LN_EPS)

    def forward(self, x: Tensor, t: Tensor) -> tuple[Tensor, Modulation]:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.linear(self.silu(t)).chunk(
            6, dim=1
        )
        h = self.norm(x) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        return h, Modulation(gate_msa, shift_mlp, scale_mlp, gate_mlp)


class AdaLayerNormFinal(nn.Module):
    """Final adaLN: ``Linear(SiLU(t))`` -> (scale, shift) -- note the order, the reverse of :class:`AdaLayerNorm`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, dim * 2)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=_LN_EPS)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        scale, shift = self.linear(self.silu(t)).chunk(2, dim=1)
        return self.norm(x) * (1 + scale)[:, None, :] + shift[:, None, :]


class FeedForward(nn.Module):
    """``Linear(c -> c*mult)``, GELU (tanh), dropout, ``Linear(c*mult -> c)``; keys ``ff.0.0`` and ``ff.2``."""

    def __init__(self, dim: int, mult: float = 4, dropout: float = 0.0) -> None:
        super().__init__()
        inner = int(dim * mult)
        self.ff = nn.Sequential(
            nn.Sequential(nn.Linear(dim, inner), nn.GELU(approximate="tanh")),
            nn.Dropout(dropout),
            nn.Linear(inner, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.ff(x)


class Attention(nn.Module):
    """Projections of one stream's multi-head attention; the attention itself is :mod:`jam_flow.nn.attention`.

    ``qkv`` gives ``[b, h, L, d]`` tensors (optional RMS qk-norm, then RoPE on the first ``rotary_heads`` heads);
    ``out`` merges heads, projects, applies dropout and zeroes the rows of padded frames when a mask is given.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        dropout: float = 0.0,
        qk_norm: str | None = None,
        rotary_heads: int | None = None,
    ) -> None:
        super().__init__()
        if qk_norm not in (None, "rms_norm"):
            raise InputError(f"qk_norm must be None or 'rms_norm', got {qk_norm!r}")
        if rotary_heads is not None and not 0 < rotary_heads <= heads:
            raise InputError(f"pe_attn_head must be in [1, heads={heads}] or None, got {rotary_heads}")
        self.heads, self.dim_head, self.rotary_heads = heads, dim_head, rotary_heads
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.q_norm = RMSNorm(dim_head) if qk_norm == "rms_norm" else None
        self.k_norm = RMSNorm(dim_head) if qk_norm == "rms_norm" else None
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(dropout)])

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, self.dim_head)).transpose(1, 2)  # [b, L, h*d] -> [b, h, L, d]

    def qkv(self, x: Tensor, rope: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self._heads(self.to_q(x)), self._heads(self.to_k(x)), self._heads(self.to_v(x))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope, self.rotary_heads), apply_rope(k, rope, self.rotary_heads)
        return q, k, v

    def out(self, o: Tensor, mask: Tensor | None) -> Tensor:
        o = o.transpose(1, 2).flatten(2)  # [b, h, L, d] -> [b, L, h*d]
        o = self.to_out[1](self.to_out[0](o))
        if mask is not None:
            o = o.masked_fill(~mask[..., None], 0.0)
        return o


class DiTBlock(nn.Module):
    """adaLN-Zero DiT block (F5-TTS ``DiTBlock``): attention and feed-forward, each with gated residual.

    ``forward`` runs the block on one stream with :func:`jam_flow.nn.attention.self_attention`; the joint model
    uses ``modulate`` / ``attn.qkv`` / ``finish`` around :func:`jam_flow.nn.attention.joint_attention`.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        ff_mult: float = 4,
        dropout: float = 0.1,
        qk_norm: str | None = None,
        rotary_heads: int | None = None,
    ) -> None:
        super().__init__()
        self.attn_norm = AdaLayerNorm(dim)
        self.attn = Attention(dim, heads, dim_head, dropout, qk_norm, rotary_heads)
        self.ff_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=_LN_EPS)
        self.ff = FeedForward(dim, ff_mult, dropout)

    def modulate(self, x: Tensor, t: Tensor) -> tuple[Tensor, Modulation]:
        return self.attn_norm(x, t)

    def finish(self, x: Tensor, attn_heads: Tensor, mod: Modulation, mask: Tensor | None) -> Tensor:
        """Residuals after the attention (Algorithm 1, steps 3-5); ``attn_heads`` is ``[b, h, L, d]``."""
        x = x + mod.gate_msa[:, None] * self.attn.out(attn_heads, mask)
        h = self.ff_norm(x) * (1 + mod.scale_mlp[:, None]) + mod.shift_mlp[:, None]
        return x + mod.gate_mlp[:, None] * self.ff(h)

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        key_lens: Tensor,
        mask: Tensor | None,
        rope: Tensor | None,
        window: int | None = None,
        backend: str = "auto",
    ) -> Tensor:
        """``x`` ``[b, L, c]``, ``t`` ``[b, c]``; ``key_lens`` ``[b]`` are the frames that act as keys, ``mask``
        ``[b, L]`` (or None) zeroes the attention output rows of padded frames."""
        h, mod = self.modulate(x, t)
        q, k, v = self.attn.qkv(h, rope)
        return self.finish(x, self_attention(q, k, v, key_lens, window, backend), mod, mask)


def check_dit_sizes(owner: str, dim: int, depth: int, heads: int, dim_head: int) -> None:
    """Constructor checks of a DiT branch (``owner`` names it in the message): positive sizes and ``dim`` a
    multiple of 16, the groups of the branch's :class:`ConvPositionEmbedding`."""
    for name, value in (("dim", dim), ("depth", depth), ("heads", heads), ("dim_head", dim_head)):
        if value <= 0:
            raise InputError(f"{owner}: {name} must be positive, got {value}")
    if dim % 16:
        raise InputError(
            f"{owner}: dim must be a multiple of 16 (grouped conv position embedding), got {dim}"
        )


def dit_blocks(
    depth: int,
    dim: int,
    heads: int,
    dim_head: int,
    ff_mult: float,
    dropout: float,
    qk_norm: str | None,
    rotary_heads: int | None,
) -> nn.ModuleList:
    """``depth`` :class:`DiTBlock` s with the same arguments (a branch's ``transformer_blocks``)."""
    return nn.ModuleList(
        [
            DiTBlock(dim, heads, dim_head, ff_mult, dropout, qk_norm=qk_norm, rotary_heads=rotary_heads)
            for _ in range(depth)
        ]
    )


def zero_init_adaln(blocks: nn.ModuleList, norm_out: AdaLayerNormFinal, proj_out: nn.Linear) -> None:
    """adaLN-Zero initialisation (F5-TTS ``initialize_weights``): every block's modulation and the output head
    start at zero, so a fresh DiT outputs zeros and each block starts as the identity."""
    for block in blocks:
        nn.init.zeros_(block.attn_norm.linear.weight)
        nn.init.zeros_(block.attn_norm.linear.bias)
    for layer in (norm_out.linear, proj_out):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)


def maybe_checkpoint(fn: Callable[..., Any], *args: Any, enabled: bool) -> Any:
    """``fn(*args)``, recomputed in backward (non-reentrant activation checkpointing) when ``enabled`` and
    gradients are on."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)
