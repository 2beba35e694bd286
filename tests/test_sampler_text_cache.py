"""The sampler's text-embedding cache: the text embedding is computed once per sample and reused by every step, and
sampling gives exactly the same output with and without it, for every guidance mode, with and without motion,
padding, and the audio-only network behind the joint interface."""

from __future__ import annotations

import pytest
import torch

from jam_flow.flow.sampler import JointConditions, SamplerSettings, sample
from jam_flow.models import AudioDiT, JointDiT, tiny_joint_config
from jam_flow.models.stages import AudioOnly
from jam_flow.nn.masks import lengths_to_mask


@pytest.fixture(scope="module")
def net() -> JointDiT:
    torch.manual_seed(0)
    model = JointDiT(**tiny_joint_config(text_num_embeds=40)).eval()
    with (
        torch.no_grad()
    ):  # zero-initialised gates (adaLN-Zero) would hide the text: give every weight a value
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _cond(motion: bool, padded: bool, seed: int = 0) -> JointConditions:
    g = torch.Generator().manual_seed(seed)
    b, n, m = 2, 30, 8
    a_len, m_len = (torch.tensor([30, 21]), torch.tensor([8, 6])) if padded else (torch.tensor([n] * b), None)
    audio_known = torch.arange(n)[None] < torch.tensor([[9], [6]])  # a prompt: the rest is generated
    cond = JointConditions(
        audio_cond=torch.randn(b, n, 100, generator=g),
        audio_known=audio_known,
        text=torch.tensor([[3, 4, 5, 6, 7, -1], [8, 9, 10, 11, 12, 13]]),
        audio_mask=lengths_to_mask(a_len, n) if padded else None,
    )
    if motion:
        cond.motion_cond = torch.randn(b, m, 12, generator=g)
        cond.motion_known = torch.zeros(b, m, dtype=torch.bool)
        cond.motion_rest = torch.randn(b, m, 51, generator=g)
        cond.motion_mask = lengths_to_mask(m_len, m) if padded else None
    return cond


@pytest.mark.parametrize("guidance", ["joint", "f5", "all", "unguided"])
@pytest.mark.parametrize("motion", [True, False], ids=["joint", "audio-only"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
def test_cached_and_uncached_sampling_are_identical(net, guidance, motion, padded):
    settings = SamplerSettings(
        nfe=3, cfg=0.0 if guidance == "unguided" else 2.0, guidance=guidance.replace("unguided", "joint")
    )
    cond = _cond(motion, padded)
    hook = net.audio.text_embed.register_forward_hook(lambda *_: calls.append(1))
    try:
        calls: list[int] = []
        cached = sample(net, cond, settings, seed=4)
        n_cached = len(calls)
        calls.clear()
        plain = sample(net, cond, settings, seed=4, cache_text=False)
        n_plain = len(calls)
    finally:
        hook.remove()
    assert torch.equal(cached.audio, plain.audio)
    assert (cached.motion is None) == (plain.motion is None) == (not motion)
    if motion:
        assert torch.equal(cached.motion, plain.motion)
    assert (n_cached, n_plain) == (1, 3)  # once per sample vs once per step


def test_the_cache_keeps_the_text_and_each_half_its_own_drop(net):
    """The text matters (other text -> other output), and the f5 guidance's unconditional half (text dropped)
    is still computed without text: caching a conditional embedding for both halves would change the result."""
    cond = _cond(True, False)
    settings = SamplerSettings(nfe=2, guidance="f5")
    out = sample(net, cond, settings, seed=1)
    other = JointConditions(**{**cond.__dict__, "text": cond.text.flip(1).clamp(min=3)})
    assert not torch.equal(sample(net, other, settings, seed=1).audio, out.audio)

    def both_halves_conditional(*args, **kw):
        kw["drop_text"] = torch.zeros_like(kw["drop_text"])
        return net.text_features(*args, **kw)

    class NoDrop(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, **kw):
            return self.net(**kw)

        def text_features(self, text, n, audio_mask=None, drop_text=False):
            return both_halves_conditional(text, n, audio_mask, drop_text=drop_text)

    assert not torch.equal(sample(NoDrop(), cond, settings, seed=1).audio, out.audio)


def test_audio_only_network_behind_the_joint_interface(net):
    audio: AudioDiT = net.audio
    wrapped = AudioOnly(audio)
    cond = _cond(False, True)
    settings = SamplerSettings(nfe=2, guidance="f5")
    assert torch.equal(
        sample(wrapped, cond, settings, seed=2).audio,
        sample(wrapped, cond, settings, seed=2, cache_text=False).audio,
    )
    assert torch.equal(
        sample(wrapped, cond, settings, seed=2).audio, sample(net, cond, settings, seed=2).audio
    )
