"""load_f5tts_checkpoint on tiny random checkpoints written in each exact upstream format (F5-TTS trainer ``.pt``,
pruned ``.pt``, released ``.safetensors``), and its strict error reporting."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from jam_flow.errors import InputError
from jam_flow.models import AudioDiT, JointDiT, load_f5tts_checkpoint, tiny_joint_config

TINY = dict(dim=32, depth=1, heads=2, dim_head=16, ff_mult=2, text_dim=16, conv_layers=1, text_num_embeds=7)
LEGACY_MEL = ("mel_spec.mel_stft.mel_scale.fb", "mel_spec.mel_stft.spectrogram.window")


def _weights(seed: int, **kw) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = AudioDiT(**{**TINY, **kw})
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    return model.state_dict()


def _ema_dict(weights, legacy=False):
    ema = {"initted": torch.tensor(True), "step": torch.tensor(1234)}
    ema.update({f"ema_model.transformer.{k}": v.clone() for k, v in weights.items()})
    if legacy:
        ema["ema_model." + LEGACY_MEL[0]] = torch.rand(513, 100)
        ema["ema_model." + LEGACY_MEL[1]] = torch.hann_window(1024)
    return ema


def _trainer_checkpoint(online, ema_weights):
    """The dict F5-TTS's Trainer.save_checkpoint writes (model, optimizer, EMA, scheduler, update)."""
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(3, 2)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.SequentialLR(
        opt,
        [
            torch.optim.lr_scheduler.LinearLR(opt, 1e-8, 1.0, 5),
            torch.optim.lr_scheduler.LinearLR(opt, 1.0, 1e-8, 5),
        ],
        milestones=[5],
    )
    return {
        "model_state_dict": {f"transformer.{k}": v.clone() for k, v in online.items()},
        "optimizer_state_dict": opt.state_dict(),
        "ema_model_state_dict": _ema_dict(ema_weights),
        "scheduler_state_dict": sched.state_dict(),
        "update": 1234,
    }


def _assert_loaded(model: AudioDiT, weights):
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_trainer_pt_ema_and_online(tmp_path):
    online, ema = _weights(1), _weights(2)
    path = tmp_path / "model_1200.pt"
    torch.save(_trainer_checkpoint(online, ema), path)
    model = AudioDiT(**TINY)
    info = load_f5tts_checkpoint(model, path)
    _assert_loaded(model, ema)
    assert info.weights == "ema" and info.step == 1234 and info.ignored == ("initted", "step")
    info = load_f5tts_checkpoint(model, path, use_ema=False)
    _assert_loaded(model, online)
    assert info.weights == "online" and info.step is None


def test_pruned_pt_with_legacy_mel_keys(tmp_path):
    ema = _weights(3)
    path = tmp_path / "pruned.pt"
    torch.save({"ema_model_state_dict": _ema_dict(ema, legacy=True)}, path)
    model = AudioDiT(**TINY)
    info = load_f5tts_checkpoint(model, path)
    _assert_loaded(model, ema)
    assert set(info.ignored) == {"initted", "step", *(f"ema_model.{k}" for k in LEGACY_MEL)}
    with pytest.raises(InputError, match="model_state_dict"):
        load_f5tts_checkpoint(model, path, use_ema=False)


def test_released_safetensors_into_audio_dit_and_joint_dit(tmp_path):
    cfg = tiny_joint_config(text_num_embeds=7)
    joint = JointDiT(**cfg)
    ema = {
        k: torch.randn_like(v) if v.is_floating_point() and "inv_freq" not in k else v
        for k, v in joint.audio.state_dict().items()
    }
    path = tmp_path / "model_1250000.safetensors"
    save_file(_ema_dict(ema), str(path))
    motion_before = {k: v.clone() for k, v in joint.motion.state_dict().items()}
    info = load_f5tts_checkpoint(joint, path)
    assert info.weights == "ema" and info.step == 1234
    _assert_loaded(joint.audio, ema)
    assert all(torch.equal(v, motion_before[k]) for k, v in joint.motion.state_dict().items())


def test_mismatches_are_all_listed(tmp_path):
    weights = _weights(4)
    ema = _ema_dict(weights)
    del ema["ema_model.transformer.proj_out.bias"]
    del ema["ema_model.transformer.rotary_embed.inv_freq"]
    ema["ema_model.transformer.extra.weight"] = torch.zeros(3)
    ema["ema_model.something_else"] = torch.zeros(1)
    ema["ema_model.transformer.text_embed.text_embed.weight"] = torch.zeros(9, 16)  # a different vocabulary
    path = tmp_path / "broken.pt"
    torch.save({"ema_model_state_dict": ema}, path)
    model = AudioDiT(**TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputError) as err:
        load_f5tts_checkpoint(model, path)
    msg = str(err.value)
    assert "5 problem(s)" in msg
    for needle in (
        "missing key 'ema_model.transformer.proj_out.bias'",
        "missing key 'ema_model.transformer.rotary_embed.inv_freq'",
        "unexpected key 'ema_model.transformer.extra.weight'",
        "unexpected key 'ema_model.something_else'",
        "shape mismatch for 'ema_model.transformer.text_embed.text_embed.weight': checkpoint (9, 16)",
    ):
        assert needle in msg
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing half-loaded


def test_architecture_mismatch_and_bad_files(tmp_path):
    path = tmp_path / "v1.safetensors"
    save_file(_ema_dict(_weights(5)), str(path))
    with pytest.raises(InputError, match="q_norm"):  # a model with qk_norm expects keys the file lacks
        load_f5tts_checkpoint(AudioDiT(**TINY, qk_norm="rms_norm"), path)
    with pytest.raises(InputError, match="does not exist"):
        load_f5tts_checkpoint(AudioDiT(**TINY), tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    torch.save({"weights": torch.zeros(2)}, junk)
    with pytest.raises(InputError, match="not an F5-TTS checkpoint"):
        load_f5tts_checkpoint(AudioDiT(**TINY), junk)
    not_st = tmp_path / "text.safetensors"
    not_st.write_text("hello")
    with pytest.raises(InputError, match="safetensors"):
        load_f5tts_checkpoint(AudioDiT(**TINY), not_st)
    with pytest.raises(InputError, match="AudioDiT or a JointDiT"):
        load_f5tts_checkpoint(torch.nn.Linear(2, 2), path)


def test_old_exports_without_motion_window_layers_keep_the_old_window_and_record_it(tmp_path):
    """An export written before motion_window_layers existed loads with the old behaviour ("all": the window in
    every motion layer) and re-exporting it records the key; a new model records its own value."""
    import yaml

    from jam_flow.inference.bundle import load_bundle, save_export
    from jam_flow.inference.testing import joint_meta, write_random_export
    from jam_flow.models import tiny_joint_config

    old_args = tiny_joint_config()
    assert "motion_window_layers" not in old_args
    bundle = load_bundle(write_random_export(tmp_path / "old", joint_meta(old_args)))
    assert bundle.model.motion.motion_window_layers == "all"
    assert bundle.model.motion.self_attention_window == old_args["window"]
    save_export(tmp_path / "again", bundle.model, bundle.config)
    written = yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())
    assert written["model"]["init_args"]["motion_window_layers"] == "all"
    # nor motion_window_with_alpha: old models keep the window where the motion joint switch is off
    assert bundle.model.motion_window_with_alpha is False
    assert written["model"]["init_args"]["motion_window_with_alpha"] is False
    new = load_bundle(
        write_random_export(tmp_path / "new", joint_meta({**old_args, "motion_window_layers": "joint"}))
    )
    assert new.model.motion.motion_window_layers == "joint" and new.model.motion.self_attention_window is None
    assert JointDiT(**old_args).init_args["motion_window_with_alpha"] is True  # a new model records its rule
