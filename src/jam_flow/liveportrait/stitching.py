"""LivePortrait's stitching and retargeting MLPs (S, R_lip, R_eye).

Dimension legend: b batch, k keypoints (21).

=============  ==================================  ===========================  =========================
network        input                               hidden                       output
=============  ==================================  ===========================  =========================
stitching      concat(x_s, x_d) flattened, 126     128, 128, 64                 63 exp deltas + (tx, ty)
lip            concat(x_s, [c_s_lip, c_d_lip]), 65 128, 128, 64                 63 (k x 3 delta)
eye            concat(x_s, [c_s_l, c_s_r, c_d]), 66 256, 256, 128, 128, 64      63 (k x 3 delta)
=============  ==================================  ===========================  =========================

``StitchingRetargetingNetwork`` is one MLP (upstream's class of the same name; its defaults build the
stitching MLP). ``StitchingRetargetingModule`` holds the three and reads / writes LivePortrait's
``stitching_retargeting_module.pth`` (``retarget_shoulder`` / ``retarget_mouth`` / ``retarget_eye``).
How the outputs are applied lives in ``jam_flow.liveportrait.keypoints``. No masks.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from jam_flow.errors import InputError
from jam_flow.liveportrait.keypoints import stitch

__all__ = ["StitchingRetargetingModule", "StitchingRetargetingNetwork"]


class StitchingRetargetingNetwork(nn.Module):
    """MLP ``Linear -> ReLU -> ... -> Linear`` (keys ``mlp.0``, ``mlp.2``, ...); defaults: the stitching MLP."""

    def __init__(
        self, input_size: int = 126, hidden_sizes: tuple[int, ...] = (128, 128, 64), output_size: int = 65
    ) -> None:
        super().__init__()
        if len(hidden_sizes) == 0:
            raise InputError("StitchingRetargetingNetwork: hidden_sizes must list at least one layer width")
        layers: list[nn.Module] = []
        width = input_size
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, output_size))
        self.mlp = nn.Sequential(*layers)
        self.input_size = input_size
        self.output_size = output_size

    @classmethod
    def stitching(cls) -> StitchingRetargetingNetwork:
        """LivePortrait's stitching MLP (126 -> 65)."""
        return cls(126, (128, 128, 64), 65)

    @classmethod
    def lip(cls) -> StitchingRetargetingNetwork:
        """LivePortrait's lip retargeting MLP (65 -> 63)."""
        return cls(65, (128, 128, 64), 63)

    @classmethod
    def eye(cls) -> StitchingRetargetingNetwork:
        """LivePortrait's eye retargeting MLP (66 -> 63)."""
        return cls(66, (256, 256, 128, 128, 64), 63)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.input_size:
            raise InputError(
                f"StitchingRetargetingNetwork: expected features [b, {self.input_size}], got {tuple(x.shape)}"
            )
        return self.mlp(x)


class StitchingRetargetingModule(nn.Module):
    """The three MLPs of ``stitching_retargeting_module.pth`` as ``.stitching``, ``.lip``, ``.eye``."""

    CHECKPOINT_KEYS: dict[str, str] = {
        "stitching": "retarget_shoulder",
        "lip": "retarget_mouth",
        "eye": "retarget_eye",
    }

    def __init__(self) -> None:
        super().__init__()
        self.stitching = StitchingRetargetingNetwork.stitching()
        self.lip = StitchingRetargetingNetwork.lip()
        self.eye = StitchingRetargetingNetwork.eye()

    def checkpoint_dict(self) -> dict[str, dict[str, Tensor]]:
        """State dicts in LivePortrait's file layout ``{"retarget_shoulder": ..., "retarget_mouth": ..., ...}``."""
        return {
            key: {name: value.detach().clone() for name, value in getattr(self, part).state_dict().items()}
            for part, key in self.CHECKPOINT_KEYS.items()
        }

    def split_checkpoint(
        self, checkpoint: Mapping[str, object], source: str
    ) -> dict[str, Mapping[str, object]]:
        """Check the three entries exist and are mappings; return ``{part: state_dict}``."""
        missing = [key for key in self.CHECKPOINT_KEYS.values() if key not in checkpoint]
        if missing:
            raise InputError(
                f"{source}: missing entries {missing} (expected keys {sorted(self.CHECKPOINT_KEYS.values())})"
            )
        parts: dict[str, Mapping[str, object]] = {}
        for part, key in self.CHECKPOINT_KEYS.items():
            entry = checkpoint[key]
            if not isinstance(entry, Mapping):
                raise InputError(f"{source}: entry {key!r} must be a state dict, got {type(entry).__name__}")
            parts[part] = entry
        return parts

    def forward(self, x_s: Tensor, x_d: Tensor) -> Tensor:
        """Stitched driving keypoints ``[b, k, 3]`` (see ``keypoints.stitch``)."""
        return stitch(self.stitching, x_s, x_d)

    @torch.no_grad()
    def zero_(self) -> StitchingRetargetingModule:
        """Zero every weight: stitching and retargeting become the identity (useful for ablations and tests)."""
        for p in self.parameters():
            p.zero_()
        return self
