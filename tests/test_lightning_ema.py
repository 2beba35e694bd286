"""EMA weights follow ema-pytorch's schedule (the one F5-TTS trains with)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jam_flow.lightning.ema import EMA


def _net() -> nn.Module:
    net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    net.register_buffer("scale", torch.ones(3))
    return net


def _perturb(net: nn.Module, step: int) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p) + 0.01 * step)
        net.scale.mul_(1.01)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(beta=0.9, update_after_step=3, update_every=2),
        dict(beta=0.9999, update_after_step=100, update_every=10),
    ],
)
def test_matches_ema_pytorch(kwargs):
    ema_pytorch = pytest.importorskip("ema_pytorch")
    torch.manual_seed(0)
    net = _net()
    ours = EMA(net, **kwargs)
    ref = ema_pytorch.EMA(net, include_online_model=False, **kwargs)
    for step in range(130):
        _perturb(net, step)
        ours.update(net)
        ref.update()
        assert ours.current_decay() == pytest.approx(ref.get_current_decay())
    for (name, a), (_, b) in zip(
        ours.model.state_dict().items(), ref.ema_model.state_dict().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name
    assert int(ours.step) == int(ref.step)


def test_weights_are_frozen_eval_copies_and_resume_through_state_dict():
    net = _net()
    ema = EMA(net, beta=0.5, update_after_step=0, update_every=1)
    assert all(not p.requires_grad for p in ema.model.parameters())
    ema.train()
    assert not ema.model.training
    for step in range(5):
        _perturb(net, step)
        ema.update(net)
    clone = EMA(_net(), beta=0.5, update_after_step=0, update_every=1)
    clone.load_state_dict(ema.state_dict())
    assert int(clone.step) == 5 and bool(clone.initted)
    assert set(ema.weights()) == set(net.state_dict())
    _perturb(net, 9)
    ema.update(net)
    clone.update(net)
    for k, v in ema.weights().items():
        assert torch.equal(v, clone.weights()[k])
