"""Unit tests of the ODE sampler (jam_flow.flow.sampler) on analytic fields and a small recording network."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from jam_flow.flow.sampler import JointConditions, SamplerSettings, sample, sway_time_grid


def _flag(value, b: int) -> torch.Tensor:
    t = torch.as_tensor(value)
    return t.expand(b).float() if t.dim() == 0 else t.float()


class TargetField(nn.Module):
    """v(x, t) = (x* - x) / (1 - t): the straight path to a fixed x*; the conditional branch aims at ``target_c``,
    the unconditional one (all conditioning dropped) at ``target_u``. Euler integrates it exactly on any grid."""

    def __init__(self, target_c: torch.Tensor, target_u: torch.Tensor, motion_c=None, motion_u=None) -> None:
        super().__init__()
        self.tc, self.tu, self.mc, self.mu = target_c, target_u, motion_c, motion_u

    def forward(
        self, audio_x, audio_cond, text, time, motion_x=None, drop_audio_cond=False, motion_time=None, **kw
    ):
        b = audio_x.shape[0]
        unc = _flag(drop_audio_cond, b).bool()[:, None, None]
        t = time[:, None, None]
        target = torch.where(unc, self.tu.expand_as(audio_x), self.tc.expand_as(audio_x))
        v_a = (target - audio_x) / (1 - t)
        v_m = None
        if motion_x is not None:
            tm = motion_time[:, None, None]
            tgt = torch.where(unc, self.mu.expand_as(motion_x), self.mc.expand_as(motion_x))
            v_m = (tgt - motion_x) / (1 - tm).clamp_min(1e-6)
        return v_a, v_m


class ExpField(nn.Module):
    """dx/dt = x, solution x(1) = e * x(0)."""

    def forward(self, audio_x, audio_cond, text, time, motion_x=None, **kw):
        return audio_x.clone(), None


class ToyJoint(nn.Module):
    """A small nonlinear network with the JointDiT interface whose output depends on every conditioning input and
    switch, and which records each call."""

    def __init__(self, c: int = 6, dm: int = 4, dr: int = 5) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.wa = nn.Parameter(torch.randn(c, c, generator=g) * 0.3)
        self.wc = nn.Parameter(torch.randn(c, c, generator=g) * 0.3)
        self.wm = nn.Parameter(torch.randn(dm, dm, generator=g) * 0.3)
        self.wmc = nn.Parameter(torch.randn(dm, dm, generator=g) * 0.3)
        self.wr = nn.Parameter(torch.randn(dr, dm, generator=g) * 0.3)
        self.cross_a = nn.Parameter(torch.randn(dm, c, generator=g) * 0.3)
        self.cross_m = nn.Parameter(torch.randn(c, dm, generator=g) * 0.3)
        self.calls: list[dict] = []

    def forward(
        self,
        audio_x,
        audio_cond,
        text,
        time,
        motion_x=None,
        motion_cond=None,
        motion_rest=None,
        audio_mask=None,
        motion_mask=None,
        motion_time=None,
        drop_audio_cond=False,
        drop_text=False,
        drop_motion_cond=False,
        drop_rest=False,
        audio_sees_motion=True,
        motion_sees_audio=True,
    ):
        b = audio_x.shape[0]
        self.calls.append(
            dict(
                audio_x=audio_x.clone(),
                motion_x=None if motion_x is None else motion_x.clone(),
                time=time.clone(),
                motion_time=None if motion_time is None else motion_time.clone(),
                drop_audio_cond=_flag(drop_audio_cond, b),
                drop_text=_flag(drop_text, b),
                drop_motion_cond=_flag(drop_motion_cond, b),
                drop_rest=_flag(drop_rest, b),
                sees_m=_flag(audio_sees_motion, b),
                sees_a=_flag(motion_sees_audio, b),
            )
        )
        keep = lambda flag: (1 - _flag(flag, b))[:, None, None]  # noqa: E731
        txt = (text.clamp_min(0).float().mean(1, keepdim=True) * 0.1)[:, :, None]
        h_a = torch.tanh(
            audio_x @ self.wa
            + keep(drop_audio_cond) * (audio_cond @ self.wc)
            + keep(drop_text) * txt
            + time[:, None, None]
        )
        if motion_x is None:
            return h_a, None
        tm = motion_time[:, None, None]
        h_m = torch.tanh(
            motion_x @ self.wm
            + keep(drop_motion_cond) * (motion_cond @ self.wmc)
            + keep(drop_rest) * (motion_rest @ self.wr)
            + tm
        )
        a_pool = audio_x.mean(1, keepdim=True) @ self.cross_m
        m_pool = motion_x.mean(1, keepdim=True) @ self.cross_a
        h_a = h_a + _flag(audio_sees_motion, b)[:, None, None] * m_pool
        h_m = h_m + _flag(motion_sees_audio, b)[:, None, None] * a_pool
        return h_a, h_m


def _joint_cond(b=2, n=9, m=3, c=6, dm=4, dr=5, seed=1, known_a=None, known_m=None) -> JointConditions:
    g = torch.Generator().manual_seed(seed)
    known_a = torch.zeros(b, n, dtype=torch.bool) if known_a is None else known_a
    known_m = torch.zeros(b, m, dtype=torch.bool) if known_m is None else known_m
    return JointConditions(
        audio_cond=torch.randn(b, n, c, generator=g),
        audio_known=known_a,
        text=torch.randint(0, 5, (b, 4), generator=g),
        motion_cond=torch.randn(b, m, dm, generator=g),
        motion_known=known_m,
        motion_rest=torch.randn(b, m, dr, generator=g),
    )


def test_sway_grid_formula_and_endpoints():
    t = sway_time_grid(8, -1.0, dtype=torch.float64)
    u = torch.linspace(0, 1, 9, dtype=torch.float64)
    assert torch.allclose(t, 1 - torch.cos(math.pi / 2 * u))
    assert t[0] == 0 and t[-1] == 1 and bool((t[1:] > t[:-1]).all())
    assert torch.equal(sway_time_grid(8, None, dtype=torch.float64), u)
    assert torch.equal(sway_time_grid(8, 0.0, dtype=torch.float64), u)
    # s = -1 puts more steps near t = 0 than a uniform grid
    assert t[1] < u[1]


@pytest.mark.parametrize("sway", [None, -1.0, 0.5])
def test_euler_exact_on_straight_field_with_cfg(sway):
    b, n, c = 2, 5, 6
    tc, tu = torch.randn(1, n, c), torch.randn(1, n, c)
    model = TargetField(tc, tu)
    cond = JointConditions(
        audio_cond=torch.zeros(b, n, c),
        audio_known=torch.zeros(b, n, dtype=torch.bool),
        text=torch.zeros(b, 3, dtype=torch.long),
    )
    for gamma in (0.0, 2.0):
        out = sample(model, cond, SamplerSettings(nfe=7, sway_coef=sway, cfg=gamma), seed=0)
        expected = (1 + gamma) * tc - gamma * tu
        assert torch.allclose(out.audio, expected.expand(b, n, c), atol=1e-5)


def test_midpoint_is_second_order_euler_first_order():
    cond = JointConditions(
        audio_cond=torch.zeros(1, 3, 6),
        audio_known=torch.zeros(1, 3, dtype=torch.bool),
        text=torch.zeros(1, 2, dtype=torch.long),
    )
    x0 = torch.randn(
        1, 3, 6, generator=torch.Generator().manual_seed(5)
    )  # the sampler's first draw for seed 5

    def err(method: str, nfe: int) -> float:
        out = sample(
            ExpField(), cond, SamplerSettings(nfe=nfe, method=method, sway_coef=None, cfg=0.0), seed=5
        )
        return float((out.audio - x0 * math.e).abs().max())

    e1, e2 = err("euler", 8), err("euler", 16)
    m1, m2 = err("midpoint", 16), err("midpoint", 32)  # 8 and 16 steps
    assert 1.7 < e1 / e2 < 2.3
    assert 3.5 < m1 / m2 < 4.5
    assert m1 < e2  # at the same NFE, far smaller error


# the unconditional switches of each guidance mode when both streams are generated (flow.guidance)
UNCOND = {
    "joint": dict(audio_sees_motion=False, motion_sees_audio=False),
    "f5": dict(drop_audio_cond=True, drop_text=True, drop_motion_cond=True, drop_rest=True),
    "all": dict(
        drop_audio_cond=True,
        drop_text=True,
        drop_motion_cond=True,
        drop_rest=True,
        audio_sees_motion=False,
        motion_sees_audio=False,
    ),
}


@pytest.mark.parametrize("mode", ["joint", "f5", "all"])
def test_batched_cfg_equals_two_separate_passes(mode):
    model = ToyJoint()
    cond = _joint_cond()
    settings = SamplerSettings(
        nfe=4, method="midpoint", cfg=2.0, audio_cfg=1.5, motion_cfg=3.0, guidance=mode
    )
    out = sample(model, cond, settings, seed=11)
    assert out.nfe == 4 and len(model.calls) == 4 and out.guidance == mode

    # reference: the same integration with the two branches as separate, unbatched calls
    g = torch.Generator().manual_seed(11)
    xa = torch.randn(cond.audio_cond.shape, generator=g)
    xm = torch.randn(cond.motion_cond.shape, generator=g)
    ref = ToyJoint()
    b = xa.shape[0]

    def v(xa_, xm_, t):
        tt = torch.full((b,), t)
        # nothing is known, so the cond inputs carry zeros
        kw = dict(
            audio_cond=torch.zeros_like(xa),
            text=cond.text,
            time=tt,
            motion_cond=torch.zeros_like(xm),
            motion_rest=cond.motion_rest,
            motion_time=tt,
        )
        ca, cm = ref(audio_x=xa_, motion_x=xm_, **kw)
        ua, um = ref(audio_x=xa_, motion_x=xm_, **UNCOND[mode], **kw)
        return ca + 1.5 * (ca - ua), cm + 3.0 * (cm - um)

    grid = sway_time_grid(2, -1.0, dtype=torch.float64).tolist()
    for t0, t1 in zip(grid[:-1], grid[1:], strict=True):
        dt = t1 - t0
        va, vm = v(xa, xm, t0)
        va, vm = v(xa + 0.5 * dt * va, xm + 0.5 * dt * vm, t0 + 0.5 * dt)
        xa, xm = xa + dt * va, xm + dt * vm
    assert torch.allclose(out.audio, xa, atol=1e-5)
    assert torch.allclose(out.motion, xm, atol=1e-5)

    # the unconditional half switches exactly what the mode drops
    call = model.calls[0]
    assert call["audio_x"].shape[0] == 2 * b
    for key in ("drop_audio_cond", "drop_text", "drop_motion_cond", "drop_rest"):
        dropped = UNCOND[mode].get(key, False)
        assert call[key][:b].sum() == 0 and call[key][b:].sum() == (b if dropped else 0), key
    for key, arg in (("sees_m", "audio_sees_motion"), ("sees_a", "motion_sees_audio")):
        on = UNCOND[mode].get(arg, True)
        assert call[key][:b].all() and bool(call[key][b:].all()) == on and bool(call[key][b:].any()) == on


@pytest.mark.parametrize(
    "fixed,uncond",
    [
        ("audio", dict(motion_sees_audio=False)),  # audio -> motion: only the motion branch's alpha goes off
        ("motion", dict(audio_sees_motion=False)),  # motion -> audio (dubbing): only the audio branch's
    ],
)
def test_joint_guidance_switches_off_only_the_generated_branch(fixed, uncond):
    b, n, m = 2, 9, 3
    known_a = torch.full((b, n), fixed == "audio")
    known_m = torch.full((b, m), fixed == "motion")
    model = ToyJoint()
    out = sample(model, _joint_cond(known_a=known_a, known_m=known_m), SamplerSettings(nfe=2), seed=0)
    assert out.guidance == "joint"
    call = model.calls[0]
    for key in ("drop_audio_cond", "drop_text", "drop_motion_cond", "drop_rest"):
        assert torch.equal(call[key][:b], call[key][b:]), key  # every other condition stays
    for key, arg in (("sees_m", "audio_sees_motion"), ("sees_a", "motion_sees_audio")):
        assert bool(call[key][b:].all()) == uncond.get(arg, True), arg


def test_joint_guidance_without_motion_falls_back_to_f5():
    """Plain TTS: no other stream to attend to, so "joint" has nothing to switch off and F5-TTS's CFG is used."""
    cond = _joint_cond()
    cond.motion_cond = cond.motion_known = cond.motion_rest = cond.motion_mask = None
    model = ToyJoint()
    out = sample(model, cond, SamplerSettings(nfe=2), seed=0)
    assert out.guidance == "f5" and out.motion is None
    call = model.calls[0]
    assert call["drop_audio_cond"][2:].all() and call["drop_text"][2:].all()
    assert not call["drop_audio_cond"][:2].any()
    assert sample(ToyJoint(), cond, SamplerSettings(nfe=2, cfg=0.0), seed=0).guidance is None


def test_guidance_mode_is_checked():
    with pytest.raises(ValueError, match="guidance"):
        SamplerSettings(guidance="none")


def test_no_guidance_is_one_unbatched_pass():
    model = ToyJoint()
    cond = _joint_cond()
    out = sample(model, cond, SamplerSettings(nfe=3, cfg=0.0), seed=0)
    assert out.nfe == 3 and all(c["audio_x"].shape[0] == 2 for c in model.calls)


def test_known_regions_kept_exactly_and_seed_reproducible():
    b, n, m = 2, 9, 3
    known_a = torch.zeros(b, n, dtype=torch.bool)
    known_a[:, :4] = True
    known_m = torch.zeros(b, m, dtype=torch.bool)
    known_m[0, 1] = True
    cond = _joint_cond(known_a=known_a, known_m=known_m)
    s = SamplerSettings(nfe=3)
    out1 = sample(ToyJoint(), cond, s, seed=7)
    out2 = sample(ToyJoint(), cond, s, seed=7)
    out3 = sample(ToyJoint(), cond, s, seed=8)
    assert torch.equal(out1.audio[:, :4], cond.audio_cond[:, :4])
    assert torch.equal(out1.motion[0, 1], cond.motion_cond[0, 1])
    assert torch.equal(out1.audio, out2.audio) and torch.equal(out1.motion, out2.motion)
    assert not torch.allclose(out1.audio[:, 4:], out3.audio[:, 4:])
    # a generator gives the same result as the seed it was built with
    out4 = sample(ToyJoint(), cond, s, generator=torch.Generator().manual_seed(7))
    assert torch.equal(out1.audio, out4.audio)


def test_fully_given_stream_is_not_integrated():
    b, n, m = 1, 9, 3
    cond = _joint_cond(b=b, known_m=torch.ones(b, m, dtype=torch.bool))
    model = ToyJoint()
    out = sample(model, cond, SamplerSettings(nfe=4, method="midpoint"), seed=0)
    assert torch.equal(out.motion, cond.motion_cond)
    for call in model.calls:
        assert torch.equal(call["motion_x"][:b], cond.motion_cond)  # the state is the data at every step
        assert torch.all(call["motion_time"] == 1.0)
    assert len({float(c["time"][0]) for c in model.calls}) == 4  # the audio stream does move in time

    # audio fully given (audio -> motion): the mel comes back untouched
    model = ToyJoint()
    cond = _joint_cond(b=b, known_a=torch.ones(b, n, dtype=torch.bool))
    out = sample(model, cond, SamplerSettings(nfe=2), seed=0)
    assert torch.equal(out.audio, cond.audio_cond)
    assert all(torch.all(c["time"] == 1.0) for c in model.calls)

    # everything given: nothing to do, no network call
    model = ToyJoint()
    cond = _joint_cond(
        b=b, known_a=torch.ones(b, n, dtype=torch.bool), known_m=torch.ones(b, m, dtype=torch.bool)
    )
    out = sample(model, cond, SamplerSettings(nfe=2), seed=0)
    assert out.nfe == 0 and not model.calls


def test_settings_validation_and_nfe_definition():
    assert SamplerSettings(nfe=32).steps == 32
    assert SamplerSettings(nfe=32, method="midpoint").steps == 16
    with pytest.raises(ValueError, match="even"):
        SamplerSettings(nfe=7, method="midpoint")
    with pytest.raises(ValueError, match="nfe"):
        SamplerSettings(nfe=0)
    with pytest.raises(ValueError, match="audio_cfg"):
        SamplerSettings(audio_cfg=-1.0)
    s = SamplerSettings(cfg=2.0, motion_cfg=0.5)
    assert s.audio_scale == 2.0 and s.motion_scale == 0.5
