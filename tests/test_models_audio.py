"""AudioDiT on its own: F5-TTS state-dict layout, drop flags, padding, input errors, backward, checkpointing."""

from __future__ import annotations

import inspect
from dataclasses import MISSING, fields

import pytest
import torch

from jam_flow.errors import InputError
from jam_flow.models import AudioDiT, AudioDiTConfig

TINY = dict(dim=64, depth=2, heads=2, ff_mult=2, text_dim=32, conv_layers=2, mel_dim=100, text_num_embeds=10)


def assert_close(got, want, atol=1e-6, rtol=1e-6):
    """``|got - want| <= atol + rtol |want|`` elementwise (without torch.testing, whose import costs seconds)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    bad = (got - want).abs() > atol + rtol * want.abs()
    assert not bad.any(), f"max abs diff {(got - want).abs().max().item():.3g}"


def _random_model(**overrides) -> AudioDiT:
    model = AudioDiT(**{**TINY, **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


def _inputs(b=2, n=24, lens=None):
    x, cond = torch.randn(b, n, 100), torch.randn(b, n, 100)
    text = torch.randint(0, 10, (b, 8))
    text[-1, 5:] = -1
    mask = None if lens is None else torch.arange(n)[None] < torch.tensor(lens)[:, None]
    return x, cond, text, torch.rand(b), mask


def test_state_dict_layout_is_f5tts():
    """Keys and shapes of F5-TTS's tiny DiT (dim 64, depth 2, heads 2, dim_head 64, text_dim 32, 2 conv layers)."""
    sd = AudioDiT(**TINY).state_dict()
    assert len(sd) == 64
    expected = {
        "time_embed.time_mlp.0.weight": (64, 256),
        "time_embed.time_mlp.2.weight": (64, 64),
        "text_embed.text_embed.weight": (11, 32),
        "text_embed.text_blocks.1.dwconv.weight": (32, 1, 7),
        "text_embed.text_blocks.1.grn.gamma": (1, 1, 64),
        "text_embed.text_blocks.0.pwconv2.weight": (32, 64),
        "input_embed.proj.weight": (64, 232),
        "input_embed.conv_pos_embed.conv1d.0.weight": (64, 4, 31),
        "input_embed.conv_pos_embed.conv1d.2.bias": (64,),
        "rotary_embed.inv_freq": (32,),
        "transformer_blocks.1.attn_norm.linear.weight": (384, 64),
        "transformer_blocks.0.attn.to_q.weight": (128, 64),
        "transformer_blocks.0.attn.to_out.0.weight": (64, 128),
        "transformer_blocks.1.ff.ff.0.0.weight": (128, 64),
        "transformer_blocks.1.ff.ff.2.weight": (64, 128),
        "norm_out.linear.weight": (128, 64),
        "proj_out.weight": (100, 64),
    }
    assert {k: tuple(sd[k].shape) for k in expected} == expected
    assert "text_embed.freqs_cis" not in sd  # non-persistent, as upstream
    extra = AudioDiT(**TINY, qk_norm="rms_norm", long_skip_connection=True).state_dict()
    assert set(extra) - set(sd) == {
        "long_skip_connection.weight",
        *(f"transformer_blocks.{i}.attn.{n}_norm.weight" for i in range(2) for n in "qk"),
    }


def test_fresh_model_outputs_zero_and_shapes():
    model = AudioDiT(**TINY).eval()
    x, cond, text, time, _ = _inputs()
    out = model(x, cond, text, time)
    assert out.shape == (2, 24, 100)
    assert torch.equal(out, torch.zeros_like(out))  # adaLN-Zero: fresh output head is zero, as F5-TTS


def test_drop_audio_cond_zeroes_exactly_cond():
    model = _random_model()
    x, cond, text, time, mask = _inputs(lens=(24, 17))
    with torch.no_grad():
        dropped = model(x, cond, text, time, mask, drop_audio_cond=True)
        assert torch.equal(dropped, model(x, torch.zeros_like(cond), text, time, mask))
        assert torch.equal(dropped, model(x, torch.randn_like(cond), text, time, mask, drop_audio_cond=True))
        assert not torch.allclose(dropped, model(x, cond, text, time, mask))


def test_drop_text_removes_the_text_content():
    model = _random_model()
    x, cond, text, time, mask = _inputs(lens=(24, 17))
    other = torch.randint(0, 10, text.shape)
    other[text < 0] = -1  # same padding pattern, different characters
    with torch.no_grad():
        dropped = model(x, cond, text, time, mask, drop_text=True)
        assert torch.equal(dropped, model(x, cond, other, time, mask, drop_text=True))
        assert not torch.allclose(model(x, cond, text, time, mask), model(x, cond, other, time, mask))


def test_per_sample_flags_equal_python_bools():
    model = _random_model()
    x, cond, text, time, mask = _inputs(lens=(24, 17))
    flags = torch.tensor([False, True])
    with torch.no_grad():
        got = model(x, cond, text, time, mask, drop_audio_cond=flags, drop_text=flags)
        for i, flag in enumerate(flags.tolist()):
            want = model(x, cond, text, time, mask, drop_audio_cond=flag, drop_text=flag)
            assert_close(got[i], want[i], atol=1e-6, rtol=0)


def test_padding_with_garbage_is_invisible_when_keys_are_masked():
    model = _random_model(attn_mask_enabled=True).double()
    x, cond, text, time, mask = (
        t.double() if t.is_floating_point() else t for t in _inputs(n=30, lens=(30, 19))
    )
    with torch.no_grad():
        out = model(x, cond, text, time, mask)
        x2, cond2 = x.clone(), cond.clone()
        x2[1, 19:], cond2[1, 19:] = 1e3 * torch.randn(11, 100), -1e3 * torch.randn(11, 100)
        assert_close(model(x2, cond2, text, time, mask)[1, :19], out[1, :19], atol=1e-9, rtol=0)


def test_padded_batch_equals_single_samples_without_text_convnext():
    """Without the text ConvNeXt (whose GRN, as upstream, normalises over the padded text axis), a padded batch
    gives each sample exactly what it gets alone."""
    model = _random_model(attn_mask_enabled=True, conv_layers=0).double()  # float64: exact up to rounding
    x, cond, text, time, mask = (
        t.double() if t.is_floating_point() else t for t in _inputs(n=30, lens=(30, 19))
    )
    with torch.no_grad():
        out = model(x, cond, text, time, mask)
        alone = model(x[1:, :19], cond[1:, :19], text[1:], time[1:])
    assert_close(out[1, :19], alone[0], atol=1e-9, rtol=1e-9)


def test_input_errors_name_the_argument():
    model = AudioDiT(**TINY)
    x, cond, text, time, mask = _inputs(lens=(24, 17))
    with pytest.raises(InputError, match="cond"):
        model(x, cond[:, :10], text, time)
    with pytest.raises(InputError, match="x: expected"):
        model(x[..., :80], cond, text, time)
    with pytest.raises(InputError, match="text"):
        model(x, cond, text.float(), time)
    with pytest.raises(InputError, match="prefix mask"):
        model(x, cond, text, time, mask.flip(1))
    with pytest.raises(InputError, match="drop_text"):
        model(x, cond, text, time, drop_text=torch.tensor([True]))
    with pytest.raises(InputError, match="time"):
        model(x, cond, text, torch.rand(3))
    with pytest.raises(InputError, match="average_upsampling"):
        AudioDiT(**TINY, text_mask_padding=False, text_embedding_average_upsampling=True)
    with pytest.raises(InputError, match="attention_backend"):
        AudioDiT(**TINY, attention_backend="magic")


def test_backward_and_activation_checkpointing_give_identical_gradients():
    x, cond, text, time, mask = _inputs(lens=(24, 17))
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(3)
        model = _random_model(checkpoint_activations=ckpt, long_skip_connection=True)
        loss = (model(x, cond, text, time, mask) ** 2).mean()
        loss.backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    assert all(g is not None and g.abs().sum() > 0 for g in grads[0].values())
    for k in grads[0]:
        assert_close(grads[1][k], grads[0][k], atol=1e-6, rtol=1e-6)


def test_config_dataclass_mirrors_the_constructor():
    params = {
        name: p.default
        for name, p in inspect.signature(AudioDiT.__init__).parameters.items()
        if name not in ("self", "attention_backend")
    }
    conf = {f.name: (MISSING if f.default is MISSING else f.default) for f in fields(AudioDiTConfig)}
    assert conf == {k: (MISSING if v is inspect.Parameter.empty else v) for k, v in params.items()}


def test_average_upsampling_spreads_tokens_evenly():
    from jam_flow.nn.embeddings import average_upsample

    h = torch.arange(1.0, 6.0)[None, :, None].repeat(2, 1, 1)  # tokens 1..5, one channel
    valid = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    out = average_upsample(
        torch.cat([h, torch.zeros(2, 5, 1)], 1), torch.cat([valid, valid & False], 1), torch.tensor([8, 3])
    )[..., 0]
    # 3 tokens over 8 frames: 8 // 3 = 2 each, the last 8 % 3 = 2 tokens get one more
    assert out[0].tolist() == [1, 1, 2, 2, 2, 3, 3, 3, 0, 0]
    # 5 tokens over 3 frames: only the last 3 tokens get a frame
    assert out[1].tolist() == [3, 4, 5, 0, 0, 0, 0, 0, 0, 0]
