"""JointDiT invariances: motion absent / joint off equals the separate branches, padding is
invisible, each switch removes exactly its own cross-modal terms, drop flags, backward, checkpointing, configs."""

from __future__ import annotations

import json

import pytest
import torch

from jam_flow.errors import InputError
from jam_flow.models import AudioDiT, JointDiT, MotionDiT, paper_joint_config, tiny_joint_config
from jam_flow.models.joint_dit import resolve_joint_layers


def _random(model: torch.nn.Module, scale: float = 0.2) -> torch.nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * scale)
    return model.eval()


def _joint(dtype=torch.float32, **overrides) -> JointDiT:
    torch.manual_seed(7)
    return _random(JointDiT(**{**tiny_joint_config(), **overrides})).to(dtype)


def _inputs(b=2, n=45, m=12, audio_lens=None, motion_lens=None, dtype=torch.float32):
    g = torch.Generator().manual_seed(11)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    kw = dict(
        audio_x=rnd(b, n, 100), audio_cond=rnd(b, n, 100), text=torch.randint(0, 60, (b, 9), generator=g),
        time=torch.rand(b, generator=g, dtype=dtype), motion_x=rnd(b, m, 12), motion_cond=rnd(b, m, 12),
        motion_rest=rnd(b, m, 51),
    )  # fmt: skip
    kw["text"][-1, 6:] = -1
    if audio_lens is not None:
        kw["audio_mask"] = torch.arange(n)[None] < torch.tensor(audio_lens)[:, None]
    if motion_lens is not None:
        kw["motion_mask"] = torch.arange(m)[None] < torch.tensor(motion_lens)[:, None]
    return kw


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_motion_absent_is_exactly_audio_dit():
    joint = _joint()
    audio = AudioDiT(**tiny_joint_config()["audio"]).eval()
    audio.load_state_dict(joint.audio.state_dict())
    kw = _inputs(audio_lens=(45, 30))
    with torch.no_grad():
        v_audio, v_motion = joint(
            kw["audio_x"],
            kw["audio_cond"],
            kw["text"],
            kw["time"],
            audio_mask=kw["audio_mask"],
            drop_text=torch.tensor([True, False]),
        )
        want = audio(
            kw["audio_x"],
            kw["audio_cond"],
            kw["text"],
            kw["time"],
            kw["audio_mask"],
            drop_text=torch.tensor([True, False]),
        )
    assert v_motion is None
    assert torch.equal(v_audio, want)
    with pytest.raises(InputError, match="motion_rest"):
        joint(kw["audio_x"], kw["audio_cond"], kw["text"], kw["time"], motion_rest=kw["motion_rest"])


def test_joint_layers_none_is_exactly_the_two_separate_branches():
    joint = _joint(joint_layers="none")
    cfg = tiny_joint_config()
    audio, motion = AudioDiT(**cfg["audio"]).eval(), MotionDiT(**cfg["motion"]).eval()
    audio.load_state_dict(joint.audio.state_dict())
    motion.load_state_dict(joint.motion.state_dict())
    kw = _inputs(audio_lens=(45, 30), motion_lens=(12, 8))
    with torch.no_grad():
        v_audio, v_motion = joint(**kw)
        assert torch.equal(
            v_audio, audio(kw["audio_x"], kw["audio_cond"], kw["text"], kw["time"], kw["audio_mask"])
        )
        assert torch.equal(
            v_motion,
            motion(kw["motion_x"], kw["motion_cond"], kw["motion_rest"], kw["time"], kw["motion_mask"]),
        )


def test_both_switches_off_gives_the_audio_dit_output():
    """With both cross-modal switches off, the audio stream of a joint model is the plain Audio-DiT (the aligned
    audio positions are the integer positions because audio is the longer stream)."""
    joint = _joint()
    audio = AudioDiT(**tiny_joint_config()["audio"]).eval()
    audio.load_state_dict(joint.audio.state_dict())
    kw = _inputs(audio_lens=(45, 30), motion_lens=(12, 8))
    with torch.no_grad():
        v_audio, _ = joint(**kw, audio_sees_motion=False, motion_sees_audio=False)
        want = audio(kw["audio_x"], kw["audio_cond"], kw["text"], kw["time"], kw["audio_mask"])
    assert _max_diff(v_audio, want) < 1e-5


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_each_switch_removes_exactly_its_own_cross_modal_terms(backend):
    joint = _joint(attention_backend=backend)
    kw = _inputs(audio_lens=(45, 30), motion_lens=(12, 8))
    other_audio = dict(
        kw,
        audio_x=torch.randn_like(kw["audio_x"]),
        audio_cond=torch.randn_like(kw["audio_cond"]),
        text=torch.randint(0, 60, kw["text"].shape),
    )
    other_motion = dict(
        kw, motion_x=torch.randn_like(kw["motion_x"]), motion_rest=torch.randn_like(kw["motion_rest"])
    )
    with torch.no_grad():
        # motion_sees_audio=False: the motion output ignores the audio inputs; switched on, it does not
        _, vm = joint(**kw, motion_sees_audio=False)
        _, vm_other = joint(**other_audio, motion_sees_audio=False)
        assert torch.equal(vm, vm_other)
        assert _max_diff(joint(**kw)[1], joint(**other_audio)[1]) > 1e-3
        # audio_sees_motion=False: the audio output ignores the motion inputs; switched on, it does not
        va, _ = joint(**kw, audio_sees_motion=False)
        va_other, _ = joint(**other_motion, audio_sees_motion=False)
        assert torch.equal(va, va_other)
        assert _max_diff(joint(**kw)[0], joint(**other_motion)[0]) > 1e-3


def test_single_joint_layer_switch_changes_only_its_own_branch():
    """With one joint layer, turning off motion -> audio leaves the audio output bit-identical (audio saw motion
    keys that never depended on audio), and vice versa; with two joint layers the effect propagates."""
    kw = _inputs(audio_lens=(45, 30), motion_lens=(12, 8))
    single = _joint(joint_layers=[1])
    with torch.no_grad():
        va_on, vm_on = single(**kw)
        va_off, vm_off = single(**kw, motion_sees_audio=False)
        assert torch.equal(va_on, va_off) and _max_diff(vm_on, vm_off) > 1e-3
        va_off2, vm_off2 = single(**kw, audio_sees_motion=False)
        assert torch.equal(vm_on, vm_off2) and _max_diff(va_on, va_off2) > 1e-3
        two = _joint(joint_layers=[0, 1])
        assert _max_diff(two(**kw)[0], two(**kw, motion_sees_audio=False)[0]) > 1e-4


def test_per_sample_switches_equal_python_bools():
    joint = _joint()
    kw = _inputs(audio_lens=(45, 30), motion_lens=(12, 8))
    a_sees, m_sees = torch.tensor([True, False]), torch.tensor([False, True])
    with torch.no_grad():
        va, vm = joint(**kw, audio_sees_motion=a_sees, motion_sees_audio=m_sees)
        for i in range(2):
            wa, wm = joint(**kw, audio_sees_motion=bool(a_sees[i]), motion_sees_audio=bool(m_sees[i]))
            assert _max_diff(va[i], wa[i]) < 1e-5 and _max_diff(vm[i], wm[i]) < 1e-5


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_padding_never_changes_valid_outputs(backend):
    """Garbage in padded frames of either stream is invisible; a padded batch gives each sample what it gets
    alone (float64, audio without the text ConvNeXt whose GRN normalises over the padded text axis upstream)."""
    cfg = tiny_joint_config()
    joint = _joint(torch.float64, audio={**cfg["audio"], "conv_layers": 0}, attention_backend=backend)
    kw = _inputs(n=45, m=12, audio_lens=(45, 34), motion_lens=(12, 9), dtype=torch.float64)
    with torch.no_grad():
        va, vm = joint(**kw)
        garbage = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in kw.items()}
        for key, valid in (
            ("audio_x", 34),
            ("audio_cond", 34),
            ("motion_x", 9),
            ("motion_cond", 9),
            ("motion_rest", 9),
        ):
            garbage[key][1, valid:] = 1e4 * torch.randn_like(garbage[key][1, valid:])
        ga, gm = joint(**garbage)
        assert _max_diff(ga[1, :34], va[1, :34]) < 1e-9 and _max_diff(gm[1, :9], vm[1, :9]) < 1e-9
        alone = {k: v[1:] for k, v in kw.items() if k not in ("audio_mask", "motion_mask")}
        for key in ("audio_x", "audio_cond"):
            alone[key] = alone[key][:, :34]
        for key in ("motion_x", "motion_cond", "motion_rest"):
            alone[key] = alone[key][:, :9]
        sa, sm = joint(**alone)
        assert _max_diff(sa[0], va[1, :34]) < 1e-9 and _max_diff(sm[0], vm[1, :9]) < 1e-9
    # the default (with text ConvNeXt) is still blind to the padded content
    joint = _joint(attention_backend=backend)
    kw = _inputs(audio_lens=(45, 34), motion_lens=(12, 9))
    with torch.no_grad():
        va, vm = joint(**kw)
        kw["audio_x"][1, 34:] = 1e4
        kw["motion_rest"][1, 9:] = -1e4
        ga, gm = joint(**kw)
    assert _max_diff(ga[1, :34], va[1, :34]) < 1e-5 and _max_diff(gm[1, :9], vm[1, :9]) < 1e-5


def test_drop_flags_zero_exactly_their_inputs():
    joint = _joint()
    kw = _inputs(audio_lens=(45, 30), motion_lens=(12, 8))
    with torch.no_grad():
        base = joint(**kw)
        for flag, key in (
            ("drop_audio_cond", "audio_cond"),
            ("drop_motion_cond", "motion_cond"),
            ("drop_rest", "motion_rest"),
        ):
            dropped = joint(**kw, **{flag: True})
            zeroed = joint(**dict(kw, **{key: torch.zeros_like(kw[key])}))
            assert torch.equal(dropped[0], zeroed[0]) and torch.equal(dropped[1], zeroed[1]), flag
            assert _max_diff(dropped[1], base[1]) > 1e-4, flag


def test_window_and_rope_alignment_change_the_result():
    kw = _inputs(
        audio_lens=(45, 30), motion_lens=(12, 10)
    )  # sample 1: 3 audio frames per motion frame, not 3.75
    with torch.no_grad():
        ref = _joint()(**kw)
        for change in (
            dict(window=None),
            dict(window=1),
            dict(rope_alignment="off"),
            dict(rope_alignment="rate"),
        ):
            out = _joint(**change)(**kw)
            assert _max_diff(out[1], ref[1]) > 1e-4, change


def test_motion_time_defaults_to_time():
    joint = _joint()
    kw = _inputs()
    with torch.no_grad():
        same = joint(**kw, motion_time=kw["time"])
        assert torch.equal(joint(**kw)[1], same[1])
        assert _max_diff(joint(**kw, motion_time=torch.zeros(2))[1], same[1]) > 1e-4


def test_backward_reaches_both_branches_and_crosses_modalities():
    joint = _joint()
    kw = _inputs(audio_lens=(45, 30), motion_lens=(12, 8))
    audio_x = kw.pop("audio_x").requires_grad_(True)
    _, vm = joint(audio_x=audio_x, **kw)
    vm.square().mean().backward()
    assert audio_x.grad.abs().sum() > 0  # the motion loss reaches the audio input through joint attention
    assert joint.audio.transformer_blocks[0].attn.to_k.weight.grad.abs().sum() > 0
    audio_x.grad = None
    _, vm = joint(audio_x=audio_x, **kw, motion_sees_audio=False)
    vm.square().mean().backward()
    assert audio_x.grad is None or audio_x.grad.abs().sum() == 0


def test_activation_checkpointing_gives_identical_gradients():
    cfg = tiny_joint_config()
    kw = _inputs(audio_lens=(45, 30), motion_lens=(12, 8))
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(7)
        joint = _random(
            JointDiT(
                **{
                    **cfg,
                    "audio": {**cfg["audio"], "checkpoint_activations": ckpt},
                    "motion": {**cfg["motion"], "checkpoint_activations": ckpt},
                }
            )
        )
        va, vm = joint(**kw)
        (va.square().mean() + vm.square().mean()).backward()
        grads.append({k: p.grad for k, p in joint.named_parameters()})
    assert all(g is not None for g in grads[0].values())
    for k, g in grads[0].items():
        assert (grads[1][k] - g).abs().max() <= 1e-6 * (1 + g.abs().max()), k


def test_joint_layer_resolution_and_config_errors():
    assert resolve_joint_layers("half", 22, 22) == tuple(range(11))
    assert resolve_joint_layers("full", 22, 22) == tuple(range(22))
    assert resolve_joint_layers("none", 22, 22) == ()
    assert resolve_joint_layers([5, 1], 8, 6) == (1, 5)
    with pytest.raises(InputError, match="both branches"):
        resolve_joint_layers([6], 8, 6)
    with pytest.raises(InputError, match="joint_layers"):
        resolve_joint_layers("most", 8, 8)
    cfg = tiny_joint_config()
    with pytest.raises(InputError, match="same heads and dim_head"):
        JointDiT(**{**cfg, "motion": {**cfg["motion"], "heads": 4, "dim_head": 16}})
    with pytest.raises(InputError, match="pe_attn_head"):
        JointDiT(**{**cfg, "audio": {**cfg["audio"], "pe_attn_head": 1}})
    with pytest.raises(InputError, match="unknown key"):
        JointDiT(**{**cfg, "audio": {**cfg["audio"], "dpeth": 3}})
    with pytest.raises(InputError, match="rope_alignment"):
        JointDiT(**{**cfg, "rope_alignment": "sideways"})
    joint = JointDiT(**{**cfg, "motion": {**cfg["motion"], "depth": 6}, "joint_layers": "full"})
    assert joint.joint_layers == (0, 1, 2, 3)
    kw = _inputs()
    va, vm = joint.eval()(**kw)
    assert va.shape == (2, 45, 100) and vm.shape == (2, 12, 12)
    with pytest.raises(InputError, match="motion_x"):
        joint(**dict(kw, **{k: kw[k][:1] for k in ("motion_x", "motion_cond", "motion_rest")}))


def test_init_args_round_trip_and_named_sizes():
    joint = JointDiT(**tiny_joint_config())
    args = json.loads(json.dumps(joint.init_args))
    again = JointDiT(**args)
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in joint.state_dict().items()
    }
    assert joint.joint_layers == (0, 1) and joint.window == 4
    paper = paper_joint_config()
    assert paper["audio"]["dim"] == paper["motion"]["dim"] == 1024
    assert paper["audio"]["depth"] == paper["motion"]["depth"] == 22
    assert paper["audio"]["heads"] == paper["motion"]["heads"] == 16 and paper["joint_layers"] == "half"


def test_jsonargparse_builds_the_model_from_yaml():
    import yaml
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(JointDiT, "model")
    cfg = tiny_joint_config()
    text = yaml.safe_dump({"model": {**cfg, "joint_layers": [0, 2], "window": None}})
    build = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    model = build(parser.parse_string(text)).model
    assert isinstance(model, JointDiT)
    assert model.joint_layers == (0, 2) and model.window is None
    assert model.audio.text_embed.text_embed.num_embeddings == cfg["audio"]["text_num_embeds"] + 1


@pytest.mark.parametrize("window_layers", ["joint", "all"])
def test_motion_window_only_inside_joint_layers(window_layers):
    """Algorithm 2 step 4 (M = empty where alpha = 0): with motion_window_layers="joint" (default) a non-joint layer's
    motion output depends on a frame outside the window; a joint layer's never does ("all": neither does)."""
    from jam_flow.models.audio_dit import AudioState
    from jam_flow.models.motion_dit import MotionState

    net = _joint(window=2, motion_window_layers=window_layers)  # tiny: depth 4, joint layers 0 and 1
    assert net.joint_layers == (0, 1) and net.init_args["motion_window_layers"] == window_layers
    b, n, m, c = 1, 150, 40, 64
    g = torch.Generator().manual_seed(3)
    ha, hm = torch.randn(b, n, c, generator=g), torch.randn(b, m, c, generator=g)
    hm_far = hm.clone()
    hm_far[:, 30] += 3.0  # frame 30: far outside frame 0's window of +-2
    t = torch.randn(b, c, generator=g)
    full_a, full_m = torch.full((b,), n), torch.full((b,), m)
    rope_a = net.audio.rope(torch.arange(n, dtype=torch.float32))
    rope_m = net.motion.rope(torch.arange(m, dtype=torch.float32) * n / m)
    with torch.no_grad():
        outs = []
        for h in (hm, hm_far):
            sm = MotionState(h=h, t=t, mask=None, lens=full_m)
            sa = AudioState(h=ha, t=t, mask=None, lens=full_a, key_lens=full_a, residual=None)
            joint_out = net.joint_block(0, ha, h, sa, sm, rope_a, rope_m, True, True)[1]
            outs.append((joint_out, net.motion.run_block(2, sm, rope_m)))
    joint_diff = (outs[1][0] - outs[0][0])[0, :10].abs().max().item()
    plain_diff = (outs[1][1] - outs[0][1])[0, :10].abs().max().item()
    assert joint_diff == 0.0  # joint layer: windowed
    assert (plain_diff > 0) == (window_layers == "joint")  # non-joint layer: global only with "joint"


def test_motion_without_joint_attention_has_no_window():
    """Algorithm 2 line 4 (M_2 = empty set when alpha_2 = 0): with motion_sees_audio off in every joint layer the
    motion output at frame 0 depends on frame 50 (far beyond window x depth + the conv kernel); the models built
    with ``motion_window_with_alpha=False`` (old checkpoints) keep the window, and with alpha = 1 both rules give
    the same output (parity with the masks before the rule)."""
    new = _joint(joint_layers="full")  # every layer joint: no global motion self-attention anywhere
    old = _joint(joint_layers="full", motion_window_with_alpha=False)
    old.load_state_dict(new.state_dict())
    assert new.init_args["motion_window_with_alpha"] and not old.init_args["motion_window_with_alpha"]
    kw = _inputs(b=1, n=225, m=60)
    far = {**kw, "motion_x": kw["motion_x"].clone()}
    far["motion_x"][:, 50] += 3.0
    with torch.no_grad():
        diffs = [_max_diff(net(**kw, motion_sees_audio=False)[1][0, 0], net(**far, motion_sees_audio=False)[1][0, 0])
                 for net in (new, old)]  # fmt: skip
        assert diffs[0] > 1e-3 and diffs[1] == 0.0, diffs
        for sees in (True, torch.tensor([True])):
            torch.testing.assert_close(
                new(**kw, motion_sees_audio=sees)[1], old(**kw, motion_sees_audio=sees)[1]
            )
