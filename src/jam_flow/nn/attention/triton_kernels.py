"""Triton kernels (forward, dq, dk/dv) of the ``triton`` implementation; the launchers and autograd functions that
call them are in :mod:`jam_flow.nn.attention.triton`, which documents the algorithm.

Dimension legend: b batch, h heads, d head dim (padded to D2 in the kernel), BM query rows / BN key rows per tile.
Pair rules: ``FULL`` every valid key, ``ALIGN`` audio query -> its motion frame, ``BAND`` motion local window,
``XWIN`` motion query -> audio keys inside the window. Masks mean True = valid.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["FULL", "ALIGN", "BAND", "XWIN"]

FULL, ALIGN, BAND, XWIN = 0, 1, 2, 3


@triton.jit
def _frame(i, NUM, DEN):
    return (i * NUM) // DEN


@triton.jit
def _first_audio(j, NUM, DEN):
    """Smallest audio frame with ``f(i) >= j`` (``j`` clamped at 0: only non-negative integer division)."""
    j = tl.maximum(j, 0)
    return (j * DEN + NUM - 1) // NUM


@triton.jit
def _rule(KIND: tl.constexpr, qpos, kpos, W, NUM, DEN):
    """Element rule of a pair, ``qpos [BM, 1]`` against ``kpos [1, BN]``."""
    if KIND == 1:
        ok = _frame(qpos, NUM, DEN) == kpos
    elif KIND == 2:
        ok = tl.abs(qpos - kpos) <= W
    elif KIND == 3:
        ok = tl.abs(_frame(kpos, NUM, DEN) - qpos) <= W
    else:
        ok = (qpos >= 0) & (kpos >= 0)
    return ok


@triton.jit
def _key_range(KIND: tl.constexpr, q_lo, q_hi, klen, W, NUM, DEN):
    """Keys ``[lo, hi)`` any of the valid query rows ``[q_lo, q_hi)`` may see (empty when ``q_hi <= q_lo``)."""
    last = q_hi - 1
    if KIND == 1:
        lo = _frame(q_lo, NUM, DEN)
        hi = _frame(last, NUM, DEN) + 1
    elif KIND == 2:
        lo = q_lo - W
        hi = last + W + 1
    elif KIND == 3:
        lo = _first_audio(q_lo - W, NUM, DEN)
        hi = _first_audio(last + W + 1, NUM, DEN)
    else:
        lo = q_lo * 0
        hi = klen
    lo = tl.maximum(lo, 0)
    hi = tl.minimum(hi, klen)
    hi = tl.where(q_hi > q_lo, hi, 0)
    return lo, hi


@triton.jit
def _query_range(KIND: tl.constexpr, k_lo, k_hi, qlen, W, NUM, DEN):
    """Query rows ``[lo, hi)`` that may see any of the valid keys ``[k_lo, k_hi)`` of a pair."""
    last = k_hi - 1
    if KIND == 1:
        lo = _first_audio(k_lo, NUM, DEN)
        hi = _first_audio(last + 1, NUM, DEN)
    elif KIND == 2:
        lo = k_lo - W
        hi = last + W + 1
    elif KIND == 3:
        lo = _frame(k_lo, NUM, DEN) - W
        hi = _frame(last, NUM, DEN) + W + 1
    else:
        lo = k_lo * 0
        hi = qlen
    lo = tl.maximum(lo, 0)
    hi = tl.minimum(hi, qlen)
    hi = tl.where(k_hi > k_lo, hi, 0)
    return lo, hi


@triton.jit
def _tile(LEN, H, L, BLOCK: tl.constexpr, D: tl.constexpr, D2: tl.constexpr):
    """This program's row tile of a ``[b, h, L, D]`` tensor (grid: row tiles x ``b * h``), the rows ``< LEN[b]`` valid.

    Returns ``bh``, the batch index ``b``, the rows ``offs [BLOCK]`` and their validity ``ok``, the tile's element
    offsets ``base + idx`` (scalar int64 ``base``, int32 ``idx [BLOCK, D2]``) and load / store ``mask``, and its valid
    rows ``[lo, hi)``.
    """
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    n = tl.load(LEN + b)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, D2)
    base = bh.to(tl.int64) * L * D
    idx = offs[:, None] * D + offs_d[None, :]
    mask = (offs[:, None] < L) & (offs_d[None, :] < D)
    lo = pid * BLOCK
    hi = tl.minimum(lo + BLOCK, n)
    return bh, b, offs, offs < n, base, idx, mask, lo, hi


@triton.jit
def _fwd_pair(
    acc,
    m_i,
    l_i,
    q,
    offs_m,
    q_ok,
    q_lo,
    q_hi,
    K,
    V,
    kbase,
    klen,
    W,
    NUM,
    DEN,
    scale,
    KIND: tl.constexpr,
    BN: tl.constexpr,
    D: tl.constexpr,
    D2: tl.constexpr,
    PREC: tl.constexpr,
):
    """Online-softmax update of the query tile over the key tiles of one pair that rows ``[q_lo, q_hi)`` may see."""
    lo, hi = _key_range(KIND, q_lo, q_hi, klen, W, NUM, DEN)
    offs_d = tl.arange(0, D2)
    start = (lo // BN) * BN
    for s0 in range(start, hi, BN):
        offs_n = s0 + tl.arange(0, BN)
        kmask = (offs_n[:, None] < hi) & (offs_d[None, :] < D)
        k = tl.load(K + kbase + offs_n[:, None] * D + offs_d[None, :], mask=kmask, other=0.0)
        v = tl.load(V + kbase + offs_n[:, None] * D + offs_d[None, :], mask=kmask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale
        ok = _rule(KIND, offs_m[:, None], offs_n[None, :], W, NUM, DEN)
        ok = ok & q_ok[:, None] & (offs_n[None, :] < hi)
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _fwd_kernel(
    Q,
    K1,
    V1,
    K2,
    V2,
    OUT,
    LSE,
    QLEN,
    K1LEN,
    K2LEN,
    SW,
    H,
    Lq,
    Lk1,
    Lk2,
    W,
    NUM,
    DEN,
    scale,
    KIND1: tl.constexpr,
    KIND2: tl.constexpr,
    HAS2: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    D: tl.constexpr,
    D2: tl.constexpr,
    PREC: tl.constexpr,
):
    bh, b, offs_m, q_ok, base, idx, qmask, q_lo, q_hi = _tile(QLEN, H, Lq, BM, D, D2)
    q = tl.load(Q + base + idx, mask=qmask, other=0.0)
    acc = tl.zeros([BM, D2], dtype=tl.float32)
    m_i = tl.full([BM], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BM], dtype=tl.float32)
    k1len = tl.load(K1LEN + b)
    acc, m_i, l_i = _fwd_pair(
        acc,
        m_i,
        l_i,
        q,
        offs_m,
        q_ok,
        q_lo,
        q_hi,
        K1,
        V1,
        bh.to(tl.int64) * Lk1 * D,
        k1len,
        W,
        NUM,
        DEN,
        scale,
        KIND1,
        BN,
        D,
        D2,
        PREC,
    )
    if HAS2:
        k2len = tl.load(K2LEN + b) * tl.load(SW + b)  # switch off: no key of the other stream
        acc, m_i, l_i = _fwd_pair(
            acc,
            m_i,
            l_i,
            q,
            offs_m,
            q_ok,
            q_lo,
            q_hi,
            K2,
            V2,
            bh.to(tl.int64) * Lk2 * D,
            k2len,
            W,
            NUM,
            DEN,
            scale,
            KIND2,
            BN,
            D,
            D2,
            PREC,
        )
    live = q_ok & (l_i > 0)
    l_safe = tl.where(live, l_i, 1.0)
    out = tl.where(live[:, None], acc / l_safe[:, None], 0.0)
    lse = tl.where(live, m_i + tl.log(l_safe), 0.0)
    tl.store(OUT + base + idx, out.to(OUT.dtype.element_ty), mask=qmask)
    tl.store(LSE + bh.to(tl.int64) * Lq + offs_m, lse, mask=offs_m < Lq)


@triton.jit
def _dq_pair(
    dq,
    q,
    do,
    lse,
    delta,
    offs_m,
    q_ok,
    q_lo,
    q_hi,
    K,
    V,
    kbase,
    klen,
    W,
    NUM,
    DEN,
    scale,
    KIND: tl.constexpr,
    BN: tl.constexpr,
    D: tl.constexpr,
    D2: tl.constexpr,
    PREC: tl.constexpr,
):
    """dq of the query tile accumulated over the key tiles of one pair that rows ``[q_lo, q_hi)`` may see."""
    lo, hi = _key_range(KIND, q_lo, q_hi, klen, W, NUM, DEN)
    offs_d = tl.arange(0, D2)
    start = (lo // BN) * BN
    for s0 in range(start, hi, BN):
        offs_n = s0 + tl.arange(0, BN)
        kmask = (offs_n[:, None] < hi) & (offs_d[None, :] < D)
        k = tl.load(K + kbase + offs_n[:, None] * D + offs_d[None, :], mask=kmask, other=0.0)
        v = tl.load(V + kbase + offs_n[:, None] * D + offs_d[None, :], mask=kmask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale
        ok = _rule(KIND, offs_m[:, None], offs_n[None, :], W, NUM, DEN)
        ok = ok & q_ok[:, None] & (offs_n[None, :] < hi)
        p = tl.where(ok, tl.exp(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PREC)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PREC) * scale
    return dq


@triton.jit
def _dq_kernel(
    Q,
    K1,
    V1,
    K2,
    V2,
    DO,
    LSE,
    DELTA,
    DQ,
    QLEN,
    K1LEN,
    K2LEN,
    SW,
    H,
    Lq,
    Lk1,
    Lk2,
    W,
    NUM,
    DEN,
    scale,
    KIND1: tl.constexpr,
    KIND2: tl.constexpr,
    HAS2: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    D: tl.constexpr,
    D2: tl.constexpr,
    PREC: tl.constexpr,
):
    bh, b, offs_m, q_ok, base, idx, qmask, q_lo, q_hi = _tile(QLEN, H, Lq, BM, D, D2)
    q = tl.load(Q + base + idx, mask=qmask, other=0.0)
    do = tl.load(DO + base + idx, mask=qmask, other=0.0)
    lse = tl.load(LSE + bh.to(tl.int64) * Lq + offs_m, mask=offs_m < Lq, other=0.0)
    delta = tl.load(DELTA + bh.to(tl.int64) * Lq + offs_m, mask=offs_m < Lq, other=0.0)
    dq = tl.zeros([BM, D2], dtype=tl.float32)
    k1len = tl.load(K1LEN + b)
    dq = _dq_pair(
        dq,
        q,
        do,
        lse,
        delta,
        offs_m,
        q_ok,
        q_lo,
        q_hi,
        K1,
        V1,
        bh.to(tl.int64) * Lk1 * D,
        k1len,
        W,
        NUM,
        DEN,
        scale,
        KIND1,
        BN,
        D,
        D2,
        PREC,
    )
    if HAS2:
        k2len = tl.load(K2LEN + b) * tl.load(SW + b)
        dq = _dq_pair(
            dq,
            q,
            do,
            lse,
            delta,
            offs_m,
            q_ok,
            q_lo,
            q_hi,
            K2,
            V2,
            bh.to(tl.int64) * Lk2 * D,
            k2len,
            W,
            NUM,
            DEN,
            scale,
            KIND2,
            BN,
            D,
            D2,
            PREC,
        )
    tl.store(DQ + base + idx, dq.to(DQ.dtype.element_ty), mask=qmask)


@triton.jit
def _dkdv_pair(
    dk,
    dv,
    k,
    v,
    offs_n,
    k_ok,
    k_lo,
    k_hi,
    Q,
    DO,
    LSE,
    DELTA,
    bh,
    Lq,
    qlen,
    W,
    NUM,
    DEN,
    scale,
    KIND: tl.constexpr,
    BM: tl.constexpr,
    D: tl.constexpr,
    D2: tl.constexpr,
    PREC: tl.constexpr,
):
    """dk, dv of the key tile accumulated over the query tiles of one pair that may see keys ``[k_lo, k_hi)``."""
    lo, hi = _query_range(KIND, k_lo, k_hi, qlen, W, NUM, DEN)
    offs_d = tl.arange(0, D2)
    qbase = bh.to(tl.int64) * Lq * D
    start = (lo // BM) * BM
    for s0 in range(start, hi, BM):
        offs_m = s0 + tl.arange(0, BM)
        qmask = (offs_m[:, None] < hi) & (offs_d[None, :] < D)
        q = tl.load(Q + qbase + offs_m[:, None] * D + offs_d[None, :], mask=qmask, other=0.0)
        do = tl.load(DO + qbase + offs_m[:, None] * D + offs_d[None, :], mask=qmask, other=0.0)
        lse = tl.load(LSE + bh.to(tl.int64) * Lq + offs_m, mask=offs_m < hi, other=0.0)
        delta = tl.load(DELTA + bh.to(tl.int64) * Lq + offs_m, mask=offs_m < hi, other=0.0)
        s = tl.dot(k, tl.trans(q), input_precision=PREC) * scale  # [BN, BM]: keys x queries
        ok = _rule(KIND, offs_m[None, :], offs_n[:, None], W, NUM, DEN)
        ok = ok & k_ok[:, None] & (offs_m[None, :] < hi)
        p = tl.where(ok, tl.exp(s - lse[None, :]), 0.0)
        dv += tl.dot(p.to(do.dtype), do, input_precision=PREC)
        dp = tl.dot(v, tl.trans(do), input_precision=PREC)
        ds = p * (dp - delta[None, :])
        dk += tl.dot(ds.to(q.dtype), q, input_precision=PREC) * scale
    return dk, dv


@triton.jit
def _dkdv_kernel(
    K,
    V,
    Q1,
    DO1,
    LSE1,
    DELTA1,
    Q2,
    DO2,
    LSE2,
    DELTA2,
    DK,
    DV,
    KLEN,
    Q1LEN,
    Q2LEN,
    SW,
    H,
    Lk,
    Lq1,
    Lq2,
    W,
    NUM,
    DEN,
    scale,
    KIND1: tl.constexpr,
    KIND2: tl.constexpr,
    HAS2: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    D: tl.constexpr,
    D2: tl.constexpr,
    PREC: tl.constexpr,
):
    bh, b, offs_n, k_ok, base, idx, kmask, k_lo, k_hi = _tile(KLEN, H, Lk, BN, D, D2)
    k = tl.load(K + base + idx, mask=kmask, other=0.0)
    v = tl.load(V + base + idx, mask=kmask, other=0.0)
    dk = tl.zeros([BN, D2], dtype=tl.float32)
    dv = tl.zeros([BN, D2], dtype=tl.float32)
    q1len = tl.load(Q1LEN + b)
    dk, dv = _dkdv_pair(
        dk,
        dv,
        k,
        v,
        offs_n,
        k_ok,
        k_lo,
        k_hi,
        Q1,
        DO1,
        LSE1,
        DELTA1,
        bh,
        Lq1,
        q1len,
        W,
        NUM,
        DEN,
        scale,
        KIND1,
        BM,
        D,
        D2,
        PREC,
    )
    if HAS2:
        q2len = tl.load(Q2LEN + b) * tl.load(SW + b)
        dk, dv = _dkdv_pair(
            dk,
            dv,
            k,
            v,
            offs_n,
            k_ok,
            k_lo,
            k_hi,
            Q2,
            DO2,
            LSE2,
            DELTA2,
            bh,
            Lq2,
            q2len,
            W,
            NUM,
            DEN,
            scale,
            KIND2,
            BM,
            D,
            D2,
            PREC,
        )
    tl.store(DK + base + idx, dk.to(DK.dtype.element_ty), mask=kmask)
    tl.store(DV + base + idx, dv.to(DV.dtype.element_ty), mask=kmask)
