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

from jam_flow.nn.attention import joint_attention, self_attention  # noqa: E402
from jam_flow.nn.attention_triton import joint_attention_triton, self_attention_triton  # noqa: E402

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


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"n{c[0]}m{c[1]}W{c[4]}")
def test_triton_joint_matches_reference(case):
    n, m, la, lm, window, a_sw, m_sw = case
    g = torch.Generator().manual_seed(n * m)
    b, h, d = 2, 1, 16
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
