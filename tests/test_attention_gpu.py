"""GPU exactness: ``fused`` (Triton) and ``flex`` against ``reference`` in bf16 with bf16 tolerances (CUDA only).

Dimension legend: b batch, h heads, d head dim, n audio frames, m motion frames. Masks: True = valid.
The reference runs in fp32 on the same (bf16-rounded) inputs; the backends run in bf16.
"""

from __future__ import annotations

import pytest
import torch

from jam_flow.nn.attention import joint_attention, self_attention

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SHAPES = [
    (37, 11, [37, 23], [11, 7]),
    (300, 80, [300, 0], [80, 0]),
    (1875, 500, [1875, 1201], [500, 321]),
]


def _run(backend, ins, kw, grads, dtype):
    xs = [t.to(dtype).requires_grad_() for t in ins]
    out = joint_attention(*xs, **kw, backend=backend)
    sum((o.float() * g).sum() for o, g in zip(out, grads, strict=True)).backward()
    return [o.float() for o in out] + [x.grad.float() for x in xs]


@pytest.mark.parametrize("backend", ["fused", "flex"])
@pytest.mark.parametrize("window", [0, 2, 4, None])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"n{s[0]}m{s[1]}")
def test_gpu_backend_matches_reference_bf16(backend, window, shape):
    n, m, la, lm = shape
    g = torch.Generator(device="cuda").manual_seed(n)
    b, h, d = 2, 4, 64
    ins = [torch.randn(b, h, L, d, device="cuda", generator=g).bfloat16().float() for L in (n, n, n, m, m, m)]
    grads = [
        torch.randn(b, h, n, d, device="cuda", generator=g),
        torch.randn(b, h, m, d, device="cuda", generator=g),
    ]
    kw = dict(
        audio_lens=torch.tensor(la, device="cuda"),
        motion_lens=torch.tensor(lm, device="cuda"),
        window=window,
        audio_sees_motion=torch.tensor([True, False], device="cuda"),
        motion_sees_audio=True,
    )
    want = _run("reference", ins, kw, grads, torch.float32)
    got = _run(backend, ins, kw, grads, torch.bfloat16)
    for i, (x, y) in enumerate(zip(got, want, strict=True)):
        assert torch.isfinite(x).all(), i
        scale = y.abs().max().clamp(min=1.0)
        assert (x - y).abs().max() <= 3e-2 * scale, (backend, window, i, (x - y).abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gpu_fused_other_dtypes(dtype):
    n, m = 200, 54
    g = torch.Generator(device="cuda").manual_seed(1)
    ins = [torch.randn(2, 2, L, 64, device="cuda", generator=g).to(dtype).float() for L in (n, n, n, m, m, m)]
    grads = [
        torch.randn(2, 2, n, 64, device="cuda", generator=g),
        torch.randn(2, 2, m, 64, device="cuda", generator=g),
    ]
    kw = dict(
        audio_lens=torch.tensor([200, 150], device="cuda"),
        motion_lens=torch.tensor([54, 41], device="cuda"),
        window=4,
    )
    want = _run("reference", ins, kw, grads, torch.float32)
    got = _run("fused", ins, kw, grads, dtype)
    tol = 1e-4 if dtype == torch.float32 else 5e-3
    for x, y in zip(got, want, strict=True):
        assert (x - y).abs().max() <= tol * y.abs().max().clamp(min=1.0)


@pytest.mark.parametrize("window", [None, 5])
def test_gpu_self_attention_bf16(window):
    g = torch.Generator(device="cuda").manual_seed(2)
    q, k, v = (torch.randn(2, 4, 333, 64, device="cuda", generator=g).bfloat16() for _ in range(3))
    lens = torch.tensor([333, 100], device="cuda")
    want = self_attention(q.float(), k.float(), v.float(), lens, window, backend="reference")
    for backend in ("fused", "flex"):
        got = self_attention(q, k, v, lens, window, backend=backend).float()
        assert (got - want).abs().max() <= 3e-2 * want.abs().max().clamp(min=1.0), backend
