"""The checkpoint / export format (jam_flow.models.format) and the one normaliser (jam_flow.data.meta): field
order, the weights checksum (a bit flip is caught, exports without a checksum still load), v1 checkpoints written
as older jam-flow wrote them, and normalisation numerics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from inference_fixtures import tiny_meta, tiny_net

from jam_flow.data.meta import STD_FLOOR, DataMeta, DatasetStats, Normaliser
from jam_flow.errors import InputError
from jam_flow.features import MotionSettings
from jam_flow.inference.bundle import load_bundle, save_export
from jam_flow.lightning.export import export_checkpoint
from jam_flow.models.format import CHECKSUM_FIELD, META_FIELDS, make_meta, read_model_file, sha256_file


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    meta = tiny_meta()
    return save_export(tmp_path_factory.mktemp("fmt") / "export", tiny_net(meta), meta), meta


def test_export_carries_the_weights_checksum_and_field_order(export):
    out, _ = export
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert list(config) == [*META_FIELDS, CHECKSUM_FIELD]
    assert config[CHECKSUM_FIELD] == sha256_file(out / "model.safetensors")


def test_bit_flip_in_the_weights_is_refused(export, tmp_path):
    out, _ = export
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.yaml").write_bytes((out / "config.yaml").read_bytes())
    data = bytearray((out / "model.safetensors").read_bytes())
    data[-7] ^= 0x10  # one bit of one weight
    (bad / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"model\.safetensors: its SHA-256 does not match weights_sha256"):
        load_bundle(bad)


def test_export_without_checksum_loads_as_before(export, tmp_path):
    out, _ = export
    old = tmp_path / "old"
    old.mkdir()
    config = yaml.safe_load((out / "config.yaml").read_text())
    del config[CHECKSUM_FIELD]
    (old / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (old / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    a, b = load_bundle(old).model.state_dict(), load_bundle(out).model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_v1_checkpoint_as_written_before_loads_and_exports(export, tmp_path):
    """A ``ckpt["jam_flow"]`` block written literally as jam-flow's first format did (no new keys anywhere)."""
    _, meta = export
    net = tiny_net(meta)
    block = {
        "format_version": 1,
        "model": meta["model"],
        "mel": meta["mel"],
        "motion": meta["motion"],
        "stats": meta["stats"],
        "vocab": meta["vocab"],
        "normalize_mel": False,
        "ema_state_dict": net.state_dict(),
    }
    torch.save(
        {"global_step": 3, "hyper_parameters": {"stage": "stage2"}, "jam_flow": block}, tmp_path / "a.ckpt"
    )
    bundle = load_bundle(tmp_path / "a.ckpt")
    assert all(torch.equal(v, block["ema_state_dict"][k]) for k, v in bundle.model.state_dict().items())
    out = export_checkpoint(tmp_path / "a.ckpt", tmp_path / "exp")
    again = read_model_file(out, "--ckpt")
    assert again.meta[CHECKSUM_FIELD] == sha256_file(out / "model.safetensors")
    assert all(torch.equal(v, block["ema_state_dict"][k]) for k, v in again.state.items())


def test_make_meta_writes_the_fields_in_order():
    meta = make_meta({"class_path": "x.Y", "init_args": {}}, {}, {}, None, ["a"], normalize_mel=True)
    assert tuple(meta) == META_FIELDS and meta["format_version"] == 1 and meta["normalize_mel"] is True


def test_normaliser_matches_the_formula_and_inverts():
    rng = np.random.default_rng(0)
    motion = MotionSettings()
    exp_std = np.abs(rng.normal(size=(21, 3))).astype(np.float32) * 0.02
    exp_std[3, 1] = 1e-7  # below the floor
    stats = DatasetStats(
        rng.normal(size=100).astype(np.float32),
        (1 + rng.random(100)).astype(np.float32),
        rng.normal(size=(21, 3)).astype(np.float32) * 0.01,
        exp_std,
    )
    norm = Normaliser(motion, stats, normalize_mel=True)
    exp = torch.as_tensor(rng.normal(size=(2, 5, 21, 3)), dtype=torch.float32) * 0.05
    mean, std = torch.as_tensor(stats.exp_mean), torch.as_tensor(stats.exp_std).clamp_min(STD_FLOOR)
    z = (exp - mean) / std
    mouth, rest = norm.motion_to_model(exp)
    assert torch.equal(mouth, z[:, :, list(motion.mouth_indices)].flatten(2))
    assert torch.equal(rest, z[:, :, list(motion.rest_indices)].flatten(2))
    assert torch.allclose(norm.motion_from_model(mouth, rest), exp, atol=1e-6)
    assert torch.allclose(norm.mouth_from_model(mouth), exp[:, :, list(motion.mouth_indices)], atol=1e-6)
    mel = torch.randn(2, 7, 100)
    assert torch.allclose(norm.mel_from_model(norm.mel_to_model(mel)), mel, atol=1e-5)
    plain = Normaliser(motion, None, normalize_mel=False)
    assert torch.equal(plain.mel_to_model(mel), mel)
    assert torch.equal(plain.motion_to_model(exp)[0], exp[:, :, list(motion.mouth_indices)].flatten(2))
    with pytest.raises(InputError, match="normalize_mel"):
        Normaliser(motion, None, normalize_mel=True)


def test_data_meta_round_trips(export):
    _, meta = export
    back = DataMeta.from_dict(meta, "meta").to_dict()
    assert all(back[k] == meta[k] for k in ("mel", "motion", "vocab"))
    for group, key in (("mel", "mean"), ("mel", "std"), ("motion", "exp_mean"), ("motion", "exp_std")):
        assert np.allclose(back["stats"][group][key], meta["stats"][group][key], rtol=1e-6, atol=0)
    with pytest.raises(InputError, match="bad 'mel' / 'motion'"):
        DataMeta.from_dict({**meta, "motion": {"fps": "x", "bogus": 1}}, "meta")
