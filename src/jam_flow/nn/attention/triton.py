"""``triton``: the ``fused`` backend on CUDA, a FlashAttention-2 Triton kernel that computes the JAM-Flow mask from
frame indices (paper §4.4, Algorithm 2); launchers and autograd functions here, kernels in :mod:`.triton_kernels`,
the algorithm in ``docs/attention.md``.

Dimension legend: b batch, h heads, d head dim (padded to the power of two D2 inside the kernel), n audio frames,
m motion frames, BM query rows / BN key rows per tile. Masks mean True = valid.

Pair rules: ``FULL`` every valid key, ``ALIGN`` audio ``i`` -> motion ``f(i)``, ``BAND`` ``|j - j'| <= W``,
``XWIN`` motion ``j`` -> audio ``i`` with ``|f(i) - j| <= W``; ``f(i) = (i * NUM) // DEN`` in integers. Runs on
the CPU through Triton's interpreter when ``TRITON_INTERPRET=1`` is set before Triton is imported (tests).
"""

from __future__ import annotations

import contextlib

import torch
import triton
from torch import Tensor

from jam_flow.nn.attention.layout import JointLayout, with_unwindowed_motion
from jam_flow.nn.attention.triton_kernels import (
    ALIGN,
    BAND,
    FULL,
    XWIN,
    _dkdv_kernel,
    _dq_kernel,
    _fwd_kernel,
)

__all__ = ["joint", "single", "FULL", "ALIGN", "BAND", "XWIN"]


def _tiles(device: torch.device, d: int, dtype: torch.dtype = torch.bfloat16) -> tuple[int, int, int]:
    """``(BM, BN, num_warps)``: small tiles in the interpreter (CPU tests), FlashAttention-2 sized on a GPU.

    fp32 runs IEEE dots on the FMA units (no tensor cores); 64-row fp32 tiles compile for sm_90 to 7-16 KiB of
    local-memory stack per thread (ptxas register spills), 32 x 32 tiles to (almost) none.
    """
    if device.type != "cuda":
        return 16, 16, 1
    if dtype == torch.float32:
        return 32, 32, 4
    return (64, 64, 4) if d <= 64 else (64, 32, 4)


_MAX_GRID_Y = 65535  # CUDA limit of gridDim.y, which holds b * h


def _on_device(t: Tensor):
    """Launch on ``t``'s GPU: Triton launches on the *current* CUDA device, not on the device of the tensors."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


class _JointAttention(torch.autograd.Function):
    """Both streams' queries against both streams' keys; ``kinds = (aa, am, mm, ma)`` pair rules."""

    @staticmethod
    def forward(ctx, q_a, k_a, v_a, q_m, k_m, v_m, alen, mlen, a_sw, m_sw, kinds, W, num, den):
        streams = [(q_a, k_a, v_a, alen), (q_m, k_m, v_m, mlen)]
        outs, lses = [], []
        for s, (q, k, v, qlen) in enumerate(streams):
            ok_, ov_, olen = streams[1 - s][1], streams[1 - s][2], streams[1 - s][3]
            sw = a_sw if s == 0 else m_sw
            o, lse = _launch_fwd(
                q, k, v, ok_, ov_, qlen, qlen, olen, sw, kinds[2 * s], kinds[2 * s + 1], W, num, den
            )
            outs.append(o)
            lses.append(lse)
        ctx.save_for_backward(q_a, k_a, v_a, q_m, k_m, v_m, alen, mlen, a_sw, m_sw, *outs, *lses)
        ctx.cfg = (kinds, W, num, den)
        return outs[0], outs[1]

    @staticmethod
    def backward(ctx, do_a, do_m):
        q_a, k_a, v_a, q_m, k_m, v_m, alen, mlen, a_sw, m_sw, o_a, o_m, lse_a, lse_m = ctx.saved_tensors
        kinds, W, num, den = ctx.cfg
        # per stream: (q, do, lse, delta, lengths), the query side of both backward kernels
        sides = []
        for q, do, o, lse, qlen in ((q_a, do_a, o_a, lse_a, alen), (q_m, do_m, o_m, lse_m, mlen)):
            do = do.contiguous()
            sides.append((q, do, lse, (do.float() * o.float()).sum(-1).contiguous(), qlen))
        keys, sws = ((k_a, v_a), (k_m, v_m)), (a_sw, m_sw)
        grads = []
        for s, t in ((0, 1), (1, 0)):  # t: the other stream
            (k, v), (k2, v2) = keys[s], keys[t]
            q, do, lse, delta, qlen = sides[s]
            own, cross, incoming = kinds[2 * s], kinds[2 * s + 1], kinds[2 * t + 1]
            dq = _launch_dq(
                q, k, v, k2, v2, do, lse, delta, qlen, qlen, sides[t][4], sws[s], own, cross, W, num, den
            )
            # stream s's keys: seen by its own queries (aa / mm) and, gated by stream t's switch, t's queries (ma / am)
            dk, dv = _launch_dkdv(k, v, sides[s], sides[t], qlen, sws[t], own, incoming, W, num, den)
            grads += [dq, dk, dv]
        return (*grads, *[None] * 8)


class _SelfAttention(torch.autograd.Function):
    """One stream, pair rule ``FULL`` or ``BAND``."""

    @staticmethod
    def forward(ctx, q, k, v, lens, kind, W):
        o, lse = _launch_fwd(q, k, v, None, None, lens, lens, None, None, kind, None, W, 1, 1)
        ctx.save_for_backward(q, k, v, lens, o, lse)
        ctx.cfg = (kind, W)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, lens, o, lse = ctx.saved_tensors
        kind, W = ctx.cfg
        do = do.contiguous()
        delta = (do.float() * o.float()).sum(-1).contiguous()
        dq = _launch_dq(q, k, v, None, None, do, lse, delta, lens, lens, None, None, kind, None, W, 1, 1)
        dk, dv = _launch_dkdv(k, v, (q, do, lse, delta, lens), None, lens, None, kind, None, W, 1, 1)
        return dq, dk, dv, None, None, None


def _common(q: Tensor) -> tuple[int, int, int, int, int, int, int, str]:
    b, h, L, d = q.shape
    if b * h > _MAX_GRID_Y:
        raise ValueError(f"batch * heads = {b * h} exceeds the CUDA grid limit {_MAX_GRID_Y}")
    BM, BN, warps = _tiles(q.device, d, q.dtype)
    prec = "ieee" if q.dtype == torch.float32 else "tf32"
    return b, h, L, d, BM, BN, warps, prec


def _meta(kind1, kind2, has2, BM, BN, d, prec, warps) -> dict:
    """Compile-time parameters of a kernel launch."""
    return dict(
        KIND1=kind1,
        KIND2=kind2 if has2 else 0,
        HAS2=has2,
        BM=BM,
        BN=BN,
        D=d,
        D2=max(16, triton.next_power_of_2(d)),
        PREC=prec,
        num_warps=warps,
    )


def _query_side(q, k, v, k2, v2, qlen, klen, k2len, sw, kind1, kind2, W, num, den):
    """Grid, key / value tensors, scalar arguments and meta-parameters shared by the forward and dq kernels
    (which take the same arguments around their own outputs)."""
    b, h, L, d, BM, BN, warps, prec = _common(q)
    has2 = k2 is not None
    kv = (k, v, k2 if has2 else k, v2 if has2 else v)
    scalars = (
        qlen,
        klen,
        k2len if has2 else klen,
        sw if has2 else klen,
        h,
        L,
        k.shape[2],
        k2.shape[2] if has2 else 0,
        W,
        num,
        den,
        d**-0.5,
    )
    grid = (triton.cdiv(max(L, 1), BM), b * h)
    return grid, kv, scalars, _meta(kind1, kind2, has2, BM, BN, d, prec, warps)


def _launch_fwd(q, k, v, k2, v2, qlen, klen, k2len, sw, kind1, kind2, W, num, den):
    grid, kv, scalars, meta = _query_side(q, k, v, k2, v2, qlen, klen, k2len, sw, kind1, kind2, W, num, den)
    o = torch.empty_like(q)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    with _on_device(q):
        _fwd_kernel[grid](q, *kv, o, lse, *scalars, **meta)
    return o, lse


def _launch_dq(q, k, v, k2, v2, do, lse, delta, qlen, klen, k2len, sw, kind1, kind2, W, num, den):
    grid, kv, scalars, meta = _query_side(q, k, v, k2, v2, qlen, klen, k2len, sw, kind1, kind2, W, num, den)
    dq = torch.empty_like(q)
    with _on_device(q):
        _dq_kernel[grid](q, *kv, do, lse, delta, dq, *scalars, **meta)
    return dq


def _launch_dkdv(k, v, first, second, klen, sw, kind1, kind2, W, num, den):
    b, h, Lk, d, BM, BN, warps, prec = _common(k)
    has2 = second is not None
    q1, do1, lse1, delta1, q1len = first
    q2, do2, lse2, delta2, q2len = second if has2 else first
    dk, dv = torch.empty_like(k), torch.empty_like(v)
    grid = (triton.cdiv(max(Lk, 1), BN), b * h)
    with _on_device(k):
        _dkdv_kernel[grid](
            k,
            v,
            q1,
            do1,
            lse1,
            delta1,
            q2,
            do2,
            lse2,
            delta2,
            dk,
            dv,
            klen,
            q1len,
            q2len,
            sw if has2 else klen,
            h,
            Lk,
            q1.shape[2],
            q2.shape[2],
            W,
            num,
            den,
            d**-0.5,
            **_meta(kind1, kind2, has2, BM, BN, d, prec, warps),
        )
    return dk, dv


def _lens(lens: Tensor, device: torch.device) -> Tensor:
    return lens.to(device=device, dtype=torch.int32).contiguous()


def joint(
    layout: JointLayout, q_a: Tensor, k_a: Tensor, v_a: Tensor, q_m: Tensor, k_m: Tensor, v_m: Tensor
) -> tuple[Tensor, Tensor]:
    """Joint attention through the Triton kernel (CUDA, or the CPU under ``TRITON_INTERPRET=1``)."""
    lay, dev = layout, q_a.device
    kinds = (FULL, FULL, FULL, FULL) if lay.window is None else (FULL, ALIGN, BAND, XWIN)
    a_sw = lay.audio_sees_motion.to(device=dev, dtype=torch.int32)
    m_sw = lay.motion_sees_audio.to(device=dev, dtype=torch.int32)
    audio_lens = _lens(lay.audio_lens, dev).clamp(max=lay.n)
    motion_lens = _lens(lay.motion_lens, dev).clamp(max=lay.m)
    # |j - j'| <= W (BAND) and |f(i) - j| <= W (XWIN) hold for every pair once W >= m + f(n): the cap changes no
    # mask and keeps the kernel's int32 bounds ((j + W + 1) * den in particular) far from overflow.
    W = 0 if lay.window is None else min(lay.window, lay.m + (lay.n * lay.num) // lay.den + 1)
    c = [t.contiguous() for t in (q_a, k_a, v_a, q_m, k_m, v_m)]
    out_a, out_m = _JointAttention.apply(*c, audio_lens, motion_lens, a_sw, m_sw, kinds, W, lay.num, lay.den)
    return out_a, with_unwindowed_motion(lay, out_m, q_m, k_m, v_m, single)


def single(q: Tensor, k: Tensor, v: Tensor, lens: Tensor, window: int | None) -> Tensor:
    """One stream with key padding and an optional local band through the Triton kernel."""
    lens = _lens(lens, q.device).clamp(max=q.shape[2])
    kind = FULL if window is None else BAND
    W = 0 if window is None else min(window, q.shape[2])  # any W >= L masks the same; keeps the bounds small
    return _SelfAttention.apply(q.contiguous(), k.contiguous(), v.contiguous(), lens, kind, W)
