"""LivePortrait networks: state-dict layout and fp32 parity with mimic_head (an independent LP repackaging).

The architectures are fixed; the cost is kept low with small spatial inputs where a network is fully
convolutional (F at 32 x 32, W on a 32 x 32 feature volume, G on an 8 x 8 feature). M runs at 256 x 256.
"""

from __future__ import annotations

from pathlib import Path

import mimic_head
import pytest
import torch
import yaml
from mimic_head.modules.appearance_feature_extractor import AppearanceFeatureExtractor as RefF
from mimic_head.modules.motion_extractor import MotionExtractor as RefM
from mimic_head.modules.spade_generator import SPADEDecoder as RefG
from mimic_head.modules.stitching_retargeting_network import StitchingRetargetingNetwork as RefS
from mimic_head.modules.warping_network import WarpingNetwork as RefW
from torch import nn

from jam_flow.errors import InputError
from jam_flow.liveportrait import (
    AppearanceFeatureExtractor,
    MotionExtractor,
    SPADEDecoder,
    StitchingRetargetingNetwork,
    WarpingNetwork,
    load_motion_extractor,
)
from jam_flow.liveportrait.testing import randomize_norm_stats

TOL = 1e-5
PARAMS = yaml.safe_load((Path(mimic_head.__file__).parent / "config" / "models.yaml").read_text())[
    "model_params"
]


def _same_layout(ours: nn.Module, ref: nn.Module) -> None:
    a, b = ours.state_dict(), ref.state_dict()
    assert sorted(a) == sorted(b), f"key sets differ: {sorted(set(a) ^ set(b))[:10]}"
    bad = [k for k in a if a[k].shape != b[k].shape]
    assert not bad, f"shape mismatches: {bad[:10]}"


def _reference(cls: type[nn.Module], **params) -> nn.Module:
    """mimic_head network built without its random initialisation (it is overwritten by ours anyway)."""
    with pytest.MonkeyPatch.context() as patch:
        for layer in (nn.Linear, nn.modules.conv._ConvNd):
            patch.setattr(layer, "reset_parameters", lambda self: None)
        return cls(**params)


def _share_random_weights(ours: nn.Module, ref: nn.Module, seed: int) -> None:
    """Ours keeps its random init and gets non-trivial BN statistics; the reference loads exactly that."""
    randomize_norm_stats(ours, torch.Generator().manual_seed(seed))
    ref.load_state_dict(ours.state_dict(), strict=True)
    ours.eval()
    ref.eval()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def test_motion_extractor_matches_reference_and_yaml_defaults():
    ours = MotionExtractor()
    ref = _reference(RefM, **PARAMS["motion_extractor_params"])
    assert PARAMS["motion_extractor_params"] == {"num_kp": 21, "backbone": "convnextv2_tiny"}
    _same_layout(ours, ref)
    assert all(k.startswith("detector.") for k in ours.state_dict())
    _share_random_weights(ours, ref, seed=0)
    img = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ours(img), ref(img)
    shapes = {"kp": (1, 63), "exp": (1, 63), "pitch": (1, 66), "yaw": (1, 66), "roll": (1, 66), "t": (1, 3)}
    assert set(a) == {"kp", "exp", "pitch", "yaw", "roll", "t", "scale"} == set(b)
    for key, value in a.items():
        assert value.shape == shapes.get(key, (1, 1))
        assert value.abs().max() > 1e-3  # not a degenerate all-zero output
        assert _max_diff(value, b[key]) <= TOL, key


def test_appearance_feature_extractor_matches_reference():
    ours = AppearanceFeatureExtractor()
    ref = _reference(RefF, **PARAMS["appearance_feature_extractor_params"])
    _same_layout(ours, ref)
    _share_random_weights(ours, ref, seed=1)
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = ours(img), ref(img)
    assert a.shape == (1, 32, 16, 8, 8)
    assert a.std() > 1e-3
    assert _max_diff(a, b) <= TOL


def test_warping_network_matches_reference():
    ours = WarpingNetwork()
    ref = _reference(RefW, **PARAMS["warping_module_params"])
    _same_layout(ours, ref)
    _share_random_weights(ours, ref, seed=2)
    g = torch.Generator().manual_seed(3)
    f_s = torch.randn(1, 32, 16, 32, 32, generator=g)
    kp_s = torch.rand(1, 21, 3, generator=g) * 1.6 - 0.8
    kp_d = kp_s + 0.05 * torch.randn(1, 21, 3, generator=g)
    with torch.no_grad():
        a = ours(f_s, kp_driving=kp_d, kp_source=kp_s)
        b = ref(f_s, kp_driving=kp_d, kp_source=kp_s)
    assert a["out"].shape == (1, 256, 32, 32)
    assert a["deformation"].shape == (1, 16, 32, 32, 3)
    assert a["occlusion_map"].shape == (1, 1, 32, 32)
    for key in ("out", "deformation", "occlusion_map"):
        assert a[key].std() > 1e-4, key
        assert _max_diff(a[key], b[key]) <= TOL, key


def test_warping_network_accepts_yaml_dict_and_checks_keypoints():
    net = WarpingNetwork(**PARAMS["warping_module_params"])
    assert sorted(net.state_dict()) == sorted(WarpingNetwork().state_dict())
    with pytest.raises(InputError, match="kp_driving"):
        net(torch.zeros(1, 32, 16, 32, 32), torch.zeros(1, 20, 3), torch.zeros(1, 21, 3))
    with pytest.raises(InputError, match="dense_motion_params"):
        WarpingNetwork(dense_motion_params={"blocks": 3})


def test_spade_decoder_matches_reference_with_spectral_norm_keys():
    ours = SPADEDecoder()
    ref = _reference(RefG, **PARAMS["spade_generator_params"])
    _same_layout(ours, ref)
    keys = ours.state_dict()
    assert {
        "G_middle_0.conv_0.weight_orig",
        "G_middle_0.conv_0.weight_u",
        "G_middle_0.conv_0.weight_v",
    } <= set(keys)
    assert "up_0.conv_s.weight_orig" in keys and "G_middle_0.conv_0.weight" not in keys
    _share_random_weights(ours, ref, seed=4)
    feature = 0.2 * torch.randn(1, 256, 8, 8, generator=torch.Generator().manual_seed(5))
    logits: dict[str, torch.Tensor] = {}

    def keep(name: str):
        return lambda _m, _i, out: logits.__setitem__(name, out)

    ours.conv_img.register_forward_hook(keep("ours"))
    ref.conv_img.register_forward_hook(keep("ref"))
    with torch.no_grad():
        a, b = ours(feature), ref(feature=feature)
    assert a.shape == (1, 3, 64, 64)
    assert _max_diff(a, b) <= TOL
    # pre-sigmoid logits too, so saturation cannot hide a difference
    scale = logits["ref"].abs().max().item()
    assert _max_diff(logits["ours"], logits["ref"]) <= TOL * max(1.0, scale)


@pytest.mark.parametrize("part", ["stitching", "lip", "eye"])
def test_stitching_retargeting_mlps_match_reference(part):
    params = PARAMS["stitching_retargeting_module_params"][part]
    ours = StitchingRetargetingNetwork(**params)
    assert sorted(getattr(StitchingRetargetingNetwork, part)().state_dict()) == sorted(ours.state_dict())
    ref = _reference(RefS, **params)
    _same_layout(ours, ref)
    _share_random_weights(ours, ref, seed=6)
    x = torch.randn(3, params["input_size"], generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert a.shape == (3, params["output_size"])
    assert _max_diff(a, b) <= TOL
    with pytest.raises(InputError, match="expected features"):
        ours(torch.zeros(1, params["input_size"] + 1))


def test_load_motion_extractor_from_random_checkpoint(tmp_path):
    source = randomize_norm_stats(MotionExtractor(), torch.Generator().manual_seed(0))
    expected = source.state_dict()
    (tmp_path / "base_models").mkdir()
    path = tmp_path / "base_models" / "motion_extractor.pth"
    torch.save(expected, path)
    for where in (path, tmp_path):  # the .pth itself, or a weights directory in the published layout
        loaded = load_motion_extractor(where)
        assert not loaded.training
        state = loaded.state_dict()
        assert sorted(state) == sorted(expected)
        assert all(torch.equal(state[k], expected[k]) for k in state)


def test_load_motion_extractor_reports_every_mismatch(tmp_path):
    state = MotionExtractor().state_dict()
    state.pop("detector.fc_kp.weight")
    state.pop("detector.fc_exp.bias")
    state["detector.extra.weight"] = torch.zeros(1)
    state["detector.fc_t.weight"] = torch.zeros(4, 768)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(InputError) as info:
        load_motion_extractor(path)
    msg = str(info.value)
    for fragment in (
        "bad.pth",
        "detector.fc_kp.weight",
        "detector.fc_exp.bias",
        "detector.extra.weight",
        "detector.fc_t.weight: checkpoint (4, 768) vs network (3, 768)",
    ):
        assert fragment in msg
    with pytest.raises(InputError, match="not found"):
        load_motion_extractor(tmp_path / "nothing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pth: cannot read"):
        load_motion_extractor(tmp_path / "junk.pth")


def test_constructor_and_input_checks():
    with pytest.raises(InputError, match="backbone"):
        MotionExtractor(backbone="convnextv2_huge")  # type: ignore[arg-type]
    small = MotionExtractor(backbone="convnextv2_atto")
    out = small(torch.rand(1, 3, 64, 64))
    assert out["kp"].shape == (1, 63) and out["pitch"].shape == (1, 66)
    with pytest.raises(InputError, match=r"\[b, 3, h, w\]"):
        small(torch.rand(3, 64, 64))
    with pytest.raises(InputError, match="SPADEDecoder"):
        SPADEDecoder()(torch.zeros(1, 128, 8, 8))
    with pytest.raises(InputError, match="reshape_channel"):
        AppearanceFeatureExtractor(reshape_channel=16)
