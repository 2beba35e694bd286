"""RoPE: interleaved rotation, the F5-TTS frequencies, and the per-sample cross-modal alignment (paper §4.3)."""

from __future__ import annotations

import math

import pytest
import torch

from jam_flow.features import audio_to_motion_frame
from jam_flow.nn.rope import RotaryEmbedding, aligned_positions, apply_rope, rotate_pairs


def assert_close(got, want, atol=1e-6, rtol=1e-6):
    """``|got - want| <= atol + rtol |want|`` elementwise (without torch.testing, whose import costs seconds)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    bad = (got - want).abs() > atol + rtol * want.abs()
    assert not bad.any(), f"max abs diff {(got - want).abs().max().item():.3g}"


def test_inv_freq_and_angles_follow_the_formula():
    rope = RotaryEmbedding(8)
    want = torch.tensor([10000 ** (-2 * j / 8) for j in range(4)], dtype=torch.float32)
    assert_close(rope.inv_freq, want)
    assert "inv_freq" in rope.state_dict()  # persistent, as in F5-TTS checkpoints
    ang = rope.angles(torch.tensor([0, 3]))
    assert ang.shape == (1, 2, 8)
    # each frequency repeated in place: [f0, f0, f1, f1, ...]
    assert_close(ang[0, 1], 3 * want.repeat_interleave(2))
    assert torch.equal(ang[0, 0], torch.zeros(8))


def test_rotation_pairs_are_interleaved():
    x = torch.arange(1.0, 7.0)  # pairs (1,2) (3,4) (5,6)
    assert rotate_pairs(x).tolist() == [-2.0, 1.0, -4.0, 3.0, -6.0, 5.0]
    theta = 0.3
    q = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 4)
    angles = torch.full((1, 1, 4), theta)
    got = apply_rope(q, angles).flatten().tolist()
    c, s = math.cos(theta), math.sin(theta)
    want = [1 * c - 2 * s, 1 * s + 2 * c, 3 * c - 4 * s, 3 * s + 4 * c]
    assert got == pytest.approx(want, abs=1e-6)


def test_relative_positions_and_rotary_heads():
    rope = RotaryEmbedding(16)
    q, k = torch.randn(1, 3, 1, 16), torch.randn(1, 3, 1, 16)

    def score(pq, pk):
        aq, ak = rope.angles(torch.tensor([float(pq)])), rope.angles(torch.tensor([float(pk)]))
        return (apply_rope(q, aq) * apply_rope(k, ak)).sum(-1)

    assert_close(score(5, 2), score(13, 10), atol=1e-5, rtol=1e-5)  # depends on p - p' only
    assert not torch.allclose(score(5, 2), score(5, 3))
    out = apply_rope(q, rope.angles(torch.tensor([7.0])), rotary_heads=1)
    assert torch.equal(out[:, 1:], q[:, 1:])  # heads >= pe_attn_head are untouched
    assert not torch.allclose(out[:, :1], q[:, :1])
    assert_close(out.norm(dim=-1), q.norm(dim=-1))  # a rotation


def test_length_alignment_puts_one_instant_at_one_angle():
    # sample 0: 30 audio / 8 motion frames, sample 1: 60 / 16 (ratio 3.75 = 93.75 fps / 25 fps)
    la, lm = torch.tensor([30, 60]), torch.tensor([8, 16])
    pos_a, pos_m = aligned_positions(la, lm, n=64, m=20, mode="length")
    rope = RotaryEmbedding(8)
    ang_a, ang_m = rope.angles(pos_a), rope.angles(pos_m)
    # motion frame j and audio frame 3.75 j are the same instant (j / 25 s = i * 256 / 24000 s)
    for b, frames in ((0, (0, 4)), (1, (0, 4, 8, 12))):
        for j in frames:
            i = int(j * 15 // 4)
            assert audio_to_motion_frame(i) == j
            assert torch.equal(ang_a[b, i], ang_m[b, j]), (b, i, j)
    # the longer stream (audio) keeps exactly F5-TTS's integer positions
    assert torch.equal(pos_a, torch.arange(64.0)[None].expand(2, -1))
    # paper formula phi(p) = p / L * L_ref
    assert_close(pos_m[0, :8], torch.arange(8.0) / 8 * 30)


def test_rate_and_off_modes():
    la, lm = torch.tensor([15, 40]), torch.tensor([4, 11])
    pos_a, pos_m = aligned_positions(la, lm, n=40, m=11, mode="rate", rate_ratio=24000 / 256 / 25)
    assert torch.equal(pos_m[1], torch.arange(11.0) * 3.75)
    assert torch.equal(pos_a[1], torch.arange(40.0))
    off_a, off_m = aligned_positions(la, lm, n=40, m=11, mode="off")
    assert torch.equal(off_m[0], torch.arange(11.0)) and torch.equal(off_a[0], torch.arange(40.0))
    with pytest.raises(ValueError, match="rope alignment"):
        aligned_positions(la, lm, 40, 11, mode="sideways")


def test_positions_of_valid_frames_do_not_depend_on_padding():
    la, lm = torch.tensor([30, 18]), torch.tensor([8, 7])
    a1, m1 = aligned_positions(la, lm, n=30, m=8)
    a2, m2 = aligned_positions(la, lm, n=50, m=20)  # more padding in both streams
    assert torch.equal(a1, a2[:, :30]) and torch.equal(m1, m2[:, :8])
    # a sample whose motion is longer than its audio (relative to the clocks): the audio gets stretched instead
    a3, m3 = aligned_positions(torch.tensor([4]), torch.tensor([8]), n=4, m=8)
    assert torch.equal(m3[0], torch.arange(8.0)) and torch.equal(a3[0], torch.arange(4.0) * 2)
