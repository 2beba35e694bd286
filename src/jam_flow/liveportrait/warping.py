"""LivePortrait's warping module W: dense motion from two keypoint sets, 3-D feature warping, occlusion.

Dimension legend: b batch, k keypoints (21), c feature channels (32), c' compressed channels (4),
d depth (16), h/w feature size (64 for the published weights), hg hourglass output channels.

``WarpingNetwork(f_s [b, c, d, h, w], kp_driving [b, k, 3], kp_source [b, k, 3])`` returns a dict:
``out [b, 256, h, w]`` (the warped, occlusion-weighted feature the SPADE decoder renders),
``deformation [b, d, h, w, 3]`` (grid_sample coordinates) and ``occlusion_map [b, 1, h, w]`` (or None).

Dense motion (upstream ``DenseMotionNetwork``, kept step for step):
1. compress f_s to c' channels (1x1x1 conv, BN, ReLU);
2. k + 1 candidate flows: identity (background) and, per keypoint, the translation ``grid - x_d[k] + x_s[k]``;
3. warp the compressed feature with each flow; add Gaussian heatmaps ``G(x_d) - G(x_s)`` (zeros for background);
4. a 3-D hourglass and a 7x7x7 conv give k + 1 softmax masks; ``deformation = sum(mask * flow)``;
5. occlusion = sigmoid(7x7 conv over the hourglass output with depth folded into channels).
h and w must be divisible by ``2**num_blocks`` (32); d must equal ``reshape_depth``. No masks in the
attention sense; "mask" here is the per-flow softmax weight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jam_flow.errors import InputError
from jam_flow.liveportrait.blocks import ConvNormAct2d, Hourglass3d, coordinate_grid, gaussian_heatmaps

__all__ = ["DenseMotionNetwork", "DenseMotionParams", "WarpingNetwork"]


@dataclass(frozen=True)
class DenseMotionParams:
    """``warping_module_params.dense_motion_params`` in LivePortrait's models.yaml."""

    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_depth: int = 16
    compress: int = 4


class DenseMotionNetwork(nn.Module):
    """Predicts the dense 3-D deformation (and occlusion) from source / driving keypoints."""

    def __init__(
        self,
        num_kp: int = 21,
        feature_channel: int = 32,
        block_expansion: int = 32,
        max_features: int = 1024,
        num_blocks: int = 5,
        reshape_depth: int = 16,
        compress: int = 4,
        estimate_occlusion_map: bool = True,
        kp_variance: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.kp_variance = kp_variance
        self.num_blocks = num_blocks
        self.reshape_depth = reshape_depth
        self.hourglass = Hourglass3d(block_expansion, (num_kp + 1) * (compress + 1), num_blocks, max_features)
        self.mask = nn.Conv3d(self.hourglass.out_channels, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_channels * reshape_depth, 1, kernel_size=7, padding=3)
            if estimate_occlusion_map
            else None
        )

    def sparse_motions(self, feature: Tensor, kp_driving: Tensor, kp_source: Tensor) -> Tensor:
        """Candidate flows ``[b, k + 1, d, h, w, 3]``: identity first, then ``grid - x_d[k] + x_s[k]``."""
        b, _, d, h, w = feature.shape
        grid = coordinate_grid(d, h, w, kp_source)[None, None]  # [1, 1, d, h, w, 3]
        per_kp = grid - kp_driving[:, :, None, None, None, :] + kp_source[:, :, None, None, None, :]
        return torch.cat([grid.expand(b, 1, d, h, w, 3), per_kp], dim=1)

    def forward(self, feature: Tensor, kp_driving: Tensor, kp_source: Tensor) -> dict[str, Tensor]:
        b, _, d, h, w = feature.shape
        n = self.num_kp + 1
        feature = F.relu(self.norm(self.compress(feature)))  # [b, c', d, h, w]
        flows = self.sparse_motions(feature, kp_driving, kp_source)  # [b, n, d, h, w, 3]
        repeated = feature[:, None].expand(b, n, *feature.shape[1:]).reshape(b * n, -1, d, h, w)
        warped = F.grid_sample(repeated, flows.reshape(b * n, d, h, w, 3), align_corners=False)
        warped = warped.view(b, n, -1, d, h, w)  # [b, n, c', d, h, w]
        heat = gaussian_heatmaps(kp_driving, d, h, w, self.kp_variance) - gaussian_heatmaps(
            kp_source, d, h, w, self.kp_variance
        )  # [b, k, d, h, w]
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1).to(warped.dtype)
        stacked = torch.cat([heat[:, :, None], warped], dim=2).view(
            b, -1, d, h, w
        )  # [b, n * (c'+1), d, h, w]
        prediction = self.hourglass(stacked)  # [b, hg, d, h, w]
        mask = torch.softmax(self.mask(prediction), dim=1)  # [b, n, d, h, w]
        deformation = (flows.permute(0, 1, 5, 2, 3, 4) * mask[:, :, None]).sum(dim=1)  # [b, 3, d, h, w]
        out = {"mask": mask, "deformation": deformation.permute(0, 2, 3, 4, 1)}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction.reshape(b, -1, h, w)))
        return out


class WarpingNetwork(nn.Module):
    """LivePortrait's W; defaults are ``warping_module_params`` from LivePortrait's models.yaml.

    ``dense_motion_params`` takes a ``DenseMotionParams`` or the equivalent mapping (as in models.yaml).
    """

    def __init__(
        self,
        num_kp: int = 21,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        reshape_channel: int = 32,
        estimate_occlusion_map: bool = True,
        dense_motion_params: DenseMotionParams | Mapping[str, int] = DenseMotionParams(),
        flag_use_occlusion_map: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(dense_motion_params, Mapping):
            try:
                dense_motion_params = DenseMotionParams(**dense_motion_params)
            except TypeError as exc:
                raise InputError(
                    f"WarpingNetwork: bad dense_motion_params {dict(dense_motion_params)}: {exc}"
                ) from exc
        self.num_kp = num_kp
        self.flag_use_occlusion_map = flag_use_occlusion_map
        self.dense_motion_network = DenseMotionNetwork(
            num_kp=num_kp,
            feature_channel=reshape_channel,
            block_expansion=dense_motion_params.block_expansion,
            max_features=dense_motion_params.max_features,
            num_blocks=dense_motion_params.num_blocks,
            reshape_depth=dense_motion_params.reshape_depth,
            compress=dense_motion_params.compress,
            estimate_occlusion_map=estimate_occlusion_map,
        )
        width = block_expansion * 2**num_down_blocks
        self.third = ConvNormAct2d(max_features, width, leaky=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)

    def forward(self, feature_3d: Tensor, kp_driving: Tensor, kp_source: Tensor) -> dict[str, Tensor | None]:
        """``f_s [b, c, d, h, w]``, ``x_d``, ``x_s [b, k, 3]`` -> ``{"out", "deformation", "occlusion_map"}``."""
        if feature_3d.ndim != 5:
            raise InputError(
                f"WarpingNetwork: f_s must be [b, c, d, h, w], got shape {tuple(feature_3d.shape)}"
            )
        for name, kp in (("kp_driving", kp_driving), ("kp_source", kp_source)):
            if kp.shape != (feature_3d.shape[0], self.num_kp, 3):
                raise InputError(
                    f"WarpingNetwork: {name} must be [{feature_3d.shape[0]}, {self.num_kp}, 3], got {tuple(kp.shape)}"
                )
        dense = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        deformation = dense["deformation"]
        occlusion = dense.get("occlusion_map")
        warped = F.grid_sample(feature_3d, deformation.to(feature_3d.dtype), align_corners=False)
        b, c, d, h, w = warped.shape
        out = self.fourth(self.third(warped.view(b, c * d, h, w)))  # [b, 256, h, w]
        if self.flag_use_occlusion_map and occlusion is not None:
            out = out * occlusion
        return {"occlusion_map": occlusion, "deformation": deformation, "out": out}
