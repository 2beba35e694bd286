"""Guidance modes: training draws the unconditional configurations that sampling uses, at their stated rates;
every `jam-flow generate --task` layout is trained; the validation sampler refuses an untrained mode."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from jam_flow.errors import InputError
from jam_flow.flow.guidance import GUIDANCE_MODES, unconditional_flags
from jam_flow.flow.masking import (
    AUDIO_ONLY,
    BOTH,
    CONFIG_MODES,
    MOTION_ONLY,
    DropoutConfig,
    MaskConfig,
    layout_rate,
    sample_dropout,
)
from jam_flow.inference.tasks import TASK_LAYOUTS, TASKS

ROOT = Path(__file__).resolve().parents[1]


def _stage2() -> dict:
    return yaml.safe_load((ROOT / "configs" / "stage2.yaml").read_text())["model"]


SCENARIOS = {  # scenario -> (audio generated, motion generated), as the sampler sees the task
    BOTH: (True, True),
    MOTION_ONLY: (False, True),
    AUDIO_ONLY: (True, False),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_training_draws_each_guidance_configuration_at_its_rate(scenario):
    """100 000 training draws with the earlier scheme (``rates: independent``, exclusive configurations on top of
    independent coins, as checkpoints before the marginal scheme trained): the unconditional switches each
    guidance mode uses for this scenario's generated streams come up at that mode's configured rate (+-0.5 %
    absolute). The default (marginal) scheme: tests/test_dropout_rates.py."""
    cfg = DropoutConfig(joint_attention=0.1, f5=0.2, tts=0.0, all=0.0, rates="independent")
    b = 100_000
    a_gen, m_gen = SCENARIOS[scenario]
    a_hid, m_hid = torch.full((b,), a_gen), torch.full((b,), m_gen)
    flags = sample_dropout(b, cfg, torch.Generator().manual_seed(0), a_hid, m_hid)
    kw = flags.network_kwargs()
    a_on, m_on = kw["audio_sees_motion"], kw["motion_sees_audio"]
    every_drop = kw["drop_audio_cond"] & kw["drop_text"] & kw["drop_motion_cond"] & kw["drop_rest"]
    own = torch.ones(b, dtype=torch.bool)
    if a_gen:
        own &= kw["drop_audio_cond"] & kw["drop_text"]
    if m_gen:
        own &= kw["drop_motion_cond"] & kw["drop_rest"]
    # what each mode's unconditional input looks like, read off the switches alone
    observed = {
        # joint: the generated branches' joint attention off, the others on, not everything dropped
        "joint": (a_on != a_gen) & (m_on != m_gen) & ~(every_drop & ~a_on & ~m_on & ~(a_gen ^ m_gen)),
        # all: everything dropped, both directions off
        "all": every_drop & ~a_on & ~m_on,
    }
    rates = cfg.guidance_rates()
    for mode in ("joint", "all"):
        # "all" can also arise from the joint configuration of a both-generated sample with every availability drop
        every = cfg.cond_audio * cfg.text * cfg.cond_motion * cfg.rest_motion
        coincidence = rates["joint"] * every if (mode == "all" and a_gen and m_gen) else 0.0
        got = observed[mode].float().mean().item()
        assert abs(got - rates[mode] - coincidence) < 0.005, (mode, got, rates[mode])
    # f5: the own conditions of the generated streams dropped, joint attention on; the availability drops can
    # produce the same switches by chance, with a known probability
    p_chance = 1.0
    if a_gen:
        p_chance *= cfg.cond_audio * cfg.text
    if m_gen:
        p_chance *= cfg.cond_motion * cfg.rest_motion
    expected_f5 = rates["f5"] + (1 - sum(rates.values())) * p_chance
    got = (own & a_on & m_on).float().mean().item()
    assert abs(got - expected_f5) < 0.005, ("f5", got, expected_f5)
    # and the configuration draw itself: one exclusive configuration per sample at its rate
    for code, mode in CONFIG_MODES.items():
        if mode not in rates:  # the tts configuration exists only in the marginal scheme
            assert not bool((flags.config == code).any())
            continue
        assert abs((flags.config == code).float().mean().item() - rates[mode]) < 0.005, mode
        chosen = flags.config == code
        # the drawn switches are exactly what the sampler's unconditional pass uses for this scenario
        redo = unconditional_flags(mode, {k: v[chosen] for k, v in kw.items()}, a_hid[chosen], m_hid[chosen])
        assert all(torch.equal(redo[k], kw[k][chosen]) for k in kw), mode
    # the joint configuration keeps the other conditions as drawn (e_rest still dropped at 0.8, text at 0.2)
    joint = flags.config == 1
    assert abs(kw["drop_rest"][joint].float().mean().item() - cfg.rest_motion) < 0.02
    assert abs(kw["drop_text"][joint].float().mean().item() - cfg.text) < 0.02


def test_every_task_layout_is_trained_under_stage2_yaml():
    model = _stage2()
    masking, dropout = MaskConfig(**model["masking"]), DropoutConfig(**model["dropout"])
    assert set(TASK_LAYOUTS) == set(TASKS)
    for task, layouts in TASK_LAYOUTS.items():
        for layout in layouts:
            assert layout_rate(layout, masking, dropout) > 0, (task, layout)
    # the rates are the scenario sampler's: they add up over the (audio, motion) layouts with motion present
    states = ("given", "partial", "generated")
    total = sum(layout_rate((a, m), masking, dropout) for a in states for m in states)
    assert total == pytest.approx(1.0)
    # a layout that was once left untrained: text + reference audio -> speech + motion (case 2)
    p = masking.p_both / (masking.p_both + masking.p_motion_only + masking.p_audio_only)
    expected = p * (1 - masking.p_whole_audio) * masking.p_whole_motion
    assert layout_rate(("partial", "generated"), masking, dropout) == pytest.approx(expected)


@pytest.mark.parametrize("mode", GUIDANCE_MODES)
def test_validation_sampler_refuses_an_untrained_guidance_mode(mode):
    from jam_flow.lightning.callbacks import ValidationMedia

    field = {"joint": "joint_attention", "f5": "f5", "all": "all"}[mode]
    rates = dict(joint_attention=0.1, f5=0.2, tts=0.0, all=0.05, rates="independent")
    module = SimpleNamespace(dropout_cfg=DropoutConfig(**rates), stage="stage2")
    ValidationMedia(num_clips=1, guidance=mode).setup(None, module, "fit")  # trained: accepted
    rates[field] = 0.0
    module = SimpleNamespace(dropout_cfg=DropoutConfig(**rates), stage="stage2")
    with pytest.raises(InputError, match=rf"guidance mode '{mode}'.*dropout\.{field} = 0"):
        ValidationMedia(num_clips=1, guidance=mode).setup(None, module, "fit")
    ValidationMedia(num_clips=0, guidance=mode).setup(None, module, "fit")  # media off: nothing to refuse


def test_layout_rates_match_the_scenario_sampler():
    """layout_rate is what sample_masks draws: empirical layout frequencies over 20 000 stage2.yaml draws."""
    from jam_flow.features import audio_to_motion_frame
    from jam_flow.flow.masking import sample_masks

    model = _stage2()
    masking, dropout = MaskConfig(**model["masking"]), DropoutConfig(**model["dropout"])
    b, n, m = 20_000, 120, 32
    a_len = torch.randint(30, n + 1, (b,), generator=torch.Generator().manual_seed(1))
    m_len = audio_to_motion_frame(a_len - 1) + 1
    masks = sample_masks(a_len, n, m_len, m, masking, torch.Generator().manual_seed(2))

    def states(gen, lens, hidden):
        count = gen.sum(1)
        return [
            "given" if not h else ("generated" if c == ln else "partial")
            for c, ln, h in zip(count.tolist(), lens.tolist(), hidden.tolist(), strict=True)
        ]

    pairs = list(
        zip(
            states(masks.audio_gen, a_len, masks.audio_hidden),
            states(masks.motion_gen, m_len, masks.motion_hidden),
            strict=True,
        )
    )

    def got(layout):
        return sum(p == layout for p in pairs) / b

    layouts = {layout for layouts in TASK_LAYOUTS.values() for layout in layouts if layout[1] != "absent"}
    shifting = {("partial", "partial"), ("partial", "generated")}  # aligned spans: see layout_rate
    for layout in layouts - shifting:
        assert abs(got(layout) - layout_rate(layout, masking, dropout)) < 0.01, (layout, got(layout))
    assert got(("partial", "generated")) > layout_rate(("partial", "generated"), masking, dropout) - 0.01
    both = sum(got(x) - layout_rate(x, masking, dropout) for x in shifting)
    assert abs(both) < 0.01
