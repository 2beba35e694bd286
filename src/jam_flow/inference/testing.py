"""Test and benchmark helpers: random JointDiT exports and random Vocos directories in the published layouts.

The configs use 100 mel channels at 24 kHz, hop 256. Used by the inference tests and
by ``benchmarks/inference.py`` (a benchmark does not import from ``tests/``), so neither downloads weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from torch import nn

from jam_flow.data.text import Vocab
from jam_flow.features import MelSettings, MotionSettings
from jam_flow.inference.bundle import save_export
from jam_flow.models.format import FORMAT_VERSION

__all__ = ["vocos_config", "write_random_vocos", "joint_meta", "random_joint_net", "write_random_export"]


def vocos_config(dim: int = 16, intermediate_dim: int | None = None, num_layers: int = 1) -> dict:
    """A Vocos ``config.yaml`` for 24 kHz / hop 256 / 100 mels (``intermediate_dim`` defaults to ``2 * dim``);
    ``vocos_config(512, 1536, 8)`` is the published ``charactr/vocos-mel-24khz`` size."""
    return {
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
            "init_args": {
                "input_channels": 100,
                "dim": dim,
                "intermediate_dim": intermediate_dim or 2 * dim,
                "num_layers": num_layers,
            },
        },
        "head": {
            "class_path": "vocos.heads.ISTFTHead",
            "init_args": {"dim": dim, "n_fft": 1024, "hop_length": 256, "padding": "center"},
        },
    }


def write_random_vocos(path: str | Path, config: dict, weights_config: dict | None = None) -> nn.Module:
    """A random Vocos (seed 0) written as charactr/vocos-mel-24khz is: ``config.yaml`` + ``torch.save(state_dict)``.
    ``weights_config`` builds the saved weights from another config (a mismatching directory). Returns the model
    the weights came from, in eval mode."""
    from vocos import Vocos

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg_path = path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(weights_config or config))
    torch.manual_seed(0)
    model = Vocos.from_hparams(str(cfg_path))
    cfg_path.write_text(yaml.safe_dump(config))
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    return model.eval()


def joint_meta(init_args: dict, stats: dict | None = None) -> dict:
    """The ``ckpt["jam_flow"]`` fields (no weights) of a ``JointDiT(**init_args)`` with default mel / motion
    settings and vocabulary, ``normalize_mel`` false."""
    return {
        "format_version": FORMAT_VERSION,
        "model": {"class_path": "jam_flow.models.JointDiT", "init_args": init_args},
        "mel": MelSettings().to_dict(),
        "motion": MotionSettings().to_dict(),
        "stats": stats,
        "vocab": Vocab.default().to_list(),
        "normalize_mel": False,
    }


def random_joint_net(meta: dict) -> nn.Module:
    """The ``JointDiT`` of ``meta`` with random weights (seed 0)."""
    from jam_flow.models import JointDiT

    torch.manual_seed(0)
    return JointDiT(**meta["model"]["init_args"])


def write_random_export(out_dir: str | Path, meta: dict) -> Path:
    """An export directory (``save_export``) of :func:`random_joint_net` ``(meta)``; returns ``out_dir``."""
    return save_export(out_dir, random_joint_net(meta), meta)
