"""LivePortrait's rendering core: the five networks together, source extraction and ``warp_decode``.

Dimension legend: b batch (frames), k keypoints (21), h/w crop size (256 for the published weights).

Typical use (I2V, one source image, many driving keypoint sets)::

    models = load_liveportrait("pretrained_weights/liveportrait", device="cuda", half=True)
    src = models.extract_source(crop256)            # crop256 [1, 3, 256, 256] in [0, 1]
    x_d = transform_keypoints(src["kp"], src["R"], exp_new, src["scale"], src["t"])   # [b, 21, 3]
    x_d = models.stitch(src["x_s"], x_d)            # LivePortrait's stitching
    frames = models.warp_decode(src["f_s"], src["x_s"], x_d)                          # [b, 3, 512, 512]

``warp_decode`` broadcasts a single source (``f_s``/``x_s`` with batch 1) over ``b`` driving sets and can
split the batch into chunks (``chunk_size``) to bound memory. Everything here runs without gradients.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor

from jam_flow.errors import InputError
from jam_flow.liveportrait.appearance import AppearanceFeatureExtractor
from jam_flow.liveportrait.keypoints import (
    eye_retargeting_delta,
    lip_retargeting_delta,
    refine_kp_info,
    rotation_matrix,
    stitch,
    transform_keypoints,
)
from jam_flow.liveportrait.motion_extractor import MotionExtractor
from jam_flow.liveportrait.spade import SPADEDecoder
from jam_flow.liveportrait.stitching import StitchingRetargetingModule
from jam_flow.liveportrait.warping import WarpingNetwork

__all__ = ["LivePortraitModels"]


class LivePortraitModels:
    """LivePortrait's F (appearance), M (motion), W (warping), G (SPADE decoder), S (stitching + retargeting).

    ``half=True`` runs the networks under fp16 autocast on CUDA, as LivePortrait does by default on GPU;
    results are always returned in fp32. On other devices ``half`` has no effect (a warning says so):
    CPU fp16/bf16 3-D convolutions are far slower than fp32, and upstream's autocast is CUDA-only too.
    All networks are kept in eval mode.
    """

    def __init__(
        self,
        F: AppearanceFeatureExtractor,
        M: MotionExtractor,
        W: WarpingNetwork,
        G: SPADEDecoder,
        S: StitchingRetargetingModule,
        device: str | torch.device = "cpu",
        half: bool = False,
    ) -> None:
        self.F, self.M, self.W, self.G, self.S = F, M, W, G, S
        self.half = half
        self.to(device)

    def networks(self) -> dict[str, torch.nn.Module]:
        return {"F": self.F, "M": self.M, "W": self.W, "G": self.G, "S": self.S}

    def to(self, device: str | torch.device) -> LivePortraitModels:
        """Move every network to ``device`` (eval mode)."""
        self.device = torch.device(device)
        for net in self.networks().values():
            net.to(self.device).eval()
        if self.half and self.device.type != "cuda":
            warnings.warn(
                f"LivePortrait: half precision is used on CUDA only; running in fp32 on {self.device}",
                stacklevel=2,
            )
        return self

    @property
    def uses_autocast(self) -> bool:
        """True when the networks run under fp16 autocast (``half`` on a CUDA device)."""
        return self.half and self.device.type == "cuda"

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        with (
            torch.no_grad(),
            torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.uses_autocast),
        ):
            yield

    def _images(self, img: Tensor) -> Tensor:
        if img.ndim != 4 or img.shape[1] != 3:
            raise InputError(f"LivePortrait: expected crops [b, 3, h, w], got shape {tuple(img.shape)}")
        if img.shape[2] % 32 or img.shape[3] % 32:
            raise InputError(
                f"LivePortrait: crop size must be a multiple of 32 (256 x 256 for the published weights; "
                f"rendering needs a multiple of 128), got {tuple(img.shape[2:])}"
            )
        if img.dtype == torch.uint8:
            img = img.float() / 255.0
        return img.to(self.device, torch.float32).clamp(0.0, 1.0)

    def motion(self, img: Tensor) -> dict[str, Tensor]:
        """M on crops ``[b, 3, h, w]`` -> refined kp info (degrees, ``[b, k, 3]`` kp/exp), plus ``R`` and ``x``."""
        img = self._images(img)
        with self._precision():
            raw = self.M(img)
        info = refine_kp_info(raw)
        info["R"] = rotation_matrix(info["pitch"], info["yaw"], info["roll"])
        info["x"] = transform_keypoints(info["kp"], info["R"], info["exp"], info["scale"], info["t"])
        return info

    def appearance(self, img: Tensor) -> Tensor:
        """F on crops ``[b, 3, h, w]`` -> ``f_s [b, 32, 16, h/4, w/4]`` (fp32)."""
        img = self._images(img)
        with self._precision():
            return self.F(img).float()

    def extract_source(self, img: Tensor) -> dict[str, Tensor]:
        """Everything needed from a source crop ``[b, 3, 256, 256]`` in [0, 1] (uint8 is scaled by 1/255).

        Returns ``f_s [b, 32, 16, 64, 64]``, ``x_s [b, k, 3]`` (transformed source keypoints), ``R [b, 3, 3]``
        and the refined kp info ``kp``, ``exp [b, k, 3]``, ``pitch``, ``yaw``, ``roll`` (degrees ``[b, 1]``),
        ``t [b, 3]``, ``scale [b, 1]``.
        """
        info = self.motion(img)
        info["x_s"] = info.pop("x")
        info["f_s"] = self.appearance(img)
        return info

    def stitch(self, x_s: Tensor, x_d: Tensor) -> Tensor:
        """LivePortrait's stitching of driving keypoints ``[b, k, 3]`` (``x_s`` may have batch 1)."""
        x_d = x_d.to(self.device, torch.float32)
        x_s = x_s.to(self.device, torch.float32).expand_as(x_d)
        with torch.no_grad():
            return stitch(self.S.stitching, x_s, x_d)

    def retarget_lip(self, x_s: Tensor, lip_ratio: Tensor) -> Tensor:
        """Lip retargeting delta ``[b, k, 3]`` for ``lip_ratio [b, 2] = [c_s_lip, c_d_lip]``."""
        with torch.no_grad():
            return lip_retargeting_delta(
                self.S.lip, x_s.to(self.device, torch.float32), lip_ratio.to(self.device)
            )

    def retarget_eye(self, x_s: Tensor, eye_ratio: Tensor) -> Tensor:
        """Eye retargeting delta ``[b, k, 3]`` for ``eye_ratio [b, 3] = [c_s_eye_l, c_s_eye_r, c_d_eye]``."""
        with torch.no_grad():
            return eye_retargeting_delta(
                self.S.eye, x_s.to(self.device, torch.float32), eye_ratio.to(self.device)
            )

    def warp_decode(self, f_s: Tensor, x_s: Tensor, x_d: Tensor, chunk_size: int | None = None) -> Tensor:
        """Render: W then G. ``f_s [1 or b, 32, 16, 64, 64]``, ``x_s [1 or b, k, 3]``, ``x_d [b, k, 3]``.

        Returns images ``[b, 3, 512, 512]`` in [0, 1] (fp32, on ``self.device``). ``chunk_size`` frames are
        rendered per network call (all at once when None).
        """
        if x_d.ndim != 3 or x_d.shape[2] != 3:
            raise InputError(f"warp_decode: x_d must be [b, k, 3], got shape {tuple(x_d.shape)}")
        b = x_d.shape[0]
        for name, value in (("f_s", f_s), ("x_s", x_s)):
            if value.shape[0] not in (1, b):
                raise InputError(f"warp_decode: {name} batch must be 1 or {b} (x_d's), got {value.shape[0]}")
        if f_s.ndim != 5:
            raise InputError(f"warp_decode: f_s must be [b, 32, 16, h, w], got shape {tuple(f_s.shape)}")
        if chunk_size is not None and chunk_size < 1:
            raise InputError(f"warp_decode: chunk_size must be >= 1, got {chunk_size}")
        f_s = f_s.to(self.device, torch.float32)
        x_s = x_s.to(self.device, torch.float32)
        x_d = x_d.to(self.device, torch.float32)
        step = b if chunk_size is None else chunk_size
        frames = []
        with self._precision():
            for start in range(0, b, step):
                stop = min(b, start + step)
                n = stop - start
                fs = f_s.expand(n, *f_s.shape[1:]) if f_s.shape[0] == 1 else f_s[start:stop]
                xs = x_s.expand(n, *x_s.shape[1:]) if x_s.shape[0] == 1 else x_s[start:stop]
                warped = self.W(fs, kp_driving=x_d[start:stop], kp_source=xs)["out"]
                frames.append(self.G(warped).float())
        return torch.cat(frames, dim=0)
