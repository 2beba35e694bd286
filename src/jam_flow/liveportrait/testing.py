"""Test helpers: write a complete, random LivePortrait weights directory in the published layout, or build the
five networks at toy widths (:func:`tiny_models`).

Used by this package's tests and by other areas' tests (render, preprocessing) that
need LivePortrait weights without downloading them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from jam_flow.liveportrait.appearance import AppearanceFeatureExtractor
from jam_flow.liveportrait.loading import WEIGHT_FILES
from jam_flow.liveportrait.motion_extractor import MotionExtractor
from jam_flow.liveportrait.pipeline import LivePortraitModels
from jam_flow.liveportrait.spade import SPADEDecoder
from jam_flow.liveportrait.stitching import StitchingRetargetingModule
from jam_flow.liveportrait.warping import DenseMotionParams, WarpingNetwork

__all__ = ["randomize_norm_stats", "tiny_models", "write_random_weights"]


@torch.no_grad()
def randomize_norm_stats(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters (so eval mode is tested)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            m.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            m.weight.copy_(1.0 + 0.1 * torch.randn(n, generator=generator))
            m.bias.copy_(0.1 * torch.randn(n, generator=generator))
    return module


def write_random_weights(
    weights_dir: str | os.PathLike[str], seed: int = 0, flat: bool = False, module_prefix: bool = False
) -> dict[str, Path]:
    """Write the five LivePortrait weight files with random weights; returns ``{name: path}``.

    Layout: ``base_models/*.pth`` and ``retargeting_models/stitching_retargeting_module.pth`` (``flat=True``
    puts the five files directly in ``weights_dir``). ``module_prefix=True`` prefixes the stitching entries'
    keys with ``module.`` as DataParallel-trained checkpoints do. Deterministic for a seed; the global RNG is
    left untouched. About 500 MB in total (the real architectures).
    """
    root = Path(weights_dir)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets: dict[str, nn.Module] = {
            "appearance_feature_extractor": AppearanceFeatureExtractor(),
            "motion_extractor": MotionExtractor(),
            "warping_module": WarpingNetwork(),
            "spade_generator": SPADEDecoder(),
        }
        stitching = StitchingRetargetingModule()
    paths: dict[str, Path] = {}
    for name, rel in WEIGHT_FILES.items():
        path = root / (Path(rel).name if flat else rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        paths[name] = path
    for name, net in nets.items():
        torch.save(randomize_norm_stats(net, generator).state_dict(), paths[name])
    entries = stitching.checkpoint_dict()
    if module_prefix:
        entries = {key: {f"module.{k}": v for k, v in state.items()} for key, state in entries.items()}
    torch.save(entries, paths["stitching_retargeting_module"])
    return paths


def tiny_models(seed: int = 0) -> LivePortraitModels:
    """The five LivePortrait networks at toy widths (the real code paths, ~1 s per frame on a loaded CPU), with
    random weights; deterministic for a seed, the global RNG left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LivePortraitModels(
            F=AppearanceFeatureExtractor(
                block_expansion=8, max_features=16, reshape_channel=4, reshape_depth=4, num_resblocks=1
            ),
            M=MotionExtractor(backbone="convnextv2_atto"),
            W=WarpingNetwork(
                block_expansion=2,
                max_features=16,
                reshape_channel=4,
                dense_motion_params=DenseMotionParams(
                    block_expansion=4, max_features=16, num_blocks=2, reshape_depth=4, compress=1
                ),
            ),
            G=SPADEDecoder(max_features=64, block_expansion=2, out_channels=4),
            S=StitchingRetargetingModule(),
        )
