"""LivePortrait keypoint formulas: hand-computed cases, plus agreement with mimic_head's camera utilities."""

from __future__ import annotations

import math

import pytest
import torch
from mimic_head.utils.camera import get_rotation_matrix, headpose_pred_to_degree
from torch import nn

from jam_flow.errors import InputError
from jam_flow.liveportrait.keypoints import (
    compose_keypoints,
    eye_retargeting_delta,
    headpose_to_degrees,
    lip_retargeting_delta,
    refine_kp_info,
    rotation_matrix,
    stitch,
    transform_keypoints,
)


def _one_hot_logits(bins: list[int]) -> torch.Tensor:
    logits = torch.full((len(bins), 66), -1e4)
    for row, index in enumerate(bins):
        logits[row, index] = 1e4
    return logits


def test_headpose_one_hot_peaks_give_exact_bin_centres():
    degrees = headpose_to_degrees(_one_hot_logits([0, 40, 65, 32]))
    # bin i is centred at 3 * i - 97.5 degrees
    assert torch.equal(degrees, torch.tensor([-97.5, 22.5, 97.5, -1.5]))


def test_headpose_uniform_and_two_peak_logits():
    assert headpose_to_degrees(torch.zeros(1, 66)).item() == pytest.approx(0.0, abs=1e-4)  # mean bin 32.5
    two = torch.full((1, 66), -1e4)
    two[0, 10] = two[0, 20] = 5.0  # equal mass on bins 10 and 20 -> bin 15 -> -52.5 degrees
    assert headpose_to_degrees(two).item() == pytest.approx(-52.5, abs=1e-4)


def test_headpose_passes_degrees_through_and_matches_mimic_head():
    deg = torch.tensor([12.0, -3.0])
    assert headpose_to_degrees(deg) is deg
    col = deg[:, None]
    assert headpose_to_degrees(col) is col
    logits = torch.randn(4, 66, generator=torch.Generator().manual_seed(1)) * 3
    assert torch.allclose(headpose_to_degrees(logits), headpose_pred_to_degree(logits), atol=1e-5)
    half = headpose_to_degrees(logits.half())
    assert half.dtype == torch.float32


def _deg(v: float) -> torch.Tensor:
    return torch.tensor([v])


def test_rotation_single_axes_on_known_vectors():
    # yaw 90: Ry(90) maps x -> -z and z -> x; row vectors use kp @ R with R = Ry^T
    r = rotation_matrix(_deg(0), _deg(90), _deg(0))[0]
    assert torch.allclose(torch.tensor([1.0, 0, 0]) @ r, torch.tensor([0.0, 0, -1]), atol=1e-6)
    assert torch.allclose(torch.tensor([0.0, 0, 1]) @ r, torch.tensor([1.0, 0, 0]), atol=1e-6)
    # pitch 90: Rx(90) maps y -> z
    r = rotation_matrix(_deg(90), _deg(0), _deg(0))[0]
    assert torch.allclose(torch.tensor([0.0, 1, 0]) @ r, torch.tensor([0.0, 0, 1]), atol=1e-6)
    # roll 90: Rz(90) maps x -> y
    r = rotation_matrix(_deg(0), _deg(0), _deg(90))[0]
    assert torch.allclose(torch.tensor([1.0, 0, 0]) @ r, torch.tensor([0.0, 1, 0]), atol=1e-6)


def test_rotation_order_is_pitch_then_yaw_then_roll():
    # Rz Ry Rx applied to y: Rx(90) y -> z, Ry(90) z -> x, Rz(0) keeps x.  (Rx Ry order would give z.)
    r = rotation_matrix(_deg(90), _deg(90), _deg(0))[0]
    assert torch.allclose(torch.tensor([0.0, 1, 0]) @ r, torch.tensor([1.0, 0, 0]), atol=1e-6)
    # then roll 90 maps x -> y
    r = rotation_matrix(_deg(90), _deg(90), _deg(90))[0]
    assert torch.allclose(torch.tensor([0.0, 1, 0]) @ r, torch.tensor([0.0, 1, 0]), atol=1e-6)


def test_rotation_is_orthonormal_and_matches_mimic_head():
    g = torch.Generator().manual_seed(0)
    pitch, yaw, roll = (torch.rand(5, 1, generator=g) * 180 - 90 for _ in range(3))
    r = rotation_matrix(pitch, yaw, roll)
    assert r.shape == (5, 3, 3)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand(5, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(r), torch.ones(5), atol=1e-6)
    assert torch.allclose(r, get_rotation_matrix(pitch, yaw, roll), atol=1e-6)
    assert torch.allclose(rotation_matrix(pitch[:, 0], yaw[:, 0], roll[:, 0]), r)
    with pytest.raises(InputError, match="angles"):
        rotation_matrix(torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2))


def test_transform_keypoints_hand_computed():
    kp = torch.tensor([[[1.0, 2.0, 3.0]]])
    exp = torch.tensor([[[0.5, 0.0, -1.0]]])
    eye = torch.eye(3)[None]
    out = transform_keypoints(kp, eye, exp, torch.tensor([[2.0]]), torch.tensor([[10.0, 20.0, 30.0]]))
    # 2 * ([1, 2, 3] + [0.5, 0, -1]) + [10, 20, 0]  (tz is never used)
    assert torch.equal(out, torch.tensor([[[13.0, 24.0, 4.0]]]))
    yaw90 = rotation_matrix(_deg(0), _deg(90), _deg(0))
    out = transform_keypoints(
        torch.tensor([[1.0, 0.0, 0.0]]),
        yaw90,
        torch.zeros(1, 3),
        torch.tensor([2.0]),
        torch.tensor([[1.0, 1.0, 5.0]]),
    )
    assert torch.allclose(out, torch.tensor([[[1.0, 1.0, -2.0]]]), atol=1e-6)  # flattened [b, 3k] inputs


def test_refine_and_compose_keypoints():
    g = torch.Generator().manual_seed(3)
    raw = {
        "kp": torch.randn(2, 63, generator=g),
        "exp": torch.randn(2, 63, generator=g) * 0.1,
        "pitch": _one_hot_logits([40, 32]),
        "yaw": _one_hot_logits([32, 32]),
        "roll": _one_hot_logits([32, 65]),
        "t": torch.randn(2, 3, generator=g),
        "scale": torch.rand(2, 1, generator=g) + 0.5,
    }
    info = refine_kp_info(raw)
    assert info["kp"].shape == (2, 21, 3) and info["exp"].shape == (2, 21, 3)
    assert torch.equal(info["pitch"], torch.tensor([[22.5], [-1.5]]))
    x = compose_keypoints(info)
    assert torch.allclose(compose_keypoints(raw), x)  # logits decoded on the way
    rot = rotation_matrix(torch.tensor([22.5, -1.5]), torch.tensor([-1.5, -1.5]), torch.tensor([-1.5, 97.5]))
    expected = raw["scale"][:, :, None] * (raw["kp"].view(2, 21, 3) @ rot + raw["exp"].view(2, 21, 3))
    expected[..., :2] += raw["t"][:, None, :2]
    assert torch.allclose(x, expected, atol=1e-6)
    with pytest.raises(InputError, match="lacks keys"):
        refine_kp_info({"kp": raw["kp"]})


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def test_stitch_with_known_linear_net():
    k = 21
    weight = torch.zeros(3 * k + 2, 6 * k)
    weight[: 3 * k, 3 * k :] = torch.eye(3 * k)  # exp delta = x_d (flattened)
    weight[3 * k, 0] = 1.0  # tx delta = x_s[0, x]
    bias = torch.zeros(3 * k + 2)
    bias[3 * k + 1] = 0.25  # ty delta = 0.25
    net = _linear(weight, bias)
    g = torch.Generator().manual_seed(0)
    x_s, x_d = torch.randn(2, k, 3, generator=g), torch.randn(2, k, 3, generator=g)
    out = stitch(net, x_s, x_d)
    expected = 2 * x_d
    expected[..., 0] += x_s[:, 0:1, 0]
    expected[..., 1] += 0.25
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.equal(out, x_d)  # the input is not modified in place
    assert torch.equal(stitch(_linear(torch.zeros(65, 126), torch.zeros(65)), x_s, x_d), x_d)
    with pytest.raises(InputError, match="same shape"):
        stitch(net, x_s[:, :20], x_d)


def test_lip_and_eye_retargeting_with_known_linear_nets():
    k = 21
    x_s = torch.randn(1, k, 3, generator=torch.Generator().manual_seed(2))
    lip_w = torch.zeros(3 * k, 3 * k + 2)
    lip_w[:, 3 * k + 1] = 1.0  # every delta component = c_d_lip
    lip_w[5, 3 * k] = -1.0  # component 5 (kp 1, z) also gets -c_s_lip
    lip = _linear(lip_w, torch.zeros(3 * k))
    delta = lip_retargeting_delta(lip, x_s, torch.tensor([[0.3, 0.1]]))
    expected = torch.full((1, k, 3), 0.1)
    expected[0, 1, 2] = 0.1 - 0.3
    assert torch.allclose(delta, expected, atol=1e-6)
    eye_w = torch.zeros(3 * k, 3 * k + 3)
    eye_w[:, : 3 * k] = torch.eye(3 * k)  # delta = x_s
    eye_w[:, 3 * k + 2] = 2.0  # + 2 * c_d_eye
    eye = _linear(eye_w, torch.zeros(3 * k))
    delta = eye_retargeting_delta(eye, x_s, torch.tensor([[0.2, 0.3, 0.05]]))
    assert torch.allclose(delta, x_s + 0.1, atol=1e-6)
    with pytest.raises(InputError, match="eye_ratio"):
        eye_retargeting_delta(eye, x_s, torch.zeros(1, 2))


def test_yaw_sign_convention_is_upstream():
    """A positive yaw turns +x toward -z, exactly as LivePortrait's get_rotation_matrix (face turning)."""
    r = rotation_matrix(_deg(30), _deg(30), _deg(0))[0]
    v = torch.tensor([1.0, 0.0, 0.0]) @ r
    assert v[2].item() == pytest.approx(-math.sin(math.radians(30)), abs=1e-6)
