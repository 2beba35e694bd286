"""``cpu_decomposition``: the ``fused`` backend on the CPU, exact joint attention without an L x L mask (paper §4.4,
Algorithm 2); the algorithm and its derivation are in ``docs/attention.md``.

Dimension legend: b batch, h heads, d head dim, n audio frames, m motion frames, L frames of one stream,
B motion queries per block, nb blocks, K keys gathered per block. Masks mean True = valid.

Audio queries: the aten CPU flash kernel over the audio keys, plus the aligned motion key merged through the
log-sum-exp. Motion queries: blocks of ``B`` queries over equally strided key windows with a block-local additive
mask. Both run in one ``autograd.Function`` (:class:`_JointCPU`). ``window=None``: one SDPA per query stream with
a key-padding vector.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from jam_flow.features import first_audio_frame, frame_of
from jam_flow.nn.attention.layout import JointLayout, with_unwindowed_motion
from jam_flow.nn.masks import lengths_to_mask

__all__ = ["joint", "single"]

_NEG_INF = float("-inf")
_flash_fwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_flash_bwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of the merge: fp32, or fp64 for fp64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_cpu(t: Tensor) -> None:
    if t.device.type != "cpu":
        raise RuntimeError(
            f"the fused backend's decomposition runs on the CPU; on {t.device.type} it needs Triton "
            "(pip install triton) - or choose backend='flex' or 'reference'"
        )


# --- equally strided row windows ------------------------------------------------------------------------------


def _blocks_of(x: Tensor, p0: int, stride: int, nblk: int, rows: int) -> Tensor:
    """View ``[b, h, nblk, rows, d]`` of ``x [b, h, L, d]``: block ``c`` is rows ``p0 + c * stride + [0, rows)``
    (overlapping blocks share memory; caller keeps every row inside ``[0, L)``)."""
    sb, sh, sl, sd = x.stride()
    b, h, _, d = x.shape
    return x.as_strided((b, h, nblk, rows, d), (sb, sh, stride * sl, sl, sd), x.storage_offset() + p0 * sl)


@functools.lru_cache(maxsize=256)
def _window_runs(
    start: int, stride: int, size: int, nb: int, L: int
) -> tuple[tuple[int, int, int, int], ...]:
    """Runs ``(c0, c1, lo, hi)``: blocks ``c0 <= c < c1`` take window rows ``[lo, hi)``, i.e. source rows
    ``start + c * stride + [lo, hi)``, all inside ``[0, L)``. Blocks whose window lies inside the source form one
    run with the whole window; each boundary block gets its own clipped run (``lo == hi``: nothing inside)."""
    inner = [c for c in range(nb) if start + c * stride >= 0 and start + c * stride + size <= L]
    runs = [(inner[0], inner[-1] + 1, 0, size)] if inner else []
    for c in range(nb):
        if c not in inner:
            p = start + c * stride
            lo, hi = min(max(0, -p), size), max(0, min(size, L - p))
            runs.append((c, c + 1, lo, max(lo, hi)))
    return tuple(runs)


def _gather_windows(dst: Tensor, x: Tensor, start: int, stride: int, size: int, off: int) -> None:
    """``dst[:, :, c, off:off + size] = x`` rows ``start + c * stride + [0, size)`` (zeros outside ``[0, L)``);
    ``dst [b, h, nb, K, d]``."""
    for c0, c1, lo, hi in _window_runs(start, stride, size, dst.shape[2], x.shape[2]):
        if (lo, hi) != (0, size):
            dst[:, :, c0:c1, off : off + size].zero_()
        if hi > lo:
            dst[:, :, c0:c1, off + lo : off + hi] = _blocks_of(
                x, start + c0 * stride + lo, stride, c1 - c0, hi - lo
            )


def _scatter_windows(acc: Tensor, g: Tensor, start: int, stride: int, size: int, off: int) -> None:
    """The adjoint of :func:`_gather_windows`: ``acc [b, h, L, d] +=`` the window rows of ``g [b, h, nb, K, d]``.

    Rows ``r`` of consecutive blocks overlap, so each run is added in chunks of at most ``stride`` window rows:
    within a chunk the blocks' rows are disjoint, and one strided ``add_`` covers every block of the run."""
    for c0, c1, lo, hi in _window_runs(start, stride, size, g.shape[2], acc.shape[2]):
        step = stride if c1 - c0 > 1 else hi - lo
        for r in range(lo, hi, max(step, 1)):
            rows = min(step, hi - r)
            _blocks_of(acc, start + c0 * stride + r, stride, c1 - c0, rows).add_(
                g[:, :, c0:c1, off + r : off + r + rows]
            )


# --- plans: every joint layer of a forward, and every step with the same lengths, reuses them ----------------


def _block_size(m: int, W: int, num: int) -> int:
    """Motion queries per block: at least ``max(32, 2W + 1)`` (fewer, wider blocks: less overlap to copy),
    rounded up to a multiple of ``num`` (equally strided audio windows), at most ``m`` (one block)."""
    return min(-(-max(32, 2 * W + 1) // num) * num, m)


@functools.lru_cache(maxsize=64)
def _motion_plan(
    m: int,
    n: int,
    W: int,
    num: int,
    den: int,
    motion_lens: tuple[int, ...],
    audio_lens: tuple[int, ...] | None,
    m_sees: tuple[bool, ...] | None,
    dtype: torch.dtype,
    dev: torch.device,
) -> tuple[int, int, tuple[tuple[int, int, int], ...], Tensor, Tensor | None]:
    """``(B, nb, spec, bias, q_valid)`` of the motion queries. ``spec``: ``(start, stride, size)`` of the motion
    windows and (``n > 0``) the audio windows; ``bias [b, nb, B, K]``: additive block mask (0 may attend, -inf
    not); ``q_valid [b, m]`` (None: every query valid)."""
    B = _block_size(m, W, num)
    nb = -(-m // B)
    j0 = torch.arange(nb, device=dev) * B  # [nb]
    qpos = j0[:, None] + torch.arange(B, device=dev)[None]  # [nb, B]
    spec = [(-W, B, B + 2 * W)]  # motion keys [j0 - W, j0 + B + W)
    if n:  # audio keys [g(j0 - W), g(j0 + B + W)); g(c*B + x) = c*B*den/num + g(x) as num divides B
        start = first_audio_frame(-W, num, den)
        spec.append((start, B * den // num, first_audio_frame(B + W, num, den) - start))
    key_ok = []
    for i, ((start, stride, size), lens) in enumerate(zip(spec, (motion_lens, audio_lens), strict=False)):
        pos = torch.arange(nb, device=dev)[:, None] * stride + start + torch.arange(size, device=dev)[None]
        ok = (pos >= 0)[None] & (pos[None] < torch.tensor(lens, device=dev)[:, None, None])  # [b, nb, size]
        frame = pos if i == 0 else frame_of(pos, num, den)
        ok = ok[:, :, None] & ((frame[:, None, :] - qpos[:, :, None]).abs() <= W)[None]  # [b, nb, B, size]
        if i == 1:
            ok = ok & torch.tensor(m_sees, device=dev, dtype=torch.bool)[:, None, None, None]
        key_ok.append(ok)
    ok = torch.cat(key_ok, 3)  # [b, nb, B, K]
    q_ok = (qpos[None] < torch.tensor(motion_lens, device=dev)[:, None, None]) & (qpos < m)[None]
    ok = ok | ~q_ok[..., None]  # padded query rows attend anywhere (then zeroed), never to nothing
    bias = torch.zeros(ok.shape, dtype=dtype, device=dev).masked_fill(~ok, _NEG_INF)
    q_valid = q_ok.reshape(len(motion_lens), nb * B)[:, :m]
    return B, nb, tuple(spec), bias, None if bool(q_valid.all()) else q_valid


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
) -> tuple[Tensor | None, Tensor, Tensor, Tensor | None]:
    """``(bias, extra_bias, fidx, q_valid)`` of the audio queries: key-padding bias ``[b, 1, 1, n]`` (None: no
    padding), extra-key bias ``[b, 1, n]`` (0 visible, -inf not), aligned motion frame ``[n]`` and ``q_valid
    [b, n]`` (None: every query valid)."""
    a_valid = lengths_to_mask(torch.tensor(audio_lens, device=dev), n)
    frame = frame_of(torch.arange(n, device=dev), num, den)  # [n] exact integer map
    key_valid = a_valid | ~a_valid.any(1, keepdim=True)  # an empty sample attends anywhere (rows zeroed)
    bias = None
    if not bool(key_valid.all()):
        bias = torch.zeros(key_valid.shape, dtype=dtype, device=dev).masked_fill(~key_valid, _NEG_INF)
        bias = bias[:, None, None]
    extra_ok = (frame[None] < torch.tensor(motion_lens, device=dev)[:, None]) & torch.tensor(
        a_sees, device=dev, dtype=torch.bool
    )[:, None]
    extra_bias = torch.zeros(len(audio_lens), 1, n, dtype=_acc_dtype(dtype), device=dev)
    extra_bias = extra_bias.masked_fill(~extra_ok[:, None], _NEG_INF)
    return bias, extra_bias, frame.clamp(max=max(m - 1, 0)), None if bool(a_valid.all()) else a_valid


def _zero_rows_(x: Tensor, q_valid: Tensor | None) -> Tensor:
    """``x [b, h, L, d]`` with the rows of padded queries (``q_valid [b, L]`` False) zeroed, in place."""
    return x if q_valid is None else x.mul_(q_valid[:, None, :, None].to(x.dtype))


# --- the two pieces: forward returns (out, saved); backward consumes saved --------------------------------------


def _audio_forward(q, k, v, k_m, v_m, plan) -> tuple[Tensor, tuple]:
    bias, extra_bias, fidx, q_valid = plan
    b, h, n, d = q.shape
    acc = _acc_dtype(q.dtype)
    if k_m.shape[2] == 0:  # no motion frames: the extra key is masked (extra_bias is -inf everywhere)
        k_e, v_e = torch.zeros_like(q), torch.zeros_like(q)
    else:  # indexing a [b*h, m, d] view: on the CPU many times faster than index_select along dim 2
        k_e = k_m.reshape(b * h, -1, d)[:, fidx].view(b, h, n, d)
        v_e = v_m.reshape(b * h, -1, d)[:, fidx].view(b, h, n, d)
    o_a, lse_a = _flash_fwd(q, k, v, attn_mask=bias)
    s_e = torch.linalg.vecdot(q, k_e).to(acc) * d**-0.5 + extra_bias.to(acc)
    lse = torch.logaddexp(lse_a.to(acc), s_e)
    w_e = torch.exp(s_e - lse)
    out = o_a.mul_(torch.exp(lse_a.to(acc) - lse)[..., None].to(o_a.dtype))
    out = _zero_rows_(out.addcmul_(v_e, w_e[..., None].to(v_e.dtype)), q_valid)
    return out, (q, k, v, k_e, v_e, out, lse.to(lse_a.dtype), w_e)


def _audio_backward(g, saved, plan, g_km: Tensor, g_vm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of ``q, k, v``; the extra key's gradients are added into ``g_km, g_vm [b, h, m, d]``."""
    q, k, v, k_e, v_e, out, lse, w_e = saved
    bias, _, fidx, q_valid = plan
    b, h, n, d = q.shape
    g = _zero_rows_(g.clone(), q_valid) if q_valid is not None else g.contiguous()
    # flash backward with the merged (out, lse) = the audio-key part of the joint gradient
    gq, gk, gv = _flash_bwd(g, q, k, v, out, lse, 0.0, False, attn_mask=bias)
    acc = _acc_dtype(q.dtype)
    dp_e = torch.linalg.vecdot(g, v_e).to(acc) - torch.linalg.vecdot(g, out).to(acc)
    ds_e = (w_e * dp_e * d**-0.5)[..., None].to(q.dtype)  # [b, h, n, 1]
    gq.addcmul_(ds_e, k_e)
    if g_km.shape[2]:  # the gathered rows are dead now: their buffers take the row gradients (no allocation)
        g_km.view(b * h, -1, d).index_add_(1, fidx, torch.mul(q, ds_e, out=k_e).view(b * h, n, d))
        g_vm.view(b * h, -1, d).index_add_(
            1, fidx, torch.mul(g, w_e[..., None].to(g.dtype), out=v_e).view(b * h, n, d)
        )
    return gq, gk, gv


def _blocks_forward(q, srcs_k, srcs_v, plan) -> tuple[Tensor, tuple]:
    """Blocked motion queries. The flash kernel's batch is (sample, block) and its heads the heads, so the block
    mask ``[b * nb, 1, B, K]`` broadcasts over the heads without a copy."""
    B, nb, spec, bias, q_valid = plan
    b, h, m, d = q.shape
    K = bias.shape[3]
    qp = F.pad(q, (0, 0, 0, nb * B - m)) if nb * B != m else q
    qb = qp.reshape(b, h, nb, B, d).transpose(1, 2).reshape(b * nb, h, B, d)
    kb, vb = q.new_empty(b, nb, h, K, d), q.new_empty(b, nb, h, K, d)
    off = 0
    for x_k, x_v, (start, stride, size) in zip(srcs_k, srcs_v, spec, strict=True):
        _gather_windows(kb.transpose(1, 2), x_k, start, stride, size, off)
        _gather_windows(vb.transpose(1, 2), x_v, start, stride, size, off)
        off += size
    kb, vb = kb.view(b * nb, h, K, d), vb.view(b * nb, h, K, d)
    mask = bias.view(b * nb, 1, B, K)
    ob, lse = _flash_fwd(qb, kb, vb, attn_mask=mask)
    out = ob.reshape(b, nb, h, B, d).transpose(1, 2).reshape(b, h, nb * B, d)[:, :, :m]
    return _zero_rows_(out, q_valid), (qb, kb, vb, ob, lse, mask)


def _blocks_backward(g, saved, plan, acc_k: list[Tensor], acc_v: list[Tensor]) -> Tensor:
    """Gradient of the queries; the window keys' / values' gradients are added into ``acc_k`` / ``acc_v``."""
    qb, kb, vb, ob, lse, mask = saved
    B, nb, spec, _, q_valid = plan
    b, h, m, d = g.shape
    K = kb.shape[2]
    if nb * B != m:
        g = F.pad(g, (0, 0, 0, nb * B - m))
    elif q_valid is not None:
        g = g.clone()
    if q_valid is not None:
        _zero_rows_(g[:, :, :m], q_valid)
    gb = g.reshape(b, h, nb, B, d).transpose(1, 2).reshape(b * nb, h, B, d)
    gqb, gkb, gvb = _flash_bwd(gb.contiguous(), qb, kb, vb, ob, lse, 0.0, False, attn_mask=mask)
    gkb = gkb.reshape(b, nb, h, K, d).transpose(1, 2)
    gvb = gvb.reshape(b, nb, h, K, d).transpose(1, 2)
    off = 0
    for a_k, a_v, (start, stride, size) in zip(acc_k, acc_v, spec, strict=True):
        _scatter_windows(a_k, gkb, start, stride, size, off)
        _scatter_windows(a_v, gvb, start, stride, size, off)
        off += size
    return gqb.reshape(b, nb, h, B, d).transpose(1, 2).reshape(b, h, nb * B, d)[:, :, :m]


class _JointCPU(torch.autograd.Function):
    """Both query streams of the joint attention in one node (see the module docstring)."""

    @staticmethod
    def forward(ctx, a_plan, m_plan, q_a, k_a, v_a, q_m, k_m, v_m):
        out_a, a_saved = _audio_forward(q_a, k_a, v_a, k_m, v_m, a_plan)
        if m_plan is None:  # no motion frames
            out_m, m_saved = q_m.new_zeros(q_m.shape), ()
        else:
            n_src = len(m_plan[2])  # motion windows, and audio windows unless n = 0
            out_m, m_saved = _blocks_forward(q_m, (k_m, k_a)[:n_src], (v_m, v_a)[:n_src], m_plan)
        ctx.save_for_backward(*a_saved, *m_saved)
        ctx.plans, ctx.n_audio_saved, ctx.m = (a_plan, m_plan), len(a_saved), q_m.shape[2]
        return out_a, out_m

    @staticmethod
    @once_differentiable
    def backward(ctx, g_a, g_m):
        a_plan, m_plan = ctx.plans
        saved = ctx.saved_tensors
        a_saved, m_saved = saved[: ctx.n_audio_saved], saved[ctx.n_audio_saved :]
        b, h, _, d = a_saved[0].shape
        g_km = a_saved[0].new_zeros(b, h, ctx.m, d)
        g_vm = a_saved[0].new_zeros(b, h, ctx.m, d)
        gq_a, gk_a, gv_a = _audio_backward(g_a, a_saved, a_plan, g_km, g_vm)
        if m_plan is None:
            gq_m = g_km.new_zeros(b, h, 0, d)
        else:
            n_src = len(m_plan[2])
            gq_m = _blocks_backward(g_m, m_saved, m_plan, [g_km, gk_a][:n_src], [g_vm, gv_a][:n_src])
        return None, None, gq_a, gk_a, gv_a, gq_m, g_km, g_vm


class _LocalCPU(torch.autograd.Function):
    """One stream's blocked local-window attention (the motion branch's own layers)."""

    @staticmethod
    def forward(ctx, plan, q, k, v):
        out, saved = _blocks_forward(q, (k,), (v,), plan)
        ctx.save_for_backward(*saved)
        ctx.plan, ctx.shape = plan, k.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        gk, gv = g.new_zeros(ctx.shape), g.new_zeros(ctx.shape)
        gq = _blocks_backward(g, ctx.saved_tensors, ctx.plan, [gk], [gv])
        return None, gq, gk, gv


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


def joint(
    layout: JointLayout, q_a: Tensor, k_a: Tensor, v_a: Tensor, q_m: Tensor, k_m: Tensor, v_m: Tensor
) -> tuple[Tensor, Tensor]:
    """Joint attention ``[b, h, L, d]`` per stream, the same function as ``reference``; see the module docstring."""
    lay = layout
    if lay.window is None:  # masks off: one key-padding vector per query stream
        a_valid = lengths_to_mask(lay.audio_lens, lay.n)
        m_valid = lengths_to_mask(lay.motion_lens, lay.m)
        keys_a = torch.cat([a_valid, m_valid & lay.audio_sees_motion[:, None]], 1)
        keys_m = torch.cat([m_valid, a_valid & lay.motion_sees_audio[:, None]], 1)
        out_a = _padded_sdpa(q_a, torch.cat([k_a, k_m], 2), torch.cat([v_a, v_m], 2), keys_a, a_valid)
        out_m = _padded_sdpa(q_m, torch.cat([k_m, k_a], 2), torch.cat([v_m, v_a], 2), keys_m, m_valid)
        return out_a, out_m
    _check_cpu(q_a)
    n, m, num, den = lay.n, lay.m, lay.num, lay.den
    a_lens, m_lens, a_sees, m_sees = lay.host_values()
    dtype, dev = q_a.dtype, q_a.device
    a_plan = _audio_plan(n, m, num, den, a_lens, m_lens, a_sees, dtype, dev)
    m_plan = None
    if m:
        m_plan = _motion_plan(m, n, lay.window, num, den, m_lens, a_lens, m_sees, dtype, dev)
    out_a, out_m = _JointCPU.apply(a_plan, m_plan, q_a, k_a, v_a, q_m, k_m, v_m)
    return out_a, with_unwindowed_motion(lay, out_m, q_m, k_m, v_m, single)


def single(q: Tensor, k: Tensor, v: Tensor, lens: Tensor, window: int | None) -> Tensor:
    """One stream ``[b, h, L, d]`` over valid keys, with ``|i - j| <= window`` unless ``window`` is None."""
    L = q.shape[2]
    if window is None or window >= L - 1:
        valid = lengths_to_mask(lens, L)
        return _padded_sdpa(q, k, v, valid, valid)
    _check_cpu(q)
    plan = _motion_plan(L, 0, window, 1, 1, tuple(lens.tolist()), None, None, q.dtype, q.device)
    return _LocalCPU.apply(plan, q, k, v)
