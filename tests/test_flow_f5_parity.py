"""One training step of jam-flow (Audio-DiT + ``FlowObjective``, the TTS layout of stage 1 audio) against the
official ``f5_tts`` ``CFM.forward``: same weights, batch, noise, times, span masks and drop flags -> the same loss
and the same gradient for every parameter (the text-embedding table included), to <= 1e-5.

CFM draws from the global torch RNG and Python's ``random``; the test feeds it jam-flow's draws: the noise and the
times that ``FlowObjective`` draws from its generator (times, then noise: its documented order) replace CFM's
``torch.randn_like`` / ``torch.rand``, its two ``random()`` coins are scripted, and the span mask CFM draws
(``mask_from_frac_lengths``, seeded) is handed to jam-flow as its generation mask. Fails (never skips) when
``f5_tts`` cannot be imported.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from jam_flow.flow.masking import AUDIO_ONLY, DropFlags, TrainingMasks
from jam_flow.flow.objective import FlowBatch, FlowObjective
from jam_flow.models import AudioDiT, JointDiT
from jam_flow.models.stages import Stage, joint_interface

TINY = dict(dim=64, depth=2, heads=2, dim_head=32, ff_mult=2, mel_dim=100, text_num_embeds=12, text_dim=32)
FLAVOURS = {
    "v1_base": dict(text_mask_padding=True, pe_attn_head=None, conv_layers=2),
    "v0_base": dict(text_mask_padding=False, pe_attn_head=1, conv_layers=2),
}
# CFM's two coins: random() < audio_drop_prob (0.3) -> drop the reference; random() < cond_drop_prob (0.2) -> both
COINS = {"no_drop": (0.9, 0.9), "drop_audio_cond": (0.1, 0.9), "drop_both": (0.9, 0.1)}


@pytest.fixture(scope="module")
def f5():
    try:
        with warnings.catch_warnings():  # upstream's import chain warns that torch.jit.script is deprecated
            warnings.simplefilter("ignore", FutureWarning)
            import f5_tts.model.cfm as cfm
            from f5_tts.model.backbones.dit import DiT
    except Exception as err:  # noqa: BLE001 - any import failure must fail the parity test, never skip it
        pytest.fail(f"the f5-tts package is required for the parity test and could not be imported: {err!r}")
    return cfm, DiT


def _batch(b: int = 3, n: int = 40):
    g = torch.Generator().manual_seed(2)
    lens = torch.tensor([n, 27, 33][:b])
    mel = torch.randn(b, n, 100, generator=g) * 2 - 4
    text = torch.full((b, 31), -1, dtype=torch.long)
    text[0, :9] = torch.randint(0, 12, (9,), generator=g)  # shorter than its mel
    text[1, :] = torch.randint(0, 12, (31,), generator=g)  # longer than its valid length (F5 cuts it)
    text[2, :20] = torch.randint(0, 12, (20,), generator=g)
    return mel, lens, text


def _models(DiT, flavour: str, joint: bool):
    kwargs = {**TINY, **FLAVOURS[flavour], "dropout": 0.0}
    torch.manual_seed(1)
    ref = DiT(**kwargs)
    with torch.no_grad():  # F5 zero-initialises adaLN and the output head: randomise every parameter
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    if joint:
        motion = dict(dim=64, depth=2, heads=2, dim_head=32, pe_attn_head=kwargs["pe_attn_head"])
        ours = JointDiT(audio=kwargs, motion=motion)
        audio = ours.audio
    else:
        ours = audio = AudioDiT(**kwargs)
    audio.load_state_dict(ref.state_dict(), strict=True)
    return ref.train(), ours.train(), audio


@pytest.mark.parametrize("joint", [False, True], ids=["AudioDiT", "JointDiT"])
@pytest.mark.parametrize("coins", sorted(COINS))
@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_training_step_matches_f5tts_cfm(f5, monkeypatch, flavour, coins, joint):
    cfm, DiT = f5
    ref, ours, audio = _models(DiT, flavour, joint)
    mel, lens, text = _batch()
    b = mel.shape[0]
    objective = FlowObjective()  # uniform times, as F5-TTS

    # jam-flow's draws for this step, replayed from its generator (times, then audio noise)
    replay = torch.Generator().manual_seed(7)
    t_audio, _ = objective.sample_times(b, replay)
    x0 = torch.randn(mel.shape, generator=replay)

    # --- the official CFM step, fed those draws
    calls: dict[str, int] = {"randn_like": 0, "rand": 0}
    spans: list[torch.Tensor] = []
    real_rand = torch.rand

    def randn_like(x, *a, **k):
        calls["randn_like"] += 1
        assert x.shape == x0.shape
        return x0.clone()

    def rand(*size, **k):
        if size in ((b,), ((b,),)):
            calls["rand"] += 1
            return t_audio.clone().to(k.get("dtype") or torch.float32)
        return real_rand(*size, **k)

    def spy_span(seq_len, frac):
        span = draw_span(seq_len, frac)
        spans.append(span)  # CFM then ANDs it with the valid mask in place
        return span

    draw_span = cfm.mask_from_frac_lengths
    coin = iter(COINS[coins])
    monkeypatch.setattr(cfm, "mask_from_frac_lengths", spy_span)
    monkeypatch.setattr(cfm, "random", lambda: next(coin))
    model = cfm.CFM(transformer=ref)
    torch.manual_seed(11)  # CFM's span draws (frac, start) come from the global RNG
    with monkeypatch.context() as m:
        m.setattr(torch, "randn_like", randn_like)
        m.setattr(torch, "rand", rand)
        want, _, _ = model(mel.clone(), text, lens=lens)
    assert calls == {"randn_like": 1, "rand": 1} and len(spans) == 1
    want.backward()

    # --- jam-flow's step with the same span and drop flags
    audio_mask = torch.arange(mel.shape[1])[None] < lens[:, None]
    span = spans[0]
    assert bool((span <= audio_mask).all()) and int(span.sum()) > 0
    drop_audio_cond = coins != "no_drop"
    drop_text = coins == "drop_both"
    flag = lambda v: torch.full((b,), v, dtype=torch.bool)  # noqa: E731
    drops = DropFlags(
        flag(drop_audio_cond), flag(False), flag(drop_text), flag(False), flag(True), flag(True)
    )
    masks = TrainingMasks(audio_gen=span, motion_gen=None, scenario=torch.full((b,), AUDIO_ONLY))
    batch = FlowBatch(audio=mel.clone(), audio_mask=audio_mask, text=text)
    out = objective(
        joint_interface(ours, Stage.stage1_audio), batch, masks, drops, torch.Generator().manual_seed(7)
    )
    assert torch.equal(out.time_audio, t_audio)
    out.total.backward()

    assert want.item() > 1.0  # not a comparison of near-zero losses
    assert abs(out.total.item() - want.item()) <= 1e-5, (out.total.item(), want.item())
    theirs = dict(ref.named_parameters())
    mine = dict(audio.named_parameters())
    assert mine.keys() == theirs.keys()
    table = "text_embed.text_embed.weight"
    # the token rows of the text table (row 0 is the filler) learn only when the text is used
    assert bool(theirs[table].grad[1:].abs().max() > 1e-4) == (not drop_text)
    for name, p in mine.items():
        g_ref = theirs[name].grad
        if g_ref is None:
            assert p.grad is None or not p.grad.any(), name
            continue
        diff = (p.grad - g_ref).abs().max().item()
        assert diff <= 1e-5, (name, diff, g_ref.abs().max().item())
