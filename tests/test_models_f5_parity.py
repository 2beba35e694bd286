"""AudioDiT against the real F5-TTS DiT from the ``f5-tts`` package: same state dict, same numbers (fp32, eval).

This test must run in CI: when ``f5_tts`` cannot be imported it FAILS (it is never skipped).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from jam_flow.models import AudioDiT, JointDiT

TINY = dict(dim=64, depth=2, heads=2, dim_head=32, ff_mult=2, mel_dim=100, text_num_embeds=12, text_dim=32)
FLAVOURS = {
    # F5TTS_v1_Base-style and F5TTS_Base-style settings (configs/F5TTS_*.yaml), at a tiny size
    "v1_base": dict(text_mask_padding=True, pe_attn_head=None, conv_layers=2),
    "v0_base": dict(text_mask_padding=False, pe_attn_head=1, conv_layers=2),
    # the remaining architecture switches of DiT
    "options": dict(
        text_mask_padding=True,
        text_embedding_average_upsampling=True,
        qk_norm="rms_norm",
        conv_layers=1,
        attn_mask_enabled=True,
        long_skip_connection=True,
    ),
}
DROPS = [(False, False), (True, False), (False, True), (True, True)]
# upstream warns about GPU memory whenever attn_mask_enabled is set with its torch backend
pytestmark = pytest.mark.filterwarnings("ignore:attn_mask_enabled=True:UserWarning")


@pytest.fixture(scope="module")
def upstream_dit():
    try:
        with warnings.catch_warnings():  # upstream's import chain warns that torch.jit.script is deprecated
            warnings.simplefilter("ignore", FutureWarning)
            from f5_tts.model.backbones.dit import DiT
    except Exception as err:  # noqa: BLE001 - any import failure must fail the parity test, never skip it
        pytest.fail(f"the f5-tts package is required for the parity test and could not be imported: {err!r}")
    return DiT


def _pair(DiT, flavour: str, backend: str = "auto"):
    kwargs = {**TINY, **FLAVOURS[flavour]}
    torch.manual_seed(1)
    ref = DiT(**kwargs)
    with torch.no_grad():  # F5 zero-initialises adaLN and the output head: randomise every parameter
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    ours = AudioDiT(**kwargs, attention_backend=backend)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref.eval(), ours.eval()


def _batch(n: int = 40, lens=(40, 27)):
    g = torch.Generator().manual_seed(2)
    b = len(lens)
    x = torch.randn(b, n, 100, generator=g)
    cond = torch.randn(b, n, 100, generator=g)
    # sample 0: text shorter than its mel; sample 1: text longer than its valid length (F5 cuts it)
    text = torch.full((b, 31), -1, dtype=torch.long)
    text[0, :9] = torch.randint(0, 12, (9,), generator=g)
    text[1, :] = torch.randint(0, 12, (31,), generator=g)
    time = torch.rand(b, generator=g)
    mask = torch.arange(n)[None] < torch.tensor(lens)[:, None]
    return x, cond, text, time, mask


def test_state_dict_keys_and_shapes_equal(upstream_dit):
    for flavour in FLAVOURS:
        ref, ours = _pair(upstream_dit, flavour)
        theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
        assert mine == theirs, flavour
        assert "rotary_embed.inv_freq" in mine
        # both directions load strictly, and a fresh inv_freq buffer already equals upstream's
        ref.load_state_dict(ours.state_dict(), strict=True)
        fresh = AudioDiT(**{**TINY, **FLAVOURS[flavour]})
        assert torch.equal(
            fresh.rotary_embed.inv_freq, upstream_dit(**{**TINY, **FLAVOURS[flavour]}).rotary_embed.inv_freq
        )


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_forward_matches_f5tts(upstream_dit, flavour):
    ref, ours = _pair(upstream_dit, flavour)
    x, cond, text, time, mask = _batch()
    worst = 0.0
    with torch.no_grad():
        for m in (mask, None):
            for drop_audio_cond, drop_text in DROPS:
                want = ref(x, cond, text, time, mask=m, drop_audio_cond=drop_audio_cond, drop_text=drop_text)
                got = ours(x, cond, text, time, mask=m, drop_audio_cond=drop_audio_cond, drop_text=drop_text)
                assert got.shape == want.shape == (2, 40, 100)
                diff = (got - want).abs().max().item()
                assert diff <= 1e-5, (flavour, m is not None, drop_audio_cond, drop_text, diff)
                worst = max(worst, diff)
        # a scalar time is repeated over the batch, as upstream
        assert (
            ours(x, cond, text, time[0], mask=mask) - ref(x, cond, text, time[0], mask=mask)
        ).abs().max() <= 1e-5
    assert want.abs().max() > 1.0  # the comparison is not between near-zero outputs


def test_forward_matches_with_reference_backend_and_in_joint_model(upstream_dit):
    ref, ours = _pair(upstream_dit, "v1_base", backend="reference")
    x, cond, text, time, mask = _batch()
    joint = JointDiT(
        audio={**TINY, **FLAVOURS["v1_base"]},
        motion=dict(dim=64, depth=2, heads=2, dim_head=32),
    ).eval()
    joint.audio.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        want = ref(x, cond, text, time, mask=mask, drop_text=True)
        assert (ours(x, cond, text, time, mask=mask, drop_text=True) - want).abs().max() <= 1e-5
        v_audio, v_motion = joint(x, cond, text, time, audio_mask=mask, drop_text=True)
    assert v_motion is None
    assert (v_audio - want).abs().max() <= 1e-5


def test_per_sample_drop_flags_match_f5tts_per_sample(upstream_dit):
    """A [b] drop tensor gives each sample what F5-TTS gives it with the matching Python bool."""
    ref, ours = _pair(upstream_dit, "v1_base")
    x, cond, text, time, mask = _batch()
    flags = torch.tensor([True, False])
    with torch.no_grad():
        got = ours(x, cond, text, time, mask=mask, drop_audio_cond=flags, drop_text=~flags)
        for i, flag in enumerate(flags.tolist()):
            want = ref(x, cond, text, time, mask=mask, drop_audio_cond=flag, drop_text=not flag)
            assert (got[i] - want[i]).abs().max() <= 1e-5
        other = ref(x, cond, text, time, mask=mask, drop_audio_cond=False, drop_text=True)
        assert (got[0] - other[0]).abs().max() > 1e-2  # the flags really differ per sample
