"""Sync and audio metrics on hand-made signals."""

from __future__ import annotations

import math

import pytest
import torch

from jam_flow.errors import InputError
from jam_flow.eval.metrics import (
    AVOffset,
    ClipCorrelation,
    DurationError,
    LipSyncScores,
    MelDistance,
    MouthKeypointL2,
    SpeakerSimilarity,
)
from jam_flow.eval.signals import lagged_pearson, masked_pearson, speech_envelope
from jam_flow.features import audio_to_motion_frame


def _smooth_noise(b: int, t: int, seed: int) -> torch.Tensor:
    """Band-limited random signals [b, t]: white noise through a short moving average (so lags are resolvable)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t + 4, generator=g)
    return torch.nn.functional.avg_pool1d(x[:, None], 5, 1)[:, 0]


def test_pearson_perfect_and_anti_and_constant():
    x = _smooth_noise(3, 50, 0)
    corr, ok = masked_pearson(x, 2.5 * x + 1.0)
    assert ok.all() and torch.allclose(corr, torch.ones(3), atol=1e-6)
    corr, _ = masked_pearson(x, -x)
    assert torch.allclose(corr, -torch.ones(3), atol=1e-6)
    corr, ok = masked_pearson(x, torch.zeros_like(x))
    assert ok.all() and torch.equal(corr, torch.zeros(3))


def test_pearson_ignores_invalid_frames():
    x = _smooth_noise(1, 40, 1)
    y = x.clone()
    y[:, 30:] = torch.randn(1, 10) * 100  # garbage in the padded tail
    mask = torch.zeros(1, 40, dtype=torch.bool)
    mask[:, :30] = True
    corr, _ = masked_pearson(x, y, mask)
    assert corr.item() == pytest.approx(1.0, abs=1e-6)
    corr_all, _ = masked_pearson(x, y)
    assert corr_all.item() < 0.5


def test_clip_correlation_perfect_is_one_and_shuffled_near_zero():
    x = _smooth_noise(64, 120, 2)
    metric = ClipCorrelation()
    metric.update(x, 3 * x - 2)
    assert metric.compute().item() == pytest.approx(1.0, abs=1e-5)
    shuffled = ClipCorrelation()
    shuffled.update(x, x.roll(1, dims=0))  # clip i against clip i-1: independent signals
    assert abs(shuffled.compute().item()) < 0.08


def test_clip_correlation_crops_to_common_length_and_skips_short_clips():
    x = _smooth_noise(2, 60, 3)
    metric = ClipCorrelation(min_frames=4)
    metric.update(x, x[:, :50])
    assert metric.compute().item() == pytest.approx(1.0, abs=1e-5)
    metric.update(x[:, :3], x[:, :3])
    assert int(metric.skipped) == 2 and int(metric.clips) == 2


@pytest.mark.parametrize("lag", [-4, -1, 0, 2, 5])
def test_av_offset_recovers_known_lag(lag: int):
    env = _smooth_noise(8, 150, 4)
    mouth = env.roll(lag, dims=1)  # mouth[j + lag] == env[j]: the mouth follows the sound by `lag` frames
    metric = AVOffset(max_lag=8)
    metric.update(mouth, env)
    out = metric.compute()
    assert out["offset_frames"] == lag
    assert out["mean_offset"] == pytest.approx(lag)
    assert out["within_one_frame"] == (1.0 if abs(lag) <= 1 else 0.0)
    assert out["peak_corr"] > 0.9
    curve = metric.curve()
    assert curve.shape == (17,) and int(curve.argmax()) - 8 == lag


def test_lagged_pearson_sign_convention():
    y = _smooth_noise(1, 80, 5)
    x = torch.zeros_like(y)
    x[:, 3:] = y[:, :-3]  # x[j + 3] = y[j]
    corr, ok = lagged_pearson(
        x, y, torch.ones_like(x, dtype=torch.bool), torch.ones_like(y, dtype=torch.bool), 5
    )
    assert ok.all() and int(corr[0].argmax()) - 5 == 3


def _merge_equals_single_pass(make, feed_a, feed_b):
    one = make()
    feed_a(one)
    feed_b(one)
    left, right = make(), make()
    feed_a(left)
    feed_b(right)
    left.merge_state(right)  # what DDP's sum reduction does with two ranks' states
    a, b = one.compute(), left.compute()
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
    else:
        assert a.item() == pytest.approx(b.item(), abs=1e-6)


def test_ddp_style_merge_equals_single_pass():
    x, y = _smooth_noise(6, 90, 6), _smooth_noise(6, 90, 7)
    mask = torch.ones(6, 90, dtype=torch.bool)
    mask[:, 70:] = False
    _merge_equals_single_pass(
        ClipCorrelation, lambda m: m.update(x[:3], y[:3] + x[:3]), lambda m: m.update(x[3:], y[3:])
    )
    _merge_equals_single_pass(
        lambda: AVOffset(max_lag=6),
        lambda m: m.update(x[:2], y[:2]),
        lambda m: m.update(x[2:], x[2:].roll(2, 1), mask[2:], mask[2:]),
    )
    pred, ref = torch.randn(6, 90, 4, 3), torch.randn(6, 90, 4, 3)
    _merge_equals_single_pass(
        MouthKeypointL2,
        lambda m: m.update(pred[:4], ref[:4], mask[:4]),
        lambda m: m.update(pred[4:], ref[4:]),
    )
    mel_a, mel_b = torch.randn(6, 40, 100), torch.randn(6, 44, 100)
    _merge_equals_single_pass(
        MelDistance, lambda m: m.update(mel_a[:1], mel_b[:1]), lambda m: m.update(mel_a[1:], mel_b[1:])
    )
    _merge_equals_single_pass(
        DurationError,
        lambda m: m.update(torch.tensor([90, 100]), torch.tensor([100, 100])),
        lambda m: m.update(torch.tensor([120]), torch.tensor([100])),
    )


def test_mouth_keypoint_l2_known_value_and_mask():
    ref = torch.zeros(1, 4, 4, 3)
    pred = ref.clone()
    pred[..., 0] = 3.0
    pred[..., 1] = 4.0  # every keypoint 5 away
    mask = torch.tensor([[True, True, False, False]])
    pred[:, 2:] = 100.0  # invalid frames must not count
    metric = MouthKeypointL2()
    metric.update(pred.reshape(1, 4, 12), ref.reshape(1, 4, 12), mask)
    assert metric.compute().item() == pytest.approx(5.0)
    with pytest.raises(InputError, match="mouth keypoints"):
        metric.update(torch.zeros(1, 4, 12), torch.zeros(1, 4, 11))


def test_mel_distance_known_values():
    ref = torch.zeros(2, 10, 100)
    pred = ref + 0.5
    metric = MelDistance()
    metric.update(pred, ref[:, :8])  # cropped to the common 8 frames
    out = metric.compute()
    assert out["mel_l1"] == pytest.approx(0.5)
    assert out["lsd_db"] == pytest.approx(0.5 * 20 / math.log(10), rel=1e-6)


def test_duration_error():
    metric = DurationError(frame_rate=100.0)
    metric.update(torch.tensor([110, 90]), torch.tensor([100, 100]))
    out = metric.compute()
    assert (
        out["abs_s"] == pytest.approx(0.1)
        and out["rel"] == pytest.approx(0.1)
        and out["signed_s"] == pytest.approx(0.0)
    )


def test_speaker_similarity_and_lse_average():
    e = torch.randn(3, 16)
    sim = SpeakerSimilarity()
    sim.update(e, 2 * e)
    assert sim.compute().item() == pytest.approx(1.0, abs=1e-6)
    lse = LipSyncScores()
    lse.update(torch.tensor([7.0, 9.0]), torch.tensor([2.0, 4.0]), torch.tensor([0, 2]))
    assert lse.compute() == {"lse_d": 8.0, "lse_c": 3.0, "offset_frames": 1.0}


def test_speech_envelope_uses_exact_frame_mapping():
    n = 94  # ~1 s of mel frames
    mel = torch.full((1, n, 100), math.log(1e-5))
    frames = torch.arange(n)
    loud = audio_to_motion_frame(frames) == 10  # exactly the audio frames of motion frame 10
    mel[0, loud] = 0.0
    env, valid = speech_envelope(mel)
    assert env.shape == (1, audio_to_motion_frame(n - 1) + 1) and valid.all()
    assert int(env[0].argmax()) == 10
    assert torch.allclose(env[0, 9], env[0, 11])  # neighbours untouched: no leakage across the mapping
    mask = torch.ones(1, n, dtype=torch.bool)
    mask[0, 60:] = False
    _, valid = speech_envelope(mel, mask)
    assert int(valid.sum()) == audio_to_motion_frame(59) + 1


def test_envelope_follows_mouth_driven_audio():
    """A mel whose loudness is driven by a mouth-opening signal gives an envelope correlated at lag 0."""
    m = 100
    opening = _smooth_noise(1, m, 8).clamp_min(0)
    n = 15 * m // 4
    frame_of = audio_to_motion_frame(torch.arange(n))
    mel = (opening[0, frame_of.clamp_max(m - 1)] * 3.0 - 4.0)[None, :, None].expand(1, n, 100)
    env, valid = speech_envelope(mel)
    metric = AVOffset(max_lag=5)
    metric.update(opening[:, : env.shape[1]], env, None, valid)
    out = metric.compute()
    assert out["offset_frames"] == 0 and out["peak_corr"] > 0.95


def test_external_models_gate_and_torchscript_speaker(tmp_path):
    import numpy as np

    from jam_flow.eval.external import SpeakerEmbedder, load_asr, normalise_text

    assert normalise_text("Hello, World!  It's  FINE.") == "hello world it's fine"
    with pytest.raises(InputError, match="--asr"):
        load_asr(tmp_path / "no_such_model")

    class Energy(torch.nn.Module):  # a stand-in speaker model: [b, s] -> [b, 2]
        def forward(self, wave: torch.Tensor) -> torch.Tensor:
            return torch.stack([wave.abs().mean(1), wave.pow(2).mean(1)], 1)

    path = tmp_path / "spk.pt2"
    samples = torch.export.Dim("samples", min=2)
    program = torch.export.export(Energy(), (torch.randn(1, 16000),), dynamic_shapes={"wave": {1: samples}})
    torch.export.save(program, str(path))
    emb = SpeakerEmbedder(path, sample_rate=16000)
    wave = np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1
    a, b = emb.embed(wave, 24000), emb.embed(2 * wave, 24000)
    assert a.shape == (2,)
    sim = SpeakerSimilarity()
    sim.update(a[None], a[None])
    assert sim.compute().item() == pytest.approx(1.0, abs=1e-6)
    assert not torch.allclose(a, b)
    with pytest.raises(InputError, match="--speaker-model"):
        SpeakerEmbedder(tmp_path / "missing.pt")
