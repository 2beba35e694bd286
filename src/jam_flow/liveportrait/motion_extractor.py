"""LivePortrait's motion extractor M: a ConvNeXt-V2 regressor of implicit keypoints, pose and expression.

Dimension legend: b batch, k keypoints (21), c channels, h/w spatial size, nb pose bins (66).

``MotionExtractor(img)`` takes ``img [b, 3, 256, 256]`` RGB in [0, 1] (no mean/std normalisation; any h, w
divisible by 32 runs) and returns LivePortrait's raw prediction dict, exactly as upstream:

=========  ============  ==========================================================
key        shape         meaning
=========  ============  ==========================================================
``kp``     [b, 3k]       canonical keypoints x_c (flattened k x 3)
``exp``    [b, 3k]       expression deformation (flattened k x 3)
``pitch``  [b, nb]       pose logits over 66 bins of 3 degrees (``keypoints.headpose_to_degrees``)
``yaw``    [b, nb]
``roll``   [b, nb]
``t``      [b, 3]        translation (LivePortrait uses x and y only)
``scale``  [b, 1]        scale (raw, no activation)
=========  ============  ==========================================================

``keypoints.refine_kp_info`` turns this into degrees and ``[b, k, 3]`` arrays. Checkpoint keys live under
``detector.`` (the backbone) exactly as in LivePortrait's ``motion_extractor.pth``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jam_flow.errors import InputError
from jam_flow.liveportrait.blocks import ChannelsFirstLayerNorm

__all__ = ["CONVNEXTV2_SIZES", "ConvNeXtV2", "MotionExtractor"]

# Standard ConvNeXt-V2 sizes (stage depths, stage widths). LivePortrait ships "convnextv2_tiny"; the smaller
# ones are here so tests and experiments can build a cheap extractor with the same code path.
CONVNEXTV2_SIZES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "convnextv2_atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "convnextv2_femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "convnextv2_pico": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "convnextv2_nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "convnextv2_tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
}

Backbone = Literal[
    "convnextv2_atto", "convnextv2_femto", "convnextv2_pico", "convnextv2_nano", "convnextv2_tiny"
]


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2 GRN on channels-last ``[b, h, w, c]``: x + gamma * (x * N(x)) + beta."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels))

    def forward(self, x: Tensor) -> Tensor:
        spatial_norm = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)  # [b, 1, 1, c]
        relative = spatial_norm / (spatial_norm.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * relative) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """Depthwise 7x7 conv -> LayerNorm -> Linear(4c) -> GELU -> GRN -> Linear(c), plus the residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, kernel_size=7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pwconv1 = nn.Linear(channels, 4 * channels)
        self.grn = GlobalResponseNorm(4 * channels)
        self.pwconv2 = nn.Linear(4 * channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # [b, h, w, c]
        y = self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2(nn.Module):
    """ConvNeXt-V2 trunk with LivePortrait's seven regression heads (stored as ``MotionExtractor.detector``)."""

    def __init__(
        self,
        depths: tuple[int, ...] = (3, 3, 9, 3),
        dims: tuple[int, ...] = (96, 192, 384, 768),
        num_kp: int = 21,
        num_bins: int = 66,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(depths) != len(dims):
            raise InputError(f"ConvNeXtV2: depths {depths} and dims {dims} must have the same length")
        stem = nn.Sequential(
            nn.Conv2d(in_channels, dims[0], kernel_size=4, stride=4), ChannelsFirstLayerNorm(dims[0])
        )
        downs = [
            nn.Sequential(
                ChannelsFirstLayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2)
            )
            for i in range(len(dims) - 1)
        ]
        self.downsample_layers = nn.ModuleList([stem, *downs])
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtV2Block(width) for _ in range(depth)))
            for depth, width in zip(depths, dims, strict=True)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        width = dims[-1]
        self.fc_kp = nn.Linear(width, 3 * num_kp)
        self.fc_scale = nn.Linear(width, 1)
        self.fc_pitch = nn.Linear(width, num_bins)
        self.fc_yaw = nn.Linear(width, num_bins)
        self.fc_roll = nn.Linear(width, num_bins)
        self.fc_t = nn.Linear(width, 3)
        self.fc_exp = nn.Linear(width, 3 * num_kp)

    def features(self, x: Tensor) -> Tensor:
        """``[b, 3, h, w]`` -> pooled, normalised features ``[b, dims[-1]]``."""
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        return self.norm(x.mean(dim=(-2, -1)))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.features(x)
        return {
            "pitch": self.fc_pitch(h),
            "yaw": self.fc_yaw(h),
            "roll": self.fc_roll(h),
            "t": self.fc_t(h),
            "exp": self.fc_exp(h),
            "scale": self.fc_scale(h),
            "kp": self.fc_kp(h),
        }


class MotionExtractor(nn.Module):
    """LivePortrait's M. Defaults are LivePortrait's ``motion_extractor_params`` (num_kp 21, convnextv2_tiny).

    Its state dict loads LivePortrait's ``base_models/motion_extractor.pth`` strictly
    (see ``jam_flow.liveportrait.load_motion_extractor``).
    """

    def __init__(self, num_kp: int = 21, backbone: Backbone = "convnextv2_tiny", num_bins: int = 66) -> None:
        super().__init__()
        if backbone not in CONVNEXTV2_SIZES:
            raise InputError(
                f"MotionExtractor: backbone must be one of {sorted(CONVNEXTV2_SIZES)}, got {backbone!r}"
            )
        depths, dims = CONVNEXTV2_SIZES[backbone]
        self.num_kp = num_kp
        self.num_bins = num_bins
        self.detector = ConvNeXtV2(depths=depths, dims=dims, num_kp=num_kp, num_bins=num_bins)

    def forward(self, img: Tensor) -> dict[str, Tensor]:
        """``img [b, 3, h, w]`` in [0, 1] (256 x 256 for the published weights) -> raw prediction dict."""
        if img.ndim != 4 or img.shape[1] != 3:
            raise InputError(
                f"MotionExtractor: expected an image batch [b, 3, h, w], got shape {tuple(img.shape)}"
            )
        return self.detector(img)
