"""LivePortrait's keypoint algebra: pose bins -> degrees, rotation, the implicit keypoint transform, stitching
and lip / eye retargeting. Pure functions of tensors (no weights except the MLPs passed in).

Dimension legend: b batch, k keypoints (21), nb pose bins (66).

Conventions (LivePortrait's, kept exactly):
- keypoints are row vectors ``[b, k, 3]`` in the [-1, 1]^3 feature-volume space (x right, y down, z inward);
- ``R = (Rz(roll) @ Ry(yaw) @ Rx(pitch))^T`` so that a rotated keypoint set is ``kp @ R``;
- ``x = scale * (kp_c @ R + exp) + [tx, ty, 0]``: the translation's z is never used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from jam_flow.errors import InputError

__all__ = [
    "NUM_POSE_BINS",
    "compose_keypoints",
    "eye_retargeting_delta",
    "headpose_to_degrees",
    "lip_retargeting_delta",
    "refine_kp_info",
    "rotation_matrix",
    "stitch",
    "stitching_delta",
    "transform_keypoints",
]

NUM_POSE_BINS = 66
_BIN_WIDTH = 3.0  # degrees per bin
_BIN_OFFSET = 97.5  # bin 0 is centred at -97.5 degrees, bin 65 at +97.5

Mlp = Callable[[Tensor], Tensor]


def headpose_to_degrees(logits: Tensor) -> Tensor:
    """Pose logits ``[b, 66]`` -> degrees ``[b]``: ``sum(softmax(logits) * bin_index) * 3 - 97.5``.

    Anything that is not ``[b, 66]`` is taken to be degrees already and returned unchanged, so calling this
    twice is harmless (LivePortrait's ``headpose_pred_to_degree`` behaves the same way).
    """
    if logits.ndim < 2 or logits.shape[1] != NUM_POSE_BINS:
        return logits
    dtype = torch.promote_types(logits.dtype, torch.float32)  # fp16 logits are decoded in fp32
    bins = torch.arange(NUM_POSE_BINS, device=logits.device, dtype=dtype)
    probs = torch.softmax(logits.to(dtype), dim=1)
    return (probs * bins).sum(dim=1) * _BIN_WIDTH - _BIN_OFFSET


def _as_column(angle: Tensor) -> Tensor:
    """Degrees as ``[b]`` or ``[b, 1]`` -> radians ``[b]``."""
    angle = angle.float() if not angle.is_floating_point() else angle
    if angle.ndim == 2 and angle.shape[1] == 1:
        angle = angle[:, 0]
    if angle.ndim != 1:
        raise InputError(
            f"rotation_matrix: angles must be [b] or [b, 1] degrees, got shape {tuple(angle.shape)}"
        )
    return angle * (math.pi / 180.0)


def rotation_matrix(pitch: Tensor, yaw: Tensor, roll: Tensor) -> Tensor:
    """Degrees ``[b]`` or ``[b, 1]`` each -> ``R [b, 3, 3] = (Rz(roll) Ry(yaw) Rx(pitch))^T`` for ``kp @ R``."""
    x, y, z = _as_column(pitch), _as_column(yaw), _as_column(roll)
    one, zero = torch.ones_like(x), torch.zeros_like(x)

    def mat(*rows: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)

    rx = mat((one, zero, zero), (zero, x.cos(), -x.sin()), (zero, x.sin(), x.cos()))
    ry = mat((y.cos(), zero, y.sin()), (zero, one, zero), (-y.sin(), zero, y.cos()))
    rz = mat((z.cos(), -z.sin(), zero), (z.sin(), z.cos(), zero), (zero, zero, one))
    return (rz @ ry @ rx).transpose(-1, -2)


def _points(name: str, x: Tensor) -> Tensor:
    """Accept ``[b, k, 3]`` or the flattened ``[b, 3k]`` LivePortrait emits; return ``[b, k, 3]``."""
    if x.ndim == 2 and x.shape[1] % 3 == 0:
        return x.reshape(x.shape[0], -1, 3)
    if x.ndim == 3 and x.shape[2] == 3:
        return x
    raise InputError(f"{name}: expected keypoints [b, k, 3] or [b, 3k], got shape {tuple(x.shape)}")


def transform_keypoints(kp_c: Tensor, rotation: Tensor, exp: Tensor, scale: Tensor, t: Tensor) -> Tensor:
    """LivePortrait's Eqn. 2: ``x = scale * (kp_c @ R + exp) + [tx, ty, 0]``.

    ``kp_c``, ``exp``: ``[b, k, 3]`` (or flattened ``[b, 3k]``); ``rotation [b, 3, 3]``; ``scale [b, 1]`` or
    ``[b]``; ``t [b, 3]`` (z ignored) or ``[b, 2]``. Returns ``[b, k, 3]``.
    """
    kp_c, exp = _points("transform_keypoints: kp_c", kp_c), _points("transform_keypoints: exp", exp)
    scale = scale.reshape(scale.shape[0], 1, 1)
    x = scale * (kp_c @ rotation + exp)
    shift = torch.zeros_like(x[:, :1, :])
    shift[..., :2] = t[:, None, :2]
    return x + shift


def refine_kp_info(raw: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Raw ``MotionExtractor`` output -> LivePortrait's refined kp info.

    Returns ``pitch/yaw/roll [b, 1]`` degrees, ``kp/exp [b, k, 3]``, ``t [b, 3]``, ``scale [b, 1]`` (all fp32),
    as upstream's ``get_kp_info(flag_refine_info=True)``.
    """
    missing = [key for key in ("kp", "exp", "pitch", "yaw", "roll", "t", "scale") if key not in raw]
    if missing:
        raise InputError(f"refine_kp_info: motion dict lacks keys {missing}")
    out = {key: raw[key].float() for key in ("t", "scale")}
    for key in ("pitch", "yaw", "roll"):
        deg = headpose_to_degrees(raw[key].float())
        out[key] = deg[:, None] if deg.ndim == 1 else deg
    out["kp"] = _points("refine_kp_info: kp", raw["kp"].float())
    out["exp"] = _points("refine_kp_info: exp", raw["exp"].float())
    return out


def compose_keypoints(info: Mapping[str, Tensor]) -> Tensor:
    """Refined (or raw) kp info -> transformed keypoints ``x [b, k, 3]`` (pose logits are accepted too)."""
    rot = rotation_matrix(
        headpose_to_degrees(info["pitch"]),
        headpose_to_degrees(info["yaw"]),
        headpose_to_degrees(info["roll"]),
    )
    return transform_keypoints(info["kp"], rot, info["exp"], info["scale"], info["t"])


def stitching_delta(stitching_net: Mlp, x_s: Tensor, x_d: Tensor) -> Tensor:
    """The stitching MLP's raw output ``[b, 3k + 2]`` for ``concat(x_s.flatten, x_d.flatten)``."""
    x_s, x_d = _points("stitch: x_s", x_s), _points("stitch: x_d", x_d)
    if x_s.shape != x_d.shape:
        raise InputError(
            f"stitch: x_s {tuple(x_s.shape)} and x_d {tuple(x_d.shape)} must have the same shape"
        )
    return stitching_net(torch.cat([x_s.flatten(1), x_d.flatten(1)], dim=1))


def stitch(stitching_net: Mlp, x_s: Tensor, x_d: Tensor) -> Tensor:
    """Apply LivePortrait's stitching: ``x_d + delta[:3k].view(k, 3)``, then ``x_d[..., :2] += delta[3k:3k+2]``.

    ``x_s``, ``x_d``: ``[b, k, 3]``; returns the corrected driving keypoints ``[b, k, 3]`` (``x_d`` untouched).
    """
    x_s, x_d = _points("stitch: x_s", x_s), _points("stitch: x_d", x_d)
    b, k, _ = x_d.shape
    delta = stitching_delta(stitching_net, x_s, x_d)
    if delta.shape != (b, 3 * k + 2):
        raise InputError(f"stitch: the stitching net must return [b, {3 * k + 2}], got {tuple(delta.shape)}")
    out = x_d + delta[:, : 3 * k].reshape(b, k, 3)
    xy = torch.zeros_like(out[:, :1, :])
    xy[..., :2] = delta[:, None, 3 * k : 3 * k + 2]
    return out + xy


def _ratios(name: str, ratio: Tensor, b: int, width: int) -> Tensor:
    ratio = ratio.reshape(b, -1) if ratio.numel() == b * width else ratio
    if ratio.shape != (b, width):
        raise InputError(f"{name}: expected ratios [b, {width}] with b={b}, got shape {tuple(ratio.shape)}")
    return ratio


def lip_retargeting_delta(lip_net: Mlp, x_s: Tensor, lip_ratio: Tensor) -> Tensor:
    """Lip retargeting: ``lip_net(concat(x_s.flatten, [c_s_lip, c_d_lip]))`` -> keypoint delta ``[b, k, 3]``.

    ``lip_ratio [b, 2]``: the source's lip-open ratio and the wanted one (``[c_s, 0]`` closes the mouth,
    LivePortrait's ``flag_normalize_lip``). Add the result to the driving keypoints.
    """
    x_s = _points("lip_retargeting_delta: x_s", x_s)
    b, k, _ = x_s.shape
    ratio = _ratios("lip_retargeting_delta: lip_ratio", lip_ratio.to(x_s.dtype), b, 2)
    return lip_net(torch.cat([x_s.flatten(1), ratio], dim=1)).reshape(b, k, 3)


def eye_retargeting_delta(eye_net: Mlp, x_s: Tensor, eye_ratio: Tensor) -> Tensor:
    """Eye retargeting: ``eye_net(concat(x_s.flatten, [c_s_eye_l, c_s_eye_r, c_d_eye]))`` -> ``[b, k, 3]``."""
    x_s = _points("eye_retargeting_delta: x_s", x_s)
    b, k, _ = x_s.shape
    ratio = _ratios("eye_retargeting_delta: eye_ratio", eye_ratio.to(x_s.dtype), b, 3)
    return eye_net(torch.cat([x_s.flatten(1), ratio], dim=1)).reshape(b, k, 3)
