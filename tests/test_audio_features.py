"""Stage-1 wav2vec2 / HuBERT features: a tiny randomly initialised model written with save_pretrained (nothing
downloaded), 25 fps features beside the clips, the dataset and the stage-1 adapter reading them, one-line errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from lightning_support import make_dataset  # noqa: E402

from jam_flow.data.audio import save_wav  # noqa: E402
from jam_flow.data.audio_features import AudioFeatureExtractor, write_audio_features  # noqa: E402
from jam_flow.data.format import read_manifest, write_manifest  # noqa: E402
from jam_flow.errors import InputError  # noqa: E402


def _tiny_config(cls_name: str):
    cfg_cls = {"Wav2Vec2Model": transformers.Wav2Vec2Config, "HubertModel": transformers.HubertConfig}[
        cls_name
    ]
    # the real front end (7 convolutions, stride 320 = 20 ms at 16 kHz) with tiny widths
    return cfg_cls(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8,) * 7,
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
    )


@pytest.fixture(scope="module")
def w2v_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("w2v")
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(_tiny_config("Wav2Vec2Model")).save_pretrained(str(path))
    return path


def test_features_are_on_the_motion_grid_and_follow_the_layer(w2v_dir, tmp_path):
    wave = np.sin(np.linspace(0, 400, 24000)).astype(np.float32) * 0.3  # 1 s at 24 kHz
    last = AudioFeatureExtractor(w2v_dir, layer=2)
    feats = last(wave, 24000, m=25)
    assert feats.shape == (25, 16) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert not np.allclose(AudioFeatureExtractor(w2v_dir, layer=0)(wave, 24000, m=25), feats)
    # the same result from the same wave at another rate (resampled to the model's 16 kHz first)
    import torchaudio.functional as AF

    wave16 = AF.resample(torch.from_numpy(wave), 24000, 16000).numpy()
    assert np.allclose(last(wave16, 16000, m=25), feats, atol=1e-4)
    hubert = tmp_path / "hubert"
    transformers.HubertModel(_tiny_config("HubertModel")).save_pretrained(str(hubert))
    assert AudioFeatureExtractor(hubert, layer=1)(wave, 24000, m=25).shape == (25, 16)


def test_missing_or_wrong_directories_are_one_line_errors(w2v_dir, tmp_path):
    with pytest.raises(InputError, match="not a directory") as err:
        AudioFeatureExtractor(tmp_path / "nope", layer=1)
    assert "\n" not in str(err.value)
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(InputError, match="'bert' model") as err:
        AudioFeatureExtractor(tmp_path / "bert", layer=1)
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        AudioFeatureExtractor(tmp_path / "empty", layer=1)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((w2v_dir / "config.json").read_text())
    with pytest.raises(InputError, match="cannot load") as err:
        AudioFeatureExtractor(broken, layer=1)  # config without weights
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="--layer"):
        AudioFeatureExtractor(w2v_dir, layer=9)


def test_features_written_beside_the_clips_reach_the_stage1_batch(w2v_dir, tmp_path):
    from jam_flow.lightning.datamodule import JAMFlowDataModule
    from jam_flow.models import MotionDiT
    from jam_flow.models.stages import joint_interface

    root = make_dataset(tmp_path / "data", n_train=3, n_val=1)
    records = []
    rng = np.random.default_rng(0)
    for rec in read_manifest(root):
        wav = f"clips/{rec.id}.wav"
        save_wav(root / wav, (0.1 * rng.standard_normal(int(rec.duration * 24000))).astype(np.float32), 24000)
        records.append(replace(rec, audio=wav))
    records[-1] = replace(records[-1], audio=None)  # a clip without audio is skipped and counted
    write_manifest(root, records)
    dm = JAMFlowDataModule(str(root), num_workers=0, audio_features="wav2vec2")
    with pytest.raises(InputError, match="jam-flow audio-features"):
        dm.setup("fit")
    summary = write_audio_features(root, w2v_dir, layer=2)
    assert summary["written"] == 3 and summary["skipped"] == 1 and summary["dim"] == 16
    for rec in records[:3]:
        assert np.load(root / "audio_features" / "wav2vec2" / f"{rec.id}.npy").shape == (rec.n_motion, 16)
    dm = JAMFlowDataModule(str(root), num_workers=0, audio_features="wav2vec2")
    dm.setup("fit")
    assert dm.audio_feature_dim == 16
    batch = next(iter(dm.train_dataloader()))
    feats = batch["audio_feats"]
    assert feats.shape[:2] == batch["exp"].shape[:2] and feats.shape[2] == 16
    # the stage-1 adapter feeds them to the Motion-DiT instead of the mel per motion frame
    net = MotionDiT(dim=32, depth=1, heads=2, dim_head=16, ff_mult=2, audio_feat_dim=16)
    fn = joint_interface(net, "stage1_motion")
    b, m = feats.shape[:2]
    kw = dict(
        audio_x=torch.zeros(b, batch["mel"].shape[1], 100),
        audio_cond=None,
        text=None,
        time=torch.full((b,), 0.5),
        motion_x=torch.randn(b, m, 12),
        audio_mask=batch["audio_mask"],
        motion_mask=batch["motion_mask"],
    )
    with torch.no_grad():  # adaLN-Zero starts at zero output: randomise so the input shows
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    _, v1 = fn(**kw, motion_audio_feats=feats)
    _, v2 = fn(**kw, motion_audio_feats=feats + 1.0)
    assert v1.shape == (b, m, 12) and not torch.allclose(v1, v2)
