"""Every attention backend equals ``reference`` (values and gradients) on the CPU; frame mapping; ``auto``.

Dimension legend: b batch, h heads, d head dim, n audio frames, m motion frames. Masks: True = valid.
"""

from __future__ import annotations

import pytest
import torch

from jam_flow.features import audio_to_motion_frame, first_audio_frame, frame_of, frame_ratio
from jam_flow.nn.attention import (
    BACKENDS,
    SELF_BACKENDS,
    JointLayout,
    implementation,
    joint_attention,
    joint_attention_in,
    resolve,
    resolve_backend,
    self_attention,
    triton_available,
)
from jam_flow.nn.masks import joint_attention_masks

WINDOWS = [0, 1, 2, 4, 7, None]
# (n, m, audio_lens, motion_lens): odd lengths, padding, an empty sample, motion length 1, audio < window
SHAPES = [
    (37, 11, [37, 23], [11, 7]),
    (53, 15, [41, 0], [13, 0]),
    (9, 1, [9, 4], [1, 1]),
    (5, 2, [5, 3], [2, 1]),
]
SWITCHES = [
    (True, True),
    (False, False),
    (torch.tensor([True, False]), torch.tensor([False, True])),
]


def _inputs(n: int, m: int, b: int = 2, h: int = 2, d: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, L, d, generator=g) for L in (n, n, n, m, m, m)]


def _run(backend: str, ins, kw, grad_outs=None):
    xs = [t.clone().requires_grad_(grad_outs is not None) for t in ins]
    out = joint_attention(*xs, **kw, backend=backend)
    if grad_outs is None:
        return list(out)
    loss = sum((o * g).sum() for o, g in zip(out, grad_outs, strict=True))
    loss.backward()
    return list(out) + [x.grad for x in xs]


def _close(got, want, what):
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert not torch.isnan(a).any(), f"{what}: NaN in output {i}"
        torch.testing.assert_close(a, b, atol=3e-5, rtol=1e-4, msg=lambda s, i=i: f"{what} tensor {i}: {s}")


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"n{s[0]}m{s[1]}")
def test_fused_and_flex_match_reference(shape, window):
    n, m, la, lm = shape
    ins = _inputs(n, m, seed=n + m)
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(2, 2, n, 8, generator=g), torch.randn(2, 2, m, 8, generator=g)]
    for a_sw, m_sw in SWITCHES:
        kw = dict(
            audio_lens=torch.tensor(la),
            motion_lens=torch.tensor(lm),
            window=window,
            audio_sees_motion=a_sw,
            motion_sees_audio=m_sw,
        )
        want = _run("reference", ins, kw, grads)
        _close(_run("fused", ins, kw, grads), want, f"fused {shape} W={window} switches={a_sw},{m_sw}")
        with torch.no_grad():  # FlexAttention: forward only on the CPU
            _close(_run("flex", ins, kw), want[:2], f"flex {shape} W={window} switches={a_sw},{m_sw}")


@pytest.mark.parametrize("window", [0, 2])
def test_window_kept_without_alpha_matches_reference(window):
    """``window_with_alpha=False`` (models trained before Algorithm 2 line 4 was followed): the motion window stays
    for samples with ``motion_sees_audio`` off, in every backend; samples with it on equal the default rule."""
    n, m, la, lm = 37, 11, [37, 23], [11, 7]
    ins = _inputs(n, m, seed=5)
    g = torch.Generator().manual_seed(6)
    grads = [torch.randn(2, 2, n, 8, generator=g), torch.randn(2, 2, m, 8, generator=g)]
    kw = dict(
        audio_lens=torch.tensor(la),
        motion_lens=torch.tensor(lm),
        window=window,
        audio_sees_motion=torch.tensor([True, False]),
        motion_sees_audio=torch.tensor([True, False]),
    )
    old = {**kw, "window_with_alpha": False}
    want = _run("reference", ins, old, grads)
    _close(_run("fused", ins, old, grads), want, f"fused W={window} window kept")
    with torch.no_grad():
        _close(_run("flex", ins, old), want[:2], f"flex W={window} window kept")
        new_m = _run("reference", ins, kw)[1]
    assert torch.equal(new_m[0], want[1][0])  # alpha = 1: the same masks
    assert not torch.allclose(new_m[1], want[1][1])  # alpha = 0: the window is lifted


def test_padding_semantics():
    """Padded query rows are zero, padded keys get no weight, an empty sample gives zeros and no NaN."""
    n, m = 21, 6
    ins = _inputs(n, m)
    kw = dict(audio_lens=torch.tensor([15, 0]), motion_lens=torch.tensor([4, 0]), window=2)
    for backend in ("reference", "fused", "flex"):
        with torch.no_grad():
            out_a, out_m = joint_attention(*ins, **kw, backend=backend)
            assert out_a[0, :, 15:].abs().max() == 0 and out_m[0, :, 4:].abs().max() == 0, backend
            assert out_a[1].abs().max() == 0 and out_m[1].abs().max() == 0, backend
            # changing padded keys changes nothing
            ins2 = [t.clone() for t in ins]
            for t in ins2[1:3]:
                t[0, :, 15:] = 1e3
            for t in ins2[4:6]:
                t[0, :, 4:] = -1e3
            out_a2, out_m2 = joint_attention(*ins2, **kw, backend=backend)
        torch.testing.assert_close(out_a2, out_a)
        torch.testing.assert_close(out_m2, out_m)


def test_fused_matches_reference_at_default_window_larger_sizes():
    """Several motion blocks and a realistic window (W=4) at 7 s-like proportions (fp32)."""
    n, m = 301, 81
    ins = _inputs(n, m, b=1, h=2, d=16, seed=3)
    g = torch.Generator().manual_seed(2)
    grads = [torch.randn(1, 2, n, 16, generator=g), torch.randn(1, 2, m, 16, generator=g)]
    kw = dict(audio_lens=torch.tensor([n]), motion_lens=torch.tensor([m]), window=4)
    _close(_run("fused", ins, kw, grads), _run("reference", ins, kw, grads), "fused 301/81")


@pytest.mark.parametrize("window", [0, 4, 20])
@pytest.mark.parametrize("rates", [(24000, 256, 25), (16000, 160, 30), (22050, 256, 25)])
def test_fused_multi_block_matches_reference(rates, window):
    """Several motion blocks (block size rounded to the frame ratio's numerator: 4, 3 and 128 here), padding in
    the second sample, every switch combination: values and gradients equal ``reference``."""
    sr, hop, fps = rates
    m = 150
    n = -(-m * sr // (hop * fps))  # audio frames covering the motion frames
    ins = _inputs(n, m, seed=7)
    g = torch.Generator().manual_seed(8)
    grads = [torch.randn(2, 2, n, 8, generator=g), torch.randn(2, 2, m, 8, generator=g)]
    for a_sw, m_sw in SWITCHES:
        kw = dict(
            audio_lens=torch.tensor([n, n - 37]),
            motion_lens=torch.tensor([m, m - 41]),
            window=window,
            audio_sees_motion=a_sw,
            motion_sees_audio=m_sw,
            sample_rate=sr,
            hop_length=hop,
            fps=fps,
        )
        what = f"fused {rates} W={window} switches={a_sw},{m_sw}"
        _close(_run("fused", ins, kw, grads), _run("reference", ins, kw, grads), what)


@pytest.mark.parametrize("window", WINDOWS)
def test_self_attention_backends_match_reference(window):
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(3, 2, 45, 8, generator=g) for _ in range(3))
    lens = torch.tensor([45, 17, 0])
    go = torch.randn(3, 2, 45, 8, generator=g)

    def run(backend, grad=True):
        xs = [t.clone().requires_grad_(grad) for t in (q, k, v)]
        out = self_attention(*xs, lens, window, backend=backend)
        if not grad:
            return [out]
        (out * go).sum().backward()
        return [out] + [x.grad for x in xs]

    want = run("reference")
    _close(run("fused"), want, f"self fused W={window}")
    with torch.no_grad():
        _close(run("flex", grad=False), want[:1], f"self flex W={window}")


@pytest.mark.parametrize("rates", [(24000, 256, 25), (16000, 160, 30), (22050, 256, 25), (44100, 512, 24)])
def test_frame_mapping_is_exact_integer(rates):
    sr, hop, fps = rates
    num, den = frame_ratio(sr, hop, fps)
    i = torch.arange(5000)
    assert torch.equal(frame_of(i, num, den), audio_to_motion_frame(i, sr, hop, fps))
    assert torch.equal(frame_of(i, num, den), (i * hop * fps) // sr)
    j = torch.arange(-5, 300)
    first = first_audio_frame(j, num, den)  # smallest i with f(i) >= j
    assert torch.all(frame_of(first.clamp(min=0), num, den) >= j)
    assert torch.all((first <= 0) | (frame_of(first - 1, num, den) < j))


def test_non_default_rates_match_reference():
    n, m = 40, 19
    ins = _inputs(n, m)
    kw = dict(
        audio_lens=torch.tensor([40, 33]),
        motion_lens=torch.tensor([19, 15]),
        window=1,
        sample_rate=16000,
        hop_length=160,
        fps=30,
    )
    g = torch.Generator().manual_seed(5)
    grads = [torch.randn(2, 2, n, 8, generator=g), torch.randn(2, 2, m, 8, generator=g)]
    _close(_run("fused", ins, kw, grads), _run("reference", ins, kw, grads), "fused 16k/160/30fps")


def test_auto_resolution_and_validation():
    assert resolve_backend("auto", "cpu") == "fused"
    assert resolve_backend("auto", "cpu", SELF_BACKENDS) == "fused"
    assert set(BACKENDS) == {"reference", "fused", "flex"} == set(SELF_BACKENDS)
    with pytest.raises(ValueError, match="attention backend"):
        resolve_backend("dense", "cpu")
    ins = _inputs(12, 4)
    with pytest.raises(RuntimeError, match="no backward on the CPU"):
        joint_attention(
            *[t.requires_grad_() for t in ins],
            torch.tensor([12, 12]),
            torch.tensor([4, 4]),
            1,
            backend="flex",
        )


def test_reference_masks_follow_the_rules():
    """Spot-check the dense reference masks that every backend is compared against (paper §4.4)."""
    mask_a, mask_m = joint_attention_masks(torch.tensor([30]), torch.tensor([8]), 30, 8, 1)
    f = (4 * torch.arange(30)) // 15
    assert torch.equal(mask_a[0, :, 30:].nonzero()[:, 1], f)  # one aligned motion key per audio frame
    assert mask_a[0, :, :30].all()
    j = torch.arange(8)
    assert torch.equal(mask_m[0, :, :8], (j[:, None] - j[None]).abs() <= 1)
    assert torch.equal(mask_m[0, :, 8:], (f[None] - j[:, None]).abs() <= 1)


def test_fused_non_contiguous_inputs_and_larger_batch():
    """Inputs laid out ``[b, L, h, d]`` (as the model's projections give them) and a batch of 3 with several
    motion blocks: values and gradients equal ``reference``."""
    n, m, b = 190, 70, 3
    g = torch.Generator().manual_seed(11)
    ins = [torch.randn(b, L, 2, 8, generator=g).transpose(1, 2) for L in (n, n, n, m, m, m)]
    assert not ins[0].is_contiguous()
    grads = [torch.randn(b, 2, n, 8, generator=g), torch.randn(b, 2, m, 8, generator=g)]
    kw = dict(audio_lens=torch.tensor([n, 150, 9]), motion_lens=torch.tensor([m, 40, 70]), window=3)

    def run(backend):
        xs = [t.detach().requires_grad_(True) for t in ins]
        out = joint_attention(*xs, **kw, backend=backend)
        sum((o * gr).sum() for o, gr in zip(out, grads, strict=True)).backward()
        return list(out) + [x.grad for x in xs]

    _close(run("fused"), run("reference"), "fused non-contiguous b=3")


def test_fused_bfloat16_on_cpu():
    """bf16 inputs: the fused backend stays within bf16 rounding of the fp32 reference (values and gradients)."""
    n, m = 150, 40
    ins = _inputs(n, m, seed=12)
    g = torch.Generator().manual_seed(13)
    grads = [torch.randn(2, 2, n, 8, generator=g), torch.randn(2, 2, m, 8, generator=g)]
    kw = dict(audio_lens=torch.tensor([n, 101]), motion_lens=torch.tensor([m, 27]), window=4)
    want = _run("reference", ins, kw, grads)
    got = _run("fused", [t.bfloat16() for t in ins], kw, [t.bfloat16() for t in grads])
    for i, (a, w) in enumerate(zip(got, want, strict=True)):
        assert a.dtype == torch.bfloat16, i
        torch.testing.assert_close(
            a.float(), w, atol=3e-2, rtol=3e-2, msg=lambda s, i=i: f"bf16 tensor {i}: {s}"
        )


@pytest.mark.parametrize(
    ("start", "stride", "size", "nb", "L"),
    [(-4, 32, 40, 5, 150), (-15, 120, 150, 3, 300), (-3, 9, 9, 1, 4), (2, 5, 12, 4, 20)],
)
def test_window_gather_and_scatter_are_adjoint(start, stride, size, nb, L):
    """``<gather(x), g> == <x, scatter(g)>`` for strided overlapping windows that run past either end, into a
    non-contiguous destination; rows outside the source read as zeros."""
    from jam_flow.nn.attention.cpu_decomposition import _gather_windows, _scatter_windows

    gen = torch.Generator().manual_seed(start + L)
    x = torch.randn(2, L, 3, 4, generator=gen, dtype=torch.float64).transpose(1, 2)  # [b, h, L, d], strided
    dst = torch.full((2, nb, 3, size + 2, 4), float("nan"), dtype=torch.float64).transpose(1, 2)
    _gather_windows(dst, x, start, stride, size, 1)
    win = dst[:, :, :, 1 : 1 + size]
    for c in range(nb):
        for r in range(size):
            p = start + c * stride + r
            want = x[:, :, p] if 0 <= p < L else torch.zeros_like(x[:, :, 0])
            assert torch.equal(win[:, :, c, r], want), (c, r)
    g = torch.randn(2, 3, nb, size + 2, 4, generator=gen, dtype=torch.float64)
    acc = torch.zeros(2, L, 3, 4, dtype=torch.float64).transpose(1, 2)
    _scatter_windows(acc, g, start, stride, size, 1)
    torch.testing.assert_close((win * g[:, :, :, 1 : 1 + size]).sum(), (x * acc).sum())


def test_registry_routes_backends_to_implementations():
    """One table: (backend, device) -> implementation; ``fused`` is two implementations, one per device."""
    assert resolve("fused", "cpu").name == "cpu_decomposition"
    assert resolve("auto", "cpu").name == "cpu_decomposition"
    assert resolve("reference", "cuda").name == "reference"
    assert resolve("flex", "cpu").name == "flex"
    if triton_available():
        assert resolve("fused", "cuda").name == "triton"
    else:
        with pytest.raises(RuntimeError, match="needs Triton"):
            resolve("fused", "cuda")
    with pytest.raises(ValueError, match="attention implementation"):
        implementation("fused")


def test_layout_built_once_equals_per_call_and_checks_arguments():
    """``joint_attention_in`` with a prepared layout equals the public call; bad arguments fail in ``build``."""
    n, m = 37, 11
    ins = _inputs(n, m, seed=21)
    la, lm, sw = torch.tensor([37, 23]), torch.tensor([11, 7]), torch.tensor([True, False])
    layout = JointLayout.build(la, lm, n, m, 4, sw, True, 16000, 160, 30)
    assert (layout.num, layout.den) == frame_ratio(16000, 160, 30)
    assert layout.host == ((37, 23), (11, 7), (True, False), (True, True))
    for backend in ("reference", "fused"):
        got = joint_attention_in(layout, *ins, backend=backend)
        want = joint_attention(*ins, la, lm, 4, sw, True, backend, 16000, 160, 30)
        _close(got, want, f"layout {backend}")
    wide = joint_attention_in(layout.with_window(None), *ins, backend="fused")
    _close(wide, joint_attention(*ins, la, lm, None, sw, True, "reference", 16000, 160, 30), "with_window")
    with pytest.raises(ValueError, match="window must be >= 0"):
        JointLayout.build(la, lm, n, m, -1)
    with pytest.raises(ValueError, match="window must be >= 0"):
        self_attention(*ins[:3], la, -2)
    with pytest.raises(ValueError, match="per-sample switch"):
        JointLayout.build(la, lm, n, m, 2, torch.tensor([True]))
    with pytest.raises(ValueError, match="shape \\[b\\]"):
        JointLayout.build(la, lm[:1], n, m, 2)
    with pytest.raises(ValueError, match="audio_lens must lie in"):
        JointLayout.build(torch.tensor([38, 2]), lm, n, m, 2, check_values=True)
