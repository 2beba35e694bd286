"""The Triton kernel of the ``fused`` backend against ``reference`` (values and gradients, fp32), on the CPU.

Run by ``tests/test_attention_triton.py`` in a subprocess with ``TRITON_INTERPRET=1`` (the variable must be set
before Triton is imported, so these cases cannot share the main test process). Run directly with
``TRITON_INTERPRET=1 python -m pytest tests/interpreted/attention_triton_cases.py``; on a CUDA machine the same
cases run on the GPU without the variable.

Dimension legend: b batch, h heads, d head dim, n audio frames, m motion frames. Masks: True = valid.
"""

from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
    pytest.skip("needs TRITON_INTERPRET=1 (CPU) or a CUDA device", allow_module_level=True)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from jam_flow.nn.attention import JointLayout, implementation, joint_attention, self_attention  # noqa: E402
from jam_flow.nn.attention.triton_kernels import ALIGN, BAND, FULL, XWIN, _key_range, _query_range  # noqa: E402

TRITON = implementation("triton")  # the kernel itself, also on the CPU (where ``fused`` is the decomposition)


def joint_attention_triton(q_a, k_a, v_a, q_m, k_m, v_m, **kw):
    layout = JointLayout.build(n=q_a.shape[2], m=q_m.shape[2], device=q_a.device, **kw)
    return TRITON.joint(layout, q_a, k_a, v_a, q_m, k_m, v_m)


def self_attention_triton(q, k, v, lens, window):
    return TRITON.single(q, k, v, lens, window)


DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"

# (n, m, audio_lens, motion_lens, window, audio_sees_motion, motion_sees_audio); tiles are 16 x 16 here, so
# these shapes span several tiles per stream, padding, an empty sample and per-sample switches.
CASES = [
    (37, 11, [37, 20], [11, 6], 2, True, True),
    (45, 13, [0, 45], [0, 13], 0, [True, False], [False, True]),
    (9, 1, [9, 5], [1, 1], 7, True, True),
    (33, 10, [33, 29], [10, 9], None, [False, True], True),
]


def _grad_run(fn, ins, kw, grads):
    xs = [t.clone().requires_grad_() for t in ins]
    out = fn(*xs, **kw)
    sum((o * g).sum() for o, g in zip(out, grads, strict=True)).backward()
    return list(out) + [x.grad for x in xs]


# (case as above, h, d, (sample_rate, hop_length, fps)): several heads (b = bh // h), a head dim padded inside the
# kernel (d = 24 -> 32), frame ratios num / den = 1 / 4 (num 1), 256 / 735 and 2 / 1 (more motion than audio
# frames), and a window far above every length (capped by the launcher; uncapped, (j + W + 1) * den overflows int32).
VARIANTS = [
    ((37, 11, [37, 20], [11, 6], 2, True, [True, False]), 2, 24, (24000, 256, 25)),
    ((40, 10, [40, 31], [10, 8], 1, True, True), 1, 16, (16000, 160, 25)),
    ((50, 17, [50, 33], [17, 12], 3, [False, True], True), 2, 16, (22050, 256, 30)),
    ((12, 25, [12, 7], [25, 14], 2, True, True), 1, 16, (16000, 640, 50)),
    ((37, 11, [37, 20], [11, 6], 2 * 10**8, True, True), 1, 16, (24000, 256, 25)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"n{c[0]}m{c[1]}W{c[4]}")
def test_triton_joint_matches_reference(case):
    _check_joint(case)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"n{v[0][0]}m{v[0][1]}W{v[0][4]}h{v[1]}d{v[2]}")
def test_triton_joint_variants_match_reference(variant):
    case, h, d, (sr, hop, fps) = variant
    _check_joint(case, h=h, d=d, rates=dict(sample_rate=sr, hop_length=hop, fps=fps))


def _check_joint(case, h=1, d=16, rates=None):
    n, m, la, lm, window, a_sw, m_sw = case
    g = torch.Generator().manual_seed(n * m)
    b = 2
    ins = [torch.randn(b, h, L, d, generator=g).to(DEVICE) for L in (n, n, n, m, m, m)]
    grads = [torch.randn(b, h, n, d, generator=g).to(DEVICE), torch.randn(b, h, m, d, generator=g).to(DEVICE)]

    def flag(x):
        return torch.tensor(x, device=DEVICE) if isinstance(x, list) else x

    kw = dict(
        audio_lens=torch.tensor(la, device=DEVICE),
        motion_lens=torch.tensor(lm, device=DEVICE),
        window=window,
        audio_sees_motion=flag(a_sw),
        motion_sees_audio=flag(m_sw),
        **(rates or {}),
    )
    want = _grad_run(lambda *a, **k: joint_attention(*a, **k, backend="reference"), ins, kw, grads)
    got = _grad_run(joint_attention_triton, ins, kw, grads)
    names = ["out_a", "out_m", "dq_a", "dk_a", "dv_a", "dq_m", "dk_m", "dv_m"]
    for name, x, y in zip(names, got, want, strict=True):
        assert not torch.isnan(x).any(), name
        torch.testing.assert_close(x, y, atol=5e-5, rtol=1e-4, msg=lambda s, name=name: f"{name}: {s}")


@pytest.mark.parametrize("window", [None, 3])
def test_triton_self_attention_matches_reference(window):
    g = torch.Generator().manual_seed(7)
    q, k, v, go = (torch.randn(2, 1, 29, 16, generator=g).to(DEVICE) for _ in range(4))
    lens = torch.tensor([29, 0], device=DEVICE)
    want = _grad_run(lambda *a: [self_attention(*a, lens, window, backend="reference")], (q, k, v), {}, [go])
    got = _grad_run(lambda *a: [self_attention_triton(*a, lens, window)], (q, k, v), {}, [go])
    for x, y in zip(got, want, strict=True):
        assert not torch.isnan(x).any()
        torch.testing.assert_close(x, y, atol=5e-5, rtol=1e-4)


# Frame ratios num / den of (24000, 256, 25), (16000, 160, 25), (22050, 256, 30), (16000, 640, 50) and 1 / 1.
RATIOS = [(4, 15), (1, 4), (256, 735), (2, 1), (1, 1)]


def _rule(kind, q, k, W, num, den):
    if kind == ALIGN:
        return (q * num) // den == k
    if kind == BAND:
        return abs(q - k) <= W
    if kind == XWIN:
        return abs((k * num) // den - q) <= W
    return True


@triton.jit
def _ranges_kernel(
    LO_IN, HI_IN, LEN, LO, HI, W, NUM, DEN, KIND: tl.constexpr, KEYS: tl.constexpr, N: tl.constexpr
):
    """The tile-range helpers of the kernels, elementwise over ``N`` tiles (``[q_lo, q_hi)`` or ``[k_lo, k_hi)``)."""
    i = tl.arange(0, N)
    a = tl.load(LO_IN + i)
    z = tl.load(HI_IN + i)
    n = tl.load(LEN + i)
    if KEYS:
        lo, hi = _key_range(KIND, a, z, n, W, NUM, DEN)
    else:
        lo, hi = _query_range(KIND, a, z, n, W, NUM, DEN)
    tl.store(LO + i, lo)
    tl.store(HI + i, hi)


@pytest.mark.parametrize("kind", [FULL, ALIGN, BAND, XWIN])
@pytest.mark.parametrize("ratio", RATIOS, ids=lambda r: f"{r[0]}over{r[1]}")
def test_tile_ranges_cover_every_pair(kind, ratio):
    """``_key_range`` / ``_query_range`` against brute force: every (query, key) pair of the rule lies inside.

    Rows start near 0 with windows up to 9, so ``q_lo - W`` and friends go negative (the GPU's integer division
    truncates toward zero; the helpers must only divide non-negative values); empty and clipped tiles included.
    """
    num, den = ratio
    g = torch.Generator().manual_seed(kind * 100 + num)
    N = 256
    lo_in = torch.randint(0, 48, (N,), generator=g, dtype=torch.int32)
    hi_in = lo_in + torch.randint(-3, 17, (N,), generator=g, dtype=torch.int32)  # some empty tiles
    lens = torch.randint(0, 64, (N,), generator=g, dtype=torch.int32)
    for W in (0, 1, 4, 9):
        for keys in (True, False):
            out_lo, out_hi = (torch.empty(N, dtype=torch.int32, device=DEVICE) for _ in range(2))
            _ranges_kernel[(1,)](
                lo_in.to(DEVICE),
                hi_in.to(DEVICE),
                lens.to(DEVICE),
                out_lo,
                out_hi,
                W,
                num,
                den,
                kind,
                keys,
                N,
            )
            out_lo, out_hi = out_lo.cpu().tolist(), out_hi.cpu().tolist()
            for r in range(N):
                a, z, n_other = int(lo_in[r]), int(hi_in[r]), int(lens[r])
                where = (kind, ratio, W, keys, a, z, n_other)
                # keys: query rows [a, z) -> keys [0, n_other); else key rows [a, z) -> queries [0, n_other)
                pairs = ((t, x) if keys else (x, t) for x in range(n_other) for t in range(a, z))
                need = sorted({p[1] if keys else p[0] for p in pairs if _rule(kind, *p, W, num, den)})
                if need:
                    assert out_lo[r] <= need[0] and need[-1] < out_hi[r], where
                assert out_lo[r] >= 0 and out_hi[r] <= n_other, where
