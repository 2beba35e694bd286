"""Objective (paper eq. 1-4), training masks / scenarios and dropout flags."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jam_flow.features import audio_to_motion_frame
from jam_flow.flow.masking import (
    AUDIO_ONLY,
    BOTH,
    MOTION_ONLY,
    DropoutConfig,
    MaskConfig,
    sample_dropout,
    sample_masks,
)
from jam_flow.flow.objective import FlowBatch, FlowObjective, interpolate, masked_mse, sample_time
from jam_flow.nn.masks import lengths_to_mask


class Recorder(nn.Module):
    """Stand-in with the JointDiT keyword interface: returns learnable predictions and records its inputs."""

    def __init__(self, b: int, n: int, m: int, c: int = 100, dm: int = 12) -> None:
        super().__init__()
        self.pa = nn.Parameter(torch.randn(b, n, c))
        self.pm = nn.Parameter(torch.randn(b, m, dm))
        self.seen: dict = {}

    def forward(self, **kw):
        self.seen = kw
        return self.pa * 1.0, (self.pm * 1.0 if kw.get("motion_x") is not None else None)


def make_batch(b=3, n=60, m=16, lens=(60, 45, 30)):
    a_len = torch.tensor(lens)
    m_len = audio_to_motion_frame(a_len - 1) + 1
    return FlowBatch(
        audio=torch.randn(b, n, 100),
        audio_mask=lengths_to_mask(a_len, n),
        text=torch.randint(0, 10, (b, 7)),
        motion=torch.randn(b, m, 12),
        motion_rest=torch.randn(b, m, 51),
        motion_mask=lengths_to_mask(m_len, m),
    )


def test_interpolation_and_masked_mse():
    x0, x1 = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    xt = interpolate(x0, x1, torch.tensor([0.25, 1.0]))
    assert torch.allclose(xt[0], torch.full((3, 4), 0.25)) and torch.allclose(xt[1], x1[1])
    pred, target = torch.zeros(1, 3, 2), torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    region = torch.tensor([[True, True, False]])
    loss, frames = masked_mse(pred, target, region)
    assert frames == 2 and loss.item() == pytest.approx((1 + 1 + 9 + 9) / 4)
    empty, zero = masked_mse(pred.requires_grad_(), target, torch.zeros(1, 3, dtype=torch.bool))
    assert zero == 0 and empty.item() == 0.0 and empty.requires_grad


def test_loss_only_over_generated_and_valid_frames():
    fb = make_batch()
    b, n, m = 3, fb.audio.shape[1], fb.motion.shape[1]
    net = Recorder(b, n, m)
    g = torch.Generator().manual_seed(3)
    masks = sample_masks(fb.audio_mask.sum(1), n, fb.motion_mask.sum(1), m, MaskConfig(), g, scenario=BOTH)
    drops = sample_dropout(b, DropoutConfig(), g)
    out = FlowObjective()(net, fb, masks, drops, torch.Generator().manual_seed(0))
    out.total.backward()
    region_a = masks.audio_gen & fb.audio_mask
    region_m = masks.motion_gen & fb.motion_mask
    has_grad_a = net.pa.grad.abs().sum(-1) > 0
    has_grad_m = net.pm.grad.abs().sum(-1) > 0
    assert torch.equal(has_grad_a, region_a) and torch.equal(has_grad_m, region_m)
    assert out.audio_frames == int(region_a.sum()) and out.motion_frames == int(region_m.sum())
    # eq. 1: x_t from the same noise the objective drew; target x1 - x0 reproduces the loss
    g2 = torch.Generator().manual_seed(0)
    t = torch.rand(b, generator=g2)
    torch.rand(b, generator=g2)  # the motion time draw (shared time: unused)
    x0 = torch.randn(fb.audio.shape, generator=g2)
    assert torch.allclose(
        net.seen["audio_x"], (1 - t)[:, None, None] * x0 + t[:, None, None] * fb.audio, atol=1e-6
    )
    want = ((net.pa.detach() - (fb.audio - x0)) ** 2).sum(-1)[region_a].sum() / (region_a.sum() * 100)
    assert out.audio.item() == pytest.approx(want.item(), rel=1e-5)
    assert torch.equal(out.time_audio, out.time_motion)  # shared t by default
    # conditioning: data outside the span, zeros inside
    cond = net.seen["audio_cond"]
    assert torch.all(cond[masks.audio_gen] == 0) and torch.equal(
        cond[~masks.audio_gen], fb.audio[~masks.audio_gen]
    )
    assert out.total.item() == pytest.approx(out.audio.item() + out.motion.item(), rel=1e-6)


def test_not_hidden_stream_is_clean_data_at_time_one_without_loss():
    fb = make_batch()
    b, n, m = 3, fb.audio.shape[1], fb.motion.shape[1]
    net = Recorder(b, n, m)
    g = torch.Generator().manual_seed(1)
    masks = sample_masks(
        fb.audio_mask.sum(1), n, fb.motion_mask.sum(1), m, MaskConfig(), g, scenario=MOTION_ONLY
    )
    out = FlowObjective(shared_time=False)(net, fb, masks, sample_dropout(b, DropoutConfig(), g), g)
    assert torch.all(out.time_audio == 1.0) and torch.allclose(net.seen["audio_x"], fb.audio)
    assert out.audio_frames == 0 and out.audio.item() == 0.0 and out.motion_frames > 0
    assert torch.equal(net.seen["audio_cond"], fb.audio)  # nothing hidden: the whole mel is given
    out.total.backward()
    assert net.pa.grad.abs().sum() == 0


def test_time_sampling_modes():
    g = torch.Generator().manual_seed(0)
    u = sample_time(4000, "uniform", generator=g)
    ln = sample_time(4000, "logit_normal", 0.0, 1.0, generator=g)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.03
    assert 0 < ln.min() and ln.max() < 1 and ln.std() < u.std()  # logit-normal concentrates around 0.5
    t_a, t_m = FlowObjective(shared_time=False).sample_times(64, g)
    assert not torch.equal(t_a, t_m)
    with pytest.raises(ValueError):
        sample_time(2, "cosine")


@pytest.mark.parametrize("alignment", ["aligned", "independent"])
def test_scenario_masks(alignment):
    b, n, m = 400, 200, 54
    a_len = torch.randint(20, n + 1, (b,))
    m_len = audio_to_motion_frame(a_len - 1) + 1
    cfg = MaskConfig(span_alignment=alignment, p_whole_audio=0.0, p_whole_motion=0.0)
    masks = sample_masks(a_len, n, m_len, m, cfg, torch.Generator().manual_seed(0))
    sc = masks.scenario
    counts = torch.bincount(sc, minlength=3).float() / b
    assert abs(counts[BOTH] - 0.5) < 0.08 and abs(counts[MOTION_ONLY] - 0.25) < 0.08
    a_valid, m_valid = lengths_to_mask(a_len, n), lengths_to_mask(m_len, m)
    assert not (masks.audio_gen & ~a_valid).any() and not (masks.motion_gen & ~m_valid).any()
    assert not masks.audio_gen[sc == MOTION_ONLY].any() and not masks.motion_gen[sc == AUDIO_ONLY].any()
    hidden_a = sc != MOTION_ONLY
    frac = masks.audio_gen.sum(1).float() / a_len
    assert (frac[hidden_a] >= 0.7 - 1 / 20).all() and (frac[hidden_a] <= 1.0).all()
    # spans are contiguous
    for row in masks.audio_gen[hidden_a][:50]:
        idx = row.nonzero().flatten()
        assert idx.numel() == 0 or idx[-1] - idx[0] + 1 == idx.numel()
    both = (sc == BOTH).nonzero().flatten()
    for i in both[:40].tolist():
        a_idx = masks.audio_gen[i].nonzero().flatten()
        m_idx = masks.motion_gen[i].nonzero().flatten()
        lo, hi = audio_to_motion_frame(a_idx[0]).item(), audio_to_motion_frame(a_idx[-1]).item()
        aligned = m_idx[0].item() == lo and m_idx[-1].item() == min(hi, m_len[i].item() - 1)
        assert aligned if alignment == "aligned" else True
    if alignment == "independent":
        mismatched = sum(
            int(masks.motion_gen[i].nonzero()[0])
            != int(audio_to_motion_frame(masks.audio_gen[i].nonzero()[0]))
            for i in both[:40].tolist()
        )
        assert mismatched > 10


def test_whole_stream_hiding_rates():
    """p_whole_*: a hidden stream is hidden over every valid frame at that rate (task layouts with no given frame)."""
    b, n, m = 20000, 60, 16
    a_len = torch.randint(20, n + 1, (b,))
    m_len = audio_to_motion_frame(a_len - 1) + 1
    cfg = MaskConfig(p_whole_audio=0.3, p_whole_motion=0.6)
    masks = sample_masks(a_len, n, m_len, m, cfg, torch.Generator().manual_seed(0))
    whole_a = masks.audio_gen.sum(1) == a_len
    whole_m = masks.motion_gen.sum(1) == m_len
    # a span of a fraction < 1 never covers the whole clip, so "whole" comes from p_whole_* alone
    assert abs(whole_a[masks.audio_hidden].float().mean().item() - 0.3) < 0.02
    # (in BOTH, an entirely hidden audio also hides the aligned motion entirely)
    assert abs(whole_m[masks.scenario == MOTION_ONLY].float().mean().item() - 0.6) < 0.03
    assert not whole_a[~masks.audio_hidden].any() and not whole_m[~masks.motion_hidden].any()


def test_forced_scenario_and_audio_only_batches():
    a_len = torch.tensor([50, 40])
    masks = sample_masks(a_len, 50, None, None, MaskConfig(), torch.Generator().manual_seed(0))
    assert masks.motion_gen is None and torch.all(masks.scenario == AUDIO_ONLY) and masks.audio_gen.any()
    m_len = audio_to_motion_frame(a_len - 1) + 1
    masks = sample_masks(a_len, 50, m_len, 14, MaskConfig(), torch.Generator(), scenario=MOTION_ONLY)
    assert not masks.audio_gen.any() and masks.motion_gen.any()


NO_DROPS = dict(
    cond_audio=0.0, cond_motion=0.0, text=0.0, rest_motion=0.0, joint_attention=0.0, f5=0.0, tts=0.0
)


@pytest.mark.parametrize(
    "switch,flags_on",
    [
        ("cond_audio", {"drop_audio_cond"}),
        ("cond_motion", {"drop_motion_cond"}),
        ("text", {"drop_text"}),
        ("rest_motion", {"drop_rest"}),
        ("joint_attention", {"audio_off", "motion_off"}),
    ],
)
def test_each_dropout_switch_sets_only_its_flag(switch, flags_on):
    probs = dict(NO_DROPS)
    probs[switch] = 1.0
    kw = sample_dropout(8, DropoutConfig(**probs), torch.Generator().manual_seed(0)).network_kwargs()
    observed = {
        "drop_audio_cond": kw["drop_audio_cond"],
        "drop_motion_cond": kw["drop_motion_cond"],
        "drop_text": kw["drop_text"],
        "drop_rest": kw["drop_rest"],
        "audio_off": ~kw["audio_sees_motion"],
        "motion_off": ~kw["motion_sees_audio"],
    }
    for name, value in observed.items():
        assert bool(value.all()) == (name in flags_on) and bool(value.any()) == (name in flags_on), name


def test_dropout_rates_match_appendix_a():
    flags = sample_dropout(
        20000, DropoutConfig(), torch.Generator().manual_seed(0)
    )  # defaults: the marginals
    for name, p in (
        ("drop_audio_cond", 0.1),
        ("drop_motion_cond", 0.1),
        ("drop_text", 0.2),
        ("drop_rest", 0.8),
    ):
        assert abs(getattr(flags, name).float().mean().item() - p) < 0.015
    assert abs((~flags.audio_sees_motion).float().mean().item() - 0.1) < 0.015


def test_config_validation():
    with pytest.raises(ValueError):
        MaskConfig(frac_min=0.9, frac_max=0.5)
    with pytest.raises(ValueError):
        MaskConfig(p_both=0, p_motion_only=0, p_audio_only=0)
    with pytest.raises(ValueError):
        DropoutConfig(text=1.5)
    with pytest.raises(ValueError, match="cond_audio.*below the rate"):
        DropoutConfig(f5=0.2)  # the configurations would force more reference drops than the marginal 0.1
    with pytest.raises(ValueError, match="tts"):
        DropoutConfig(f5=0.2, rates="independent")  # the tts configuration needs the marginal scheme
    DropoutConfig(f5=0.2, tts=0.0, rates="independent")  # the earlier scheme


@pytest.mark.parametrize("switch", ["cond_audio", "cond_motion", "text", "rest_motion", "joint_attention"])
def test_each_dropout_switch_turns_off_exactly_its_own_input(switch):
    """Through the real JointDiT: with one switch on, the output ignores exactly that input (and only it)."""
    from jam_flow.models import JointDiT

    torch.manual_seed(0)
    cfg = dict(
        audio=dict(
            dim=32,
            depth=2,
            heads=2,
            dim_head=16,
            ff_mult=2,
            text_dim=16,
            conv_layers=1,
            text_num_embeds=20,
            attn_mask_enabled=True,
        ),
        motion=dict(dim=32, depth=2, heads=2, dim_head=16, ff_mult=2),
        joint_layers="half",
        window=4,
    )
    net = JointDiT(**cfg).eval()
    with torch.no_grad():
        for p in net.parameters():  # F5-style zero init would hide every dependency
            p.copy_(torch.randn_like(p) * 0.2)
    b, n, m = 2, 45, 12
    probs = dict(NO_DROPS)
    probs[switch] = 1.0
    flags = sample_dropout(b, DropoutConfig(**probs), torch.Generator()).network_kwargs()
    g = torch.Generator().manual_seed(1)
    kw = dict(
        audio_x=torch.randn(b, n, 100, generator=g),
        audio_cond=torch.randn(b, n, 100, generator=g),
        text=torch.randint(0, 20, (b, 9), generator=g),
        time=torch.full((b,), 0.5),
        motion_x=torch.randn(b, m, 12, generator=g),
        motion_cond=torch.randn(b, m, 12, generator=g),
        motion_rest=torch.randn(b, m, 51, generator=g),
        audio_mask=torch.ones(b, n, dtype=torch.bool),
        motion_mask=torch.ones(b, m, dtype=torch.bool),
        **flags,
    )

    def same(x, y):
        return torch.allclose(x, y, atol=1e-5)

    with torch.no_grad():
        base_a, base_m = net(**kw)
        for name, key in (
            ("cond_audio", "audio_cond"),
            ("cond_motion", "motion_cond"),
            ("text", "text"),
            ("rest_motion", "motion_rest"),
        ):
            other = (kw[key] + 1) % 20 if key == "text" else kw[key] + torch.randn_like(kw[key])
            a, mo = net(**{**kw, key: other})
            assert (same(a, base_a) and same(mo, base_m)) == (name == switch), f"{key} with {switch} dropped"
        a_pm, _ = net(**{**kw, "motion_x": kw["motion_x"] + 1.0})
        _, m_pa = net(**{**kw, "audio_x": kw["audio_x"] + 1.0})
    joint_off = switch == "joint_attention"
    assert same(a_pm, base_a) == joint_off and same(m_pa, base_m) == joint_off
