"""Shared builders for the inference tests: a tiny random JointDiT export, a tiny Vocos dir and input files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

from jam_flow.data.text import Vocab
from jam_flow.features import MelSettings, MotionSettings
from jam_flow.inference.bundle import FORMAT_VERSION, save_export

VOCOS_TINY = {
    "feature_extractor": {
        "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
        "init_args": {
            "sample_rate": 24000,
            "n_fft": 1024,
            "hop_length": 256,
            "n_mels": 100,
            "padding": "center",
        },
    },
    "backbone": {
        "class_path": "vocos.models.VocosBackbone",
        "init_args": {"input_channels": 100, "dim": 16, "intermediate_dim": 32, "num_layers": 1},
    },
    "head": {
        "class_path": "vocos.heads.ISTFTHead",
        "init_args": {"dim": 16, "n_fft": 1024, "hop_length": 256, "padding": "center"},
    },
}


def tiny_meta(with_stats: bool = True) -> dict:
    from jam_flow.models import tiny_joint_config

    rng = np.random.default_rng(0)
    stats = None
    if with_stats:
        stats = {
            "mel": {"mean": (-5 + rng.normal(size=100)).tolist(), "std": (1 + rng.random(100)).tolist()},
            "motion": {
                "exp_mean": (0.01 * rng.normal(size=(21, 3))).tolist(),
                "exp_std": (0.02 + 0.01 * rng.random((21, 3))).tolist(),
            },
        }
    return {
        "format_version": FORMAT_VERSION,
        "model": {"class_path": "jam_flow.models.JointDiT", "init_args": tiny_joint_config()},
        "mel": MelSettings().to_dict(),
        "motion": MotionSettings().to_dict(),
        "stats": stats,
        "vocab": Vocab.default().to_list(),
        "normalize_mel": False,
    }


def tiny_net(meta: dict) -> torch.nn.Module:
    from jam_flow.models import JointDiT

    torch.manual_seed(0)
    return JointDiT(**meta["model"]["init_args"])


def write_export(root: Path, with_stats: bool = True) -> Path:
    meta = tiny_meta(with_stats)
    return save_export(root / "export", tiny_net(meta), meta)


def write_vocos(root: Path) -> Path:
    from vocos import Vocos

    path = root / "vocos"
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(VOCOS_TINY))
    torch.manual_seed(0)
    torch.save(Vocos.from_hparams(str(path / "config.yaml")).state_dict(), path / "pytorch_model.bin")
    return path


def write_inputs(root: Path) -> dict[str, Path]:
    """ref.wav (44.1 kHz stereo, 0.6 s), speech.wav (24 kHz, 0.8 s), motion.npy [20, 21, 3] (0.8 s), silent.wav,
    clip.npz (exp + kp, 20 frames)."""
    rng = np.random.default_rng(1)
    sr = 44100
    t = np.arange(int(0.6 * sr)) / sr
    tone = (0.05 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    sf.write(root / "ref.wav", np.stack([tone, 0.5 * tone], axis=1), sr)
    t = np.arange(19200) / 24000
    sf.write(
        root / "speech.wav",
        (0.2 * np.sin(2 * np.pi * 140 * t) * np.sin(2 * np.pi * 2 * t)).astype(np.float32),
        24000,
    )
    sf.write(root / "silent.wav", np.zeros(24000, dtype=np.float32), 24000)
    exp = (0.02 * rng.normal(size=(20, 21, 3))).astype(np.float32)
    np.save(root / "motion.npy", exp)
    kp = np.repeat((0.3 * rng.normal(size=(1, 21, 3))).astype(np.float32), 20, axis=0)
    np.savez(root / "clip.npz", exp=exp, kp=kp, mel=np.zeros((75, 100), np.float32))
    return {
        "ref": root / "ref.wav",
        "speech": root / "speech.wav",
        "silent": root / "silent.wav",
        "motion": root / "motion.npy",
        "clip": root / "clip.npz",
    }
