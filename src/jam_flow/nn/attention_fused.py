"""``fused`` attention backend: exact JAM-Flow joint attention without any L x L mask (paper §4.4, Algorithm 2).

Dimension legend: b batch, h heads, d head dim, n audio frames, m motion frames, L frames of one stream,
B motion queries per block, K keys gathered per block. Masks mean True = valid.

On CUDA (with Triton importable) the work goes to the Triton kernel of :mod:`jam_flow.nn.attention_triton`. On
the CPU (and on CUDA without Triton) this module computes the same result as ``reference`` by an exact
decomposition of the structured mask:

- audio queries, structural masks on: unmasked flash attention over the valid audio keys (the floor) gives
  ``o_a`` and its log-sum-exp ``lse_a``; the single aligned motion key ``k_m[f(i)]`` adds one score
  ``s_i = q_i . k_m[f(i)] / sqrt(d)``, merged exactly: ``L_i = logaddexp(lse_a, s_i)``,
  ``out_i = exp(lse_a - L_i) o_a + exp(s_i - L_i) v_m[f(i)]``. The backward reuses the flash backward with the
  *merged* output and log-sum-exp (which yields exactly the audio-key part of the joint gradient) and adds the
  O(n d) gradient of the extra key (:class:`_AudioPlusAlignedKey`).
- motion queries, structural masks on: blocks of ``B`` consecutive motion queries attend to the motion keys
  ``[j0 - W, j0 + B + W)`` and the audio keys whose frame lies in that range, gathered per block; the block-local
  mask (``B x K`` per block, O(m K) in total) is evaluated from frame indices.
- ``window=None`` (masks off): both streams attend to every valid key of ``[audio; motion]`` through a key
  padding vector ``[b, 1, 1, n + m]`` (a vector, not an L x L mask).

The frame map ``f(i) = (i * hop * fps) // sr`` is evaluated in exact integers (the fraction reduced to
``num / den``); its inverse ``g(j) = ceil(j * den / num)`` is the first audio frame of motion frame ``j``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from jam_flow.nn.masks import as_batch_flags, lengths_to_mask

__all__ = [
    "frame_ratio",
    "frame_of",
    "first_audio_frame",
    "joint_attention_fused",
    "self_attention_fused",
    "triton_available",
]

_NEG_INF = float("-inf")


def frame_ratio(sample_rate: int, hop_length: int, fps: int) -> tuple[int, int]:
    """``(num, den)`` with ``f(i) = (i * num) // den``: the reduced fraction ``hop * fps / sample_rate``."""
    num, den = hop_length * fps, sample_rate
    g = math.gcd(num, den)
    return num // g, den // g


def frame_of(i, num: int, den: int):
    """Motion frame of audio frame ``i``: ``(i * num) // den`` (= ``audio_to_motion_frame`` at the rates)."""
    return (i * num) // den


def first_audio_frame(j, num: int, den: int):
    """Smallest audio frame ``i`` with ``f(i) >= j`` (``ceil(j * den / num)``, exact; ints or int tensors)."""
    return -((-j * den) // num)


def triton_available() -> bool:
    """True when Triton can be imported (the CUDA kernel of the ``fused`` backend)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _use_triton(t: Tensor) -> bool:
    return t.is_cuda and triton_available()


def _rows(x: Tensor, idx: Tensor) -> Tensor:
    """``x [b, h, L, d]`` rows ``idx [r]`` -> ``[b, h, r, d]`` (indexing a ``[b*h, L, d]`` view: on the CPU this
    is many times faster than ``index_select`` along dim 2)."""
    b, h, L, d = x.shape
    return x.reshape(b * h, L, d)[:, idx].view(b, h, idx.shape[0], d)


def _key_bias(valid: Tensor, dtype: torch.dtype) -> Tensor:
    """``[b, L]`` bool -> additive ``[b, 1, 1, L]`` bias (0 valid, -inf masked) for the CPU flash kernel."""
    return torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill(~valid, _NEG_INF)[
        :, None, None
    ]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of the merge: fp32, or fp64 for fp64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _flash(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """CPU flash attention returning ``(out, lse)``; ``bias`` an additive key-padding bias or None."""
    if q.device.type != "cpu":
        raise RuntimeError(
            f"the fused backend's decomposition runs on the CPU; on {q.device.type} it needs Triton "
            "(pip install triton) - or choose backend='flex' or 'reference'"
        )
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=bias)


class _AudioPlusAlignedKey(torch.autograd.Function):
    """Flash attention over the audio keys plus one extra key per query, merged through log-sum-exp.

    Inputs: ``q, k, v [b, h, n, d]``, ``k_e, v_e [b, h, n, d]`` (the extra key / value of each query row),
    ``extra_bias [b, 1, n]`` (0 where the extra key is visible, -inf where not), ``bias`` the audio key-padding
    bias ``[b, 1, 1, n]`` or None. Returns ``out [b, h, n, d]``.
    """

    @staticmethod
    def forward(ctx, q, k, v, k_e, v_e, extra_bias, bias):
        scale = q.shape[-1] ** -0.5
        acc = _acc_dtype(q.dtype)
        o_a, lse_a = _flash(q, k, v, bias)
        s_e = (q * k_e).sum(-1, dtype=acc) * scale + extra_bias.to(acc)
        lse = torch.logaddexp(lse_a.to(acc), s_e)
        w_a = torch.exp(lse_a.to(acc) - lse)
        w_e = torch.exp(s_e - lse)
        out = o_a.mul_(w_a[..., None].to(o_a.dtype)).addcmul_(v_e, w_e[..., None].to(v_e.dtype))
        ctx.save_for_backward(q, k, v, k_e, v_e, out, lse.to(lse_a.dtype), w_e, bias)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, k_e, v_e, out, lse, w_e, bias = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        grad_out = grad_out.contiguous()
        # flash backward with the merged (out, lse) = the audio-key part of the joint gradient
        gq, gk, gv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_out, q, k, v, out, lse, 0.0, False, attn_mask=bias if ctx.has_bias else None
        )
        acc = _acc_dtype(q.dtype)
        delta = (grad_out * out).sum(-1, dtype=acc)
        ds_e = w_e * ((grad_out * v_e).sum(-1, dtype=acc) - delta) * scale  # [b, h, n]
        ds_e = ds_e[..., None].to(q.dtype)
        gq = gq.addcmul_(ds_e, k_e)
        g_ke = ds_e * q
        g_ve = w_e[..., None].to(grad_out.dtype) * grad_out
        return gq, gk, gv, g_ke, g_ve, None, None


@functools.lru_cache(maxsize=64)
def _motion_plan(
    m: int,
    n: int | None,
    W: int,
    num: int,
    den: int,
    motion_lens: tuple[int, ...],
    audio_lens: tuple[int, ...] | None,
    m_sees: tuple[bool, ...] | None,
    dtype: torch.dtype,
    dev: torch.device,
) -> tuple[int, int, list[Tensor], Tensor, Tensor, bool]:
    """Block layout, gather indices and block-local masks of :func:`_motion_blocks` (cached: every joint layer of
    a forward, and every step with the same lengths, reuses them). Returns ``(B, nb, key_idx, bias [b, nb, B, K]
    (additive: 0 may attend, -inf not), q_valid [b, nb, B], all queries valid)``."""
    B = min(max(32, 2 * W + 1), m)  # motion queries per block (fewer, wider blocks: less gathering)
    nb = -(-m // B)
    j0 = torch.arange(nb, device=dev) * B  # [nb]
    qpos = j0[:, None] + torch.arange(B, device=dev)[None]  # [nb, B]
    Km = B + 2 * W
    mpos = j0[:, None] - W + torch.arange(Km, device=dev)[None]  # [nb, Km]
    m_lens = torch.tensor(motion_lens, device=dev)
    m_ok = (mpos[None, :, None, :] >= 0) & (mpos[None, :, None, :] < m_lens[:, None, None, None])
    m_ok = m_ok & ((qpos[:, :, None] - mpos[:, None, :]).abs() <= W)[None]  # [b, nb, B, Km]
    key_idx = [mpos.clamp(0, m - 1)]
    key_ok = [m_ok]
    if n is not None:
        lo = [max(0, first_audio_frame(c * B - W, num, den)) for c in range(nb)]
        hi = [min(n, first_audio_frame(c * B + B + W, num, den)) for c in range(nb)]
        Ka = max(1, max(h_ - l_ for l_, h_ in zip(lo, hi, strict=True)))
        apos = torch.tensor(lo, device=dev)[:, None] + torch.arange(Ka, device=dev)[None]  # [nb, Ka]
        a_lens = torch.tensor(audio_lens, device=dev)[:, None, None, None]
        sees = torch.tensor(m_sees, device=dev, dtype=torch.bool)[:, None, None, None]
        a_ok = (apos[None, :, None, :] < a_lens) & sees
        a_ok = a_ok & ((frame_of(apos, num, den)[:, None, :] - qpos[:, :, None]).abs() <= W)[None]
        key_idx.append(apos.clamp(0, n - 1))
        key_ok.append(a_ok)
    ok = torch.cat(key_ok, 3)  # [b, nb, B, K]
    q_valid = (qpos[None] < m_lens[:, None, None]) & (qpos < m)[None]  # [b, nb, B]
    ok = ok | ~q_valid[..., None]  # padded query rows attend anywhere (then zeroed), never to nothing
    bias = torch.zeros(ok.shape, dtype=dtype, device=dev).masked_fill(~ok, _NEG_INF)
    return B, nb, key_idx, bias, q_valid, bool(q_valid.all())


def _motion_blocks(
    q_m: Tensor,
    k_m: Tensor,
    v_m: Tensor,
    k_a: Tensor | None,
    v_a: Tensor | None,
    motion_lens: Tensor,
    audio_lens: Tensor | None,
    window: int,
    m_sees: Tensor | None,
    num: int,
    den: int,
) -> Tensor:
    """Local-window attention of the motion queries (optionally with the audio keys of the window), blocked.

    Queries ``[j0, j0 + B)`` of a block see motion keys ``[j0 - W, j0 + B + W)`` and audio keys
    ``[g(j0 - W), g(j0 + B + W))``; the exact per-element rule is applied inside the block.
    """
    b, h, m, d = q_m.shape
    plan = _motion_plan(
        m,
        None if k_a is None else k_a.shape[2],
        window,
        num,
        den,
        tuple(motion_lens.tolist()),
        None if audio_lens is None else tuple(audio_lens.tolist()),
        None if m_sees is None else tuple(m_sees.tolist()),
        q_m.dtype,
        q_m.device,
    )
    B, nb, key_idx, ok, q_valid, all_valid = plan
    K = ok.shape[3]
    k_src, v_src = ([k_m], [v_m]) if k_a is None else ([k_m, k_a], [v_m, v_a])

    def gather(src: list[Tensor]) -> Tensor:  # per block, the rows of each source: [b * h, nb, K, d]
        parts = [
            _rows(x, i.reshape(-1)).view(b * h, nb, i.shape[1], d) for x, i in zip(src, key_idx, strict=True)
        ]
        return torch.cat(parts, 2) if len(parts) > 1 else parts[0]

    # (batch, head) pairs as the SDPA batch and the blocks as its "heads": every reshape below is a free view
    qpad = F.pad(q_m, (0, 0, 0, nb * B - m)) if nb * B != m else q_m
    qb = qpad.reshape(b * h, nb, B, d)
    mask = ok if b == 1 else ok[:, None].expand(b, h, nb, B, K).reshape(b * h, nb, B, K)
    ob = F.scaled_dot_product_attention(qb, gather(k_src), gather(v_src), attn_mask=mask)
    out = ob.reshape(b, h, nb * B, d)[:, :, :m]
    if all_valid:
        return out
    return out * q_valid.reshape(b, nb * B)[:, None, :m, None].to(out.dtype)


def _padded_sdpa(q: Tensor, k: Tensor, v: Tensor, key_valid: Tensor, q_valid: Tensor) -> Tensor:
    """SDPA with a key-padding vector; samples without any valid key attend everywhere (rows zeroed after)."""
    key_valid = key_valid | ~key_valid.any(1, keepdim=True)
    all_valid = bool(key_valid.all())
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=None if all_valid else key_valid[:, None, None, :]
    )
    if bool(q_valid.all()):
        return out
    return out * q_valid[:, None, :, None].to(out.dtype)


@functools.lru_cache(maxsize=64)
def _audio_plan(
    n: int,
    m: int,
    num: int,
    den: int,
    audio_lens: tuple[int, ...],
    motion_lens: tuple[int, ...],
    a_sees: tuple[bool, ...],
    dtype: torch.dtype,
    dev: torch.device,
) -> tuple[Tensor | None, Tensor, Tensor, Tensor, bool]:
    """Key-padding bias (None: no padding), extra-key bias ``[b, 1, n]``, aligned frame index ``[n]``, query
    validity ``[b, n]`` and "all valid" of :func:`_audio_queries` (cached like :func:`_motion_plan`)."""
    a_valid = lengths_to_mask(torch.tensor(audio_lens, device=dev), n)
    frame = frame_of(torch.arange(n, device=dev), num, den)  # [n] exact integer map
    key_valid = a_valid | ~a_valid.any(1, keepdim=True)  # an empty sample attends anywhere (rows zeroed)
    bias = None if bool(key_valid.all()) else _key_bias(key_valid, dtype)
    m_lens = torch.tensor(motion_lens, device=dev)
    extra_ok = (frame[None] < m_lens[:, None]) & torch.tensor(a_sees, device=dev, dtype=torch.bool)[:, None]
    extra_bias = torch.zeros(len(audio_lens), 1, n, dtype=_acc_dtype(dtype), device=dev)
    extra_bias = extra_bias.masked_fill(~extra_ok[:, None], _NEG_INF)
    return bias, extra_bias, frame.clamp(max=max(m - 1, 0)), a_valid, bool(a_valid.all())


def _audio_queries(q_a, k_a, v_a, k_m, v_m, audio_lens, motion_lens, a_sees, num, den) -> Tensor:
    n, m = q_a.shape[2], k_m.shape[2]
    bias, extra_bias, fidx, a_valid, all_valid = _audio_plan(
        n,
        m,
        num,
        den,
        tuple(audio_lens.tolist()),
        tuple(motion_lens.tolist()),
        tuple(a_sees.tolist()),
        q_a.dtype,
        q_a.device,
    )
    if m == 0:
        k_e = torch.zeros_like(q_a)
        v_e = torch.zeros_like(q_a)
    else:
        k_e, v_e = _rows(k_m, fidx), _rows(v_m, fidx)
    out = _AudioPlusAlignedKey.apply(
        q_a.contiguous(), k_a.contiguous(), v_a.contiguous(), k_e, v_e, extra_bias, bias
    )
    if all_valid:
        return out
    return out * a_valid[:, None, :, None].to(out.dtype)


def joint_attention_fused(
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
    """Exact joint attention (same result as ``reference``) without an L x L mask; see the module docstring."""
    if _use_triton(q_a):
        from jam_flow.nn.attention_triton import joint_attention_triton

        return joint_attention_triton(
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
    b, _, n, _ = q_a.shape
    m = q_m.shape[2]
    dev = q_a.device
    num, den = frame_ratio(sample_rate, hop_length, fps)
    audio_lens, motion_lens = audio_lens.to(dev), motion_lens.to(dev)
    a_sees = as_batch_flags(audio_sees_motion, b, dev)
    m_sees = as_batch_flags(motion_sees_audio, b, dev)
    if window is None:  # masks off: one key-padding vector per query stream
        a_valid = lengths_to_mask(audio_lens, n)
        m_valid = lengths_to_mask(motion_lens, m)
        keys_a = torch.cat([a_valid, m_valid & a_sees[:, None]], 1)
        keys_m = torch.cat([m_valid, a_valid & m_sees[:, None]], 1)
        out_a = _padded_sdpa(q_a, torch.cat([k_a, k_m], 2), torch.cat([v_a, v_m], 2), keys_a, a_valid)
        out_m = _padded_sdpa(q_m, torch.cat([k_m, k_a], 2), torch.cat([v_m, v_a], 2), keys_m, m_valid)
        return out_a, out_m
    if window < 0:
        raise ValueError(f"window must be >= 0 or None, got {window}")
    out_a = _audio_queries(q_a, k_a, v_a, k_m, v_m, audio_lens, motion_lens, a_sees, num, den)
    if m == 0:
        return out_a, q_m.new_zeros(q_m.shape)
    out_m = _motion_blocks(q_m, k_m, v_m, k_a, v_a, motion_lens, audio_lens, window, m_sees, num, den)
    return out_a, out_m


def self_attention_fused(q: Tensor, k: Tensor, v: Tensor, lens: Tensor, window: int | None = None) -> Tensor:
    """One stream with key padding (a ``[b, 1, 1, L]`` vector) and an optional local window (blocked)."""
    if _use_triton(q):
        from jam_flow.nn.attention_triton import self_attention_triton

        return self_attention_triton(q, k, v, lens, window)
    L = q.shape[2]
    lens = lens.to(q.device)
    valid = lengths_to_mask(lens, L)
    if window is None or window >= L - 1:
        return _padded_sdpa(q, k, v, valid, valid)
    if window < 0:
        raise ValueError(f"window must be >= 0 or None, got {window}")
    return _motion_blocks(q, k, v, None, None, lens, None, window, None, 1, 1)
