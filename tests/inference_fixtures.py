"""Shared builders for the inference tests: a tiny random JointDiT export, a tiny Vocos dir and input files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from jam_flow.inference.testing import (
    joint_meta,
    random_joint_net,
    vocos_config,
    write_random_export,
    write_random_vocos,
)


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
    return joint_meta(tiny_joint_config(), stats)


def tiny_net(meta: dict) -> torch.nn.Module:
    return random_joint_net(meta)


def write_export(root: Path, with_stats: bool = True) -> Path:
    return write_random_export(root / "export", tiny_meta(with_stats))


def write_vocos(root: Path) -> Path:
    path = root / "vocos"
    write_random_vocos(path, vocos_config())
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
