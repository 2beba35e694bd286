"""MotionDiT: shapes from the mouth index set, drop flags, local-window locality, padding, input errors."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest
import torch

from jam_flow.errors import InputError
from jam_flow.models import MotionDiT, MotionDiTConfig

TINY = dict(dim=32, depth=2, heads=2, dim_head=16, ff_mult=2)


def _random_model(**overrides) -> MotionDiT:
    model = MotionDiT(**{**TINY, **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


def _inputs(b=2, m=40, audio_feat_dim=0):
    x, cond, rest = torch.randn(b, m, 12), torch.randn(b, m, 12), torch.randn(b, m, 51)
    feats = torch.randn(b, m, audio_feat_dim) if audio_feat_dim else None
    return x, cond, rest, torch.rand(b), feats


def test_dims_follow_the_mouth_index_set():
    model = MotionDiT(**TINY)
    assert (model.motion_dim, model.rest_dim) == (12, 51)
    assert model.mouth_indices == (14, 17, 19, 20)
    assert set(model.rest_indices) | set(model.mouth_indices) == set(range(21))
    other = MotionDiT(**TINY, mouth_indices=[6, 12, 14, 17, 19, 20], audio_feat_dim=7)
    assert (other.motion_dim, other.rest_dim) == (18, 45)
    assert other.input_embed.proj.in_features == 18 * 2 + 45 + 7
    assert other.proj_out.out_features == 18
    with pytest.raises(InputError, match="mouth_indices"):
        MotionDiT(**TINY, mouth_indices=(14, 14))
    with pytest.raises(InputError, match="window"):
        MotionDiT(**TINY, window=-1)


def test_forward_shape_and_zero_init():
    x, cond, rest, time, _ = _inputs()
    out = MotionDiT(**TINY).eval()(x, cond, rest, time)
    assert out.shape == (2, 40, 12) and torch.equal(out, torch.zeros_like(out))


def test_drop_flags_zero_exactly_their_inputs():
    model = _random_model(audio_feat_dim=5)
    x, cond, rest, time, feats = _inputs(audio_feat_dim=5)
    with torch.no_grad():
        base = model(x, cond, rest, time, audio_feats=feats)
        cases = [
            (dict(drop_motion_cond=True), dict(cond=torch.zeros_like(cond))),
            (dict(drop_rest=True), dict(rest=torch.zeros_like(rest))),
            (dict(drop_audio_feats=True), dict(audio_feats=torch.zeros_like(feats))),
        ]
        for flag, zeroed in cases:
            args = dict(x=x, cond=cond, rest=rest, time=time, audio_feats=feats)
            dropped = model(**args, **flag)
            assert torch.equal(dropped, model(**{**args, **zeroed})), flag
            assert not torch.allclose(dropped, base), flag
        # audio features left out = zeros = dropped; None cond / rest = zeros
        assert torch.equal(
            model(x, cond, rest, time), model(x, cond, rest, time, audio_feats=torch.zeros_like(feats))
        )
        assert torch.equal(
            model(x, None, None, time, audio_feats=feats),
            model(x, cond, rest, time, audio_feats=feats, drop_motion_cond=True, drop_rest=True),
        )
        flags = torch.tensor([True, False])
        mixed = model(x, cond, rest, time, audio_feats=feats, drop_rest=flags)
        assert (
            mixed[0] - model(x, cond, rest, time, audio_feats=feats, drop_rest=True)[0]
        ).abs().max() < 1e-6
        assert (mixed[1] - base[1]).abs().max() < 1e-6


def test_local_window_limits_the_receptive_field():
    # one block, window 2, conv position kernel 9 (two convs: +-8): frame j sees inputs within +-10 only
    x, cond, rest, time, _ = _inputs(m=40)
    x2 = x.clone()
    x2[:, 30] += 5.0
    for window, far_changes in ((2, False), (None, True)):
        model = _random_model(depth=1, window=window, motion_window_layers="all")
        with torch.no_grad():
            diff = (model(x2, cond, rest, time) - model(x, cond, rest, time)).abs().amax(dim=(0, 2))
        assert diff[30] > 0
        assert bool(diff[:19].max() > 0) == far_changes, window
        if window is not None:
            assert diff[20] > 0  # the edge of the receptive field: 30 - 8 - 2


def test_standalone_motion_dit_windows_no_layer_by_default():
    """Algorithm 2 step 4: no window where alpha = 0; a standalone (stage-1) Motion-DiT has no joint layer, so
    with the default motion_window_layers="joint" its self-attention is global over the valid frames."""
    x, cond, rest, time, _ = _inputs(m=40)
    x2 = x.clone()
    x2[:, 30] += 5.0
    model = _random_model(depth=1, window=2)
    assert model.motion_window_layers == "joint" and model.init_args["motion_window_layers"] == "joint"
    with torch.no_grad():
        diff = (model(x2, cond, rest, time) - model(x, cond, rest, time)).abs().amax(dim=(0, 2))
    assert diff[:19].max() > 0
    with pytest.raises(InputError, match="motion_window_layers"):
        MotionDiT(**TINY, motion_window_layers="some")


def test_padding_with_garbage_and_padded_batch():
    model = _random_model().double()
    x, cond, rest, time, _ = (t.double() if t is not None else t for t in _inputs(m=30))
    mask = torch.arange(30)[None] < torch.tensor([30, 21])[:, None]
    with torch.no_grad():
        out = model(x, cond, rest, time, mask)
        x2, rest2 = x.clone(), rest.clone()
        x2[1, 21:], rest2[1, 21:] = 1e3, -1e3
        assert (model(x2, cond, rest2, time, mask)[1, :21] - out[1, :21]).abs().max() < 1e-9
        alone = model(x[1:, :21], cond[1:, :21], rest[1:, :21], time[1:])
        assert (alone[0] - out[1, :21]).abs().max() < 1e-9


def test_input_errors_name_the_argument():
    model = MotionDiT(**TINY)
    x, cond, rest, time, _ = _inputs()
    with pytest.raises(InputError, match="rest"):
        model(x, cond, rest[..., :50], time)
    with pytest.raises(InputError, match="audio_feats"):
        model(x, cond, rest, time, audio_feats=torch.randn(2, 40, 3))
    with pytest.raises(InputError, match="mask"):
        model(x, cond, rest, time, mask=torch.ones(2, 39, dtype=torch.bool))


def test_backward_reaches_every_parameter_and_checkpointing_matches():
    x, cond, rest, time, feats = _inputs(audio_feat_dim=4)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(5)
        model = _random_model(audio_feat_dim=4, checkpoint_activations=ckpt)
        model(x, cond, rest, time, audio_feats=feats).square().mean().backward()
        grads.append({k: p.grad for k, p in model.named_parameters()})
    assert all(g is not None and g.abs().sum() > 0 for g in grads[0].values())
    assert all(
        (grads[0][k] - grads[1][k]).abs().max() <= 1e-6 * (1 + grads[0][k].abs().max()) for k in grads[0]
    )


def test_config_dataclass_mirrors_the_constructor():
    params = {
        name: p.default
        for name, p in inspect.signature(MotionDiT.__init__).parameters.items()
        if name not in ("self", "attention_backend", "window", "motion_window_layers")
    }
    conf = {f.name: f.default for f in fields(MotionDiTConfig)}
    assert conf == params
