"""``flex``: ``torch.nn.attention.flex_attention`` over the joint sequence ``[audio; motion]`` with a ``BlockMask``
built from the JAM-Flow rules (paper §4.4, Algorithm 2) without any T x T tensor; see ``docs/attention.md``.

Dimension legend: b batch, h heads, d head dim, n audio frames, m motion frames, T = n + m joint tokens,
S block size (128), L frames of one stream. Masks mean True = valid.

FlexAttention has no backward on the CPU (torch 2.14): there this runs forward only (eager) and refuses inputs
that require grad; on CUDA the compiled kernel is used.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from jam_flow.features import first_audio_frame, frame_of
from jam_flow.nn.attention.layout import JointLayout

__all__ = ["joint", "single", "joint_block_mask"]

BLOCK = 128
_BIG = 1 << 40
_compiled = None


def _flex(q: Tensor, k: Tensor, v: Tensor, block_mask) -> Tensor:
    global _compiled
    from torch.nn.attention.flex_attention import flex_attention

    if q.device.type == "cpu":
        if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
            raise RuntimeError(
                "attention backend 'flex' has no backward on the CPU (torch FlexAttention); "
                "use backend='fused' or 'reference' for training on the CPU"
            )
        with warnings.catch_warnings():  # the eager (unfused) CPU path is intended here: no compile warning
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            return flex_attention(q, k, v, block_mask=block_mask)
    if _compiled is None:
        _compiled = torch.compile(flex_attention, dynamic=False)
    return _compiled(q, k, v, block_mask=block_mask)


def _block_mask_from_intervals(intervals: list[tuple[Tensor, Tensor, Tensor]], T: int, mask_mod, device):
    """Block mask from per-row key intervals.

    ``intervals``: ``(rows [T] bool, lo [b, T], hi [b, T])`` triples; rows of one stream, key interval
    ``[lo, hi)`` per row (empty when ``lo >= hi``). Within a triple the intervals must be monotone in the row.
    """
    b = intervals[0][1].shape[0]
    nq = -(-T // BLOCK)
    pad = nq * BLOCK - T
    kb_lo = torch.arange(nq, device=device) * BLOCK  # kv block starts (square blocks, T x T)
    flags = torch.zeros(b, nq, nq, dtype=torch.bool, device=device)
    for rows, lo, hi in intervals:
        live = rows[None] & (lo < hi)
        lo_ = torch.nn.functional.pad(torch.where(live, lo, _BIG), (0, pad), value=_BIG).view(b, nq, BLOCK)
        hi_ = torch.nn.functional.pad(torch.where(live, hi, -_BIG), (0, pad), value=-_BIG).view(b, nq, BLOCK)
        lo_b, hi_b = lo_.amin(-1), hi_.amax(-1)  # [b, nq]
        flags |= (kb_lo[None, None] < hi_b[..., None]) & (kb_lo[None, None] + BLOCK > lo_b[..., None])
    counts = flags.sum(-1, dtype=torch.int32)  # [b, nq]
    order = torch.argsort((~flags).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    from torch.nn.attention.flex_attention import BlockMask

    return BlockMask.from_kv_blocks(
        counts[:, None], order[:, None], BLOCK_SIZE=BLOCK, mask_mod=mask_mod, seq_lengths=(T, T)
    )


def joint_block_mask(audio_lens, motion_lens, n, m, window, a_sees, m_sees, num, den, window_with_alpha=True):
    """``BlockMask`` over the joint sequence ``[audio; motion]`` implementing the JAM-Flow rules
    (``window_with_alpha``: no motion window for samples with ``m_sees`` off, Algorithm 2 line 4)."""
    dev = audio_lens.device
    T = n + m
    alen, mlen = audio_lens.long(), motion_lens.long()

    def mask_mod(b, h, q, kv):
        q_a, k_a = q < n, kv < n
        qm, km = q - n, kv - n
        q_ok = torch.where(q_a, q < alen[b], qm < mlen[b])
        k_ok = torch.where(k_a, kv < alen[b], km < mlen[b])
        if window is None:
            cross_a = ~k_a & a_sees[b]
            cross_m = k_a & m_sees[b]
            rule = torch.where(q_a, k_a | cross_a, ~k_a | cross_m)
        else:
            a_rule = k_a | ((km == frame_of(q, num, den)) & a_sees[b])
            band = (qm - km).abs() <= window
            if window_with_alpha:
                band = band | ~m_sees[b]
            m_rule = torch.where(k_a, ((frame_of(kv, num, den) - qm).abs() <= window) & m_sees[b], band)
            rule = torch.where(q_a, a_rule, m_rule)
        return q_ok & k_ok & rule

    i = torch.arange(n, device=dev)
    j = torch.arange(m, device=dev)
    rows_a = torch.arange(T, device=dev) < n
    rows_m = ~rows_a
    zero_a, zero_m = (
        torch.zeros(n, dtype=torch.long, device=dev),
        torch.zeros(m, dtype=torch.long, device=dev),
    )
    a_ok = (i[None] < alen[:, None]).long()  # padded query rows see nothing
    m_ok = (j[None] < mlen[:, None]).long()
    # audio rows: audio keys [0, alen); motion keys (one aligned frame, or all)
    aa_lo, aa_hi = zero_a[None], alen[:, None] * a_ok
    if window is None:
        am_lo, am_hi = n + zero_a[None], n + mlen[:, None] * a_ok
        mm_lo, mm_hi = n + zero_m[None], n + mlen[:, None] * m_ok
        ma_lo, ma_hi = zero_m[None], alen[:, None] * m_ok
    else:
        f = frame_of(i, num, den)
        am_lo, am_hi = n + f[None], n + torch.minimum(f[None] + 1, mlen[:, None]) * a_ok
        mm_lo = n + (j[None] - window).clamp(min=0)
        mm_hi = n + torch.minimum(j[None] + window + 1, mlen[:, None]) * m_ok
        ma_lo = first_audio_frame(j - window, num, den).clamp(min=0)[None]
        ma_hi = torch.minimum(first_audio_frame(j + window + 1, num, den)[None], alen[:, None]) * m_ok
        if window_with_alpha:  # alpha_2 = 0: every valid motion key
            free = ~m_sees[:, None]
            mm_lo = torch.where(free, n, mm_lo)
            mm_hi = torch.where(free, n + mlen[:, None] * m_ok, mm_hi)
    am_hi = torch.where(a_sees[:, None], am_hi, 0)  # switch off: empty interval
    ma_hi = torch.where(m_sees[:, None], ma_hi, 0)

    bsz = alen.shape[0]

    def rows(x_a: Tensor, x_m: Tensor) -> Tensor:  # [b or 1, n] / [b or 1, m] -> [b, T]
        return torch.cat([x_a.expand(bsz, n), x_m.expand(bsz, m)], 1)

    empty_m = torch.zeros(1, m, dtype=torch.long, device=dev)
    empty_a = torch.zeros(1, n, dtype=torch.long, device=dev)
    intervals = [
        (rows_a, rows(aa_lo, empty_m), rows(aa_hi, empty_m)),
        (rows_a, rows(am_lo, empty_m), rows(am_hi, empty_m)),
        (rows_m, rows(empty_a, mm_lo), rows(empty_a, mm_hi)),
        (rows_m, rows(empty_a, ma_lo), rows(empty_a, ma_hi)),
    ]
    return _block_mask_from_intervals(intervals, T, mask_mod, dev)


def joint(
    layout: JointLayout, q_a: Tensor, k_a: Tensor, v_a: Tensor, q_m: Tensor, k_m: Tensor, v_m: Tensor
) -> tuple[Tensor, Tensor]:
    """Joint attention through FlexAttention over the joint sequence ``[audio; motion]``."""
    lay = layout
    bm = joint_block_mask(
        lay.audio_lens, lay.motion_lens, lay.n, lay.m, lay.window, lay.audio_sees_motion, lay.motion_sees_audio,
        lay.num, lay.den, lay.window_with_alpha,
    )  # fmt: skip
    out = _flex(torch.cat([q_a, q_m], 2), torch.cat([k_a, k_m], 2), torch.cat([v_a, v_m], 2), bm)
    return out[:, :, : lay.n], out[:, :, lay.n :]


def single(q: Tensor, k: Tensor, v: Tensor, lens: Tensor, window: int | None) -> Tensor:
    """One stream with key padding and an optional local window through FlexAttention."""
    b, _, L, _ = q.shape
    dev = q.device
    lens = lens.long()

    def mask_mod(bi, h, qi, kv):
        ok = (qi < lens[bi]) & (kv < lens[bi])
        return ok if window is None else ok & ((qi - kv).abs() <= window)

    pos = torch.arange(L, device=dev)
    q_ok = (pos[None] < lens[:, None]).long()
    if window is None:
        lo, hi = torch.zeros(b, L, dtype=torch.long, device=dev), lens[:, None] * q_ok
    else:
        lo = (pos[None] - window).clamp(min=0).expand(b, L)
        hi = torch.minimum(pos[None] + window + 1, lens[:, None]) * q_ok
    rows = torch.ones(L, dtype=torch.bool, device=dev)
    bm = _block_mask_from_intervals([(rows, lo, hi)], L, mask_mod, dev)
    return _flex(q, k, v, bm)
