"""LivePortrait weights directory loading and the rendering core (extract_source, stitch, warp_decode).

One random weights directory (the real architectures, ~500 MB, written by ``write_random_weights``) is
shared by the module. Source extraction runs on 64 x 64 crops; the batching / chunking logic of warp_decode
is checked with a cheap stand-in W and G (the real W and G have their own parity tests). Real renders
against the reference (128 -> 256 and the full 256 -> 512) are the slow tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from mimic_head.modules.spade_generator import SPADEDecoder as RefG
from mimic_head.modules.warping_network import WarpingNetwork as RefW
from mimic_head.utils.camera import get_rotation_matrix, headpose_pred_to_degree

from jam_flow.errors import InputError
from jam_flow.liveportrait import load_liveportrait
from jam_flow.liveportrait.loading import WEIGHT_FILES, read_checkpoint
from jam_flow.liveportrait.pipeline import LivePortraitModels
from jam_flow.liveportrait.testing import write_random_weights

REF_W_PARAMS = dict(
    num_kp=21,
    block_expansion=64,
    max_features=512,
    num_down_blocks=2,
    reshape_channel=32,
    estimate_occlusion_map=True,
    dense_motion_params=dict(
        block_expansion=32, max_features=1024, num_blocks=5, reshape_depth=16, compress=4
    ),
)
REF_G_PARAMS = dict(upscale=2, block_expansion=64, max_features=512, num_down_blocks=2)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lp_weights")
    write_random_weights(root, seed=0, module_prefix=True)
    return root


@pytest.fixture(scope="module")
def models(weights_dir) -> LivePortraitModels:
    return load_liveportrait(weights_dir)


def _crop(seed: int, size: int = 128) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_load_liveportrait_published_layout(weights_dir, models):
    assert sorted(p.relative_to(weights_dir).as_posix() for p in weights_dir.rglob("*.pth")) == sorted(
        WEIGHT_FILES.values()
    )
    for name, net in (("appearance_feature_extractor", models.F), ("warping_module", models.W)):
        saved = read_checkpoint(weights_dir / WEIGHT_FILES[name])
        state = net.state_dict()
        assert sorted(saved) == sorted(state)
        assert all(torch.equal(saved[k], state[k]) for k in state), name
    saved = read_checkpoint(weights_dir / WEIGHT_FILES["stitching_retargeting_module"])
    assert sorted(saved) == ["retarget_eye", "retarget_mouth", "retarget_shoulder"]
    assert all(k.startswith("module.") for k in saved["retarget_mouth"])
    assert torch.equal(saved["retarget_mouth"]["module.mlp.6.weight"], models.S.lip.mlp[6].weight)
    assert all(not net.training for net in models.networks().values())
    # BN statistics are non-trivial, so eval-mode normalisation is exercised by the parity tests
    assert models.F.first.norm.running_var.sub(1).abs().max() > 0.01


def test_flat_layout_loads(tmp_path, weights_dir, models):
    for rel in WEIGHT_FILES.values():
        os.link(weights_dir / rel, tmp_path / Path(rel).name)
    loaded = load_liveportrait(tmp_path)
    for name in ("F", "M", "W", "G", "S"):
        a, b = loaded.networks()[name].state_dict(), models.networks()[name].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.slow
def test_write_random_weights_is_deterministic(tmp_path, weights_dir):
    flat = write_random_weights(tmp_path, seed=0, flat=True)
    assert all(p.parent == tmp_path for p in flat.values())
    for name, rel in WEIGHT_FILES.items():
        a, b = read_checkpoint(flat[name]), read_checkpoint(weights_dir / rel)
        if name == "stitching_retargeting_module":  # the fixture wrote it with "module." prefixes
            a = {key: {f"module.{k}": v for k, v in state.items()} for key, state in a.items()}
            assert all(torch.equal(a[e][k], b[e][k]) for e in a for k in a[e])
        else:
            assert all(torch.equal(a[k], b[k]) for k in a), name


def test_missing_weight_files_are_all_listed(tmp_path):
    (tmp_path / "base_models").mkdir()
    (tmp_path / "base_models" / "motion_extractor.pth").write_bytes(b"")
    (tmp_path / "spade_generator.pth").write_bytes(b"")  # flat file also counts
    with pytest.raises(InputError) as info:
        load_liveportrait(tmp_path)
    msg = str(info.value)
    for rel in (
        "base_models/appearance_feature_extractor.pth",
        "base_models/warping_module.pth",
        "retargeting_models/stitching_retargeting_module.pth",
    ):
        assert rel in msg
    assert "motion_extractor" not in msg and "spade_generator" not in msg
    with pytest.raises(InputError, match="not a directory"):
        load_liveportrait(tmp_path / "nope")


def _placeholder_dir(root: Path) -> Path:
    for rel in WEIGHT_FILES.values():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    return root / WEIGHT_FILES["stitching_retargeting_module"]


def test_bad_stitching_checkpoints_are_reported(tmp_path, weights_dir):
    path = _placeholder_dir(tmp_path)
    good = read_checkpoint(weights_dir / WEIGHT_FILES["stitching_retargeting_module"])
    torch.save({k: v for k, v in good.items() if k != "retarget_eye"}, path)
    with pytest.raises(InputError, match=r"missing entries \['retarget_eye'\]"):
        load_liveportrait(tmp_path)
    bad = dict(good)
    bad["retarget_mouth"] = {**good["retarget_mouth"], "module.mlp.8.weight": torch.zeros(1)}
    del bad["retarget_mouth"]["module.mlp.0.bias"]
    torch.save(bad, path)
    with pytest.raises(InputError) as info:
        load_liveportrait(tmp_path)
    msg = str(info.value)
    assert "[retarget_mouth]" in msg and "mlp.8.weight" in msg and "mlp.0.bias" in msg
    path.write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot read"):
        load_liveportrait(tmp_path)


def test_extract_source_matches_upstream_formulas(models):
    crop = _crop(1, size=64)
    src = models.extract_source(crop)
    assert src["f_s"].shape == (1, 32, 16, 16, 16)
    assert src["x_s"].shape == src["kp"].shape == src["exp"].shape == (1, 21, 3)
    assert src["pitch"].shape == (1, 1) and src["R"].shape == (1, 3, 3)
    with torch.no_grad():
        raw = models.M(crop)
    pitch, yaw, roll = (headpose_pred_to_degree(raw[k])[:, None] for k in ("pitch", "yaw", "roll"))
    rot = get_rotation_matrix(pitch, yaw, roll)
    x = raw["kp"].view(1, 21, 3) @ rot + raw["exp"].view(1, 21, 3)
    x = x * raw["scale"][..., None]
    x[:, :, 0:2] += raw["t"][:, None, 0:2]
    assert torch.allclose(src["x_s"], x, atol=1e-5)
    assert torch.allclose(src["R"], rot, atol=1e-6)
    # uint8 crops are scaled to [0, 1]
    as_uint8 = (crop * 255).round().to(torch.uint8)
    assert torch.allclose(models.motion(as_uint8)["x"], models.motion(as_uint8.float() / 255)["x"])
    with pytest.raises(InputError, match="multiple of 32"):
        models.extract_source(torch.rand(1, 3, 100, 100))


@pytest.mark.slow
def test_warp_decode_matches_reference(models):
    src = models.extract_source(_crop(2))
    x_d = src["x_s"] + 0.03 * torch.randn(1, 21, 3, generator=torch.Generator().manual_seed(3))
    frame = models.warp_decode(src["f_s"], src["x_s"], x_d)
    assert frame.shape == (1, 3, 256, 256) and frame.dtype == torch.float32
    assert 0.0 <= frame.min() and frame.max() <= 1.0
    ref_w, ref_g = RefW(**REF_W_PARAMS).eval(), RefG(**REF_G_PARAMS).eval()
    ref_w.load_state_dict(models.W.state_dict())
    ref_g.load_state_dict(models.G.state_dict())
    with torch.no_grad():
        expected = ref_g(feature=ref_w(src["f_s"], kp_source=src["x_s"], kp_driving=x_d)["out"])
    assert (frame - expected).abs().max().item() <= 1e-5


class _StubWarp(torch.nn.Module):
    """Cheap stand-in for W: output depends on f_s and on both keypoint sets, per frame."""

    def forward(self, f_s, kp_driving, kp_source):
        shift = (2 * kp_driving - kp_source).sum(dim=(1, 2))[:, None, None, None]
        return {"out": f_s.flatten(1, 2)[:, :3] + shift}


def test_warp_decode_broadcasts_and_chunks(models):
    stub = LivePortraitModels(models.F, models.M, _StubWarp(), torch.nn.Identity(), models.S)
    g = torch.Generator().manual_seed(5)
    f_s, x_s, x_d = (
        torch.randn(1, 32, 16, 4, 4, generator=g),
        torch.randn(1, 21, 3, generator=g),
        torch.randn(5, 21, 3, generator=g),
    )
    expected = torch.cat([_StubWarp()(f_s, x_d[i : i + 1], x_s)["out"] for i in range(5)])
    for chunk in (None, 1, 2, 5, 8):
        assert torch.allclose(stub.warp_decode(f_s, x_s, x_d, chunk_size=chunk), expected), chunk
    per_frame_fs = torch.randn(5, 32, 16, 4, 4, generator=g)
    out = stub.warp_decode(per_frame_fs, x_s, x_d, chunk_size=2)
    assert torch.allclose(out[3], _StubWarp()(per_frame_fs[3:4], x_d[3:4], x_s)["out"][0])
    with pytest.raises(InputError, match="batch must be 1 or 5"):
        stub.warp_decode(f_s.expand(3, -1, -1, -1, -1), x_s, x_d)
    with pytest.raises(InputError, match="chunk_size"):
        stub.warp_decode(f_s, x_s, x_d, chunk_size=0)
    with pytest.raises(InputError, match="x_d"):
        stub.warp_decode(f_s, x_s, x_d[0])


def test_stitch_and_retargeting_helpers(models):
    g = torch.Generator().manual_seed(4)
    x_s = torch.randn(1, 21, 3, generator=g) * 0.3
    x_d = x_s + 0.02 * torch.randn(3, 21, 3, generator=g)
    stitched = models.stitch(x_s, x_d)
    with torch.no_grad():
        delta = models.S.stitching(torch.cat([x_s.expand(3, -1, -1).flatten(1), x_d.flatten(1)], dim=1))
    expected = x_d + delta[:, :63].view(3, 21, 3)
    expected[..., :2] += delta[:, None, 63:]
    assert torch.allclose(stitched, expected, atol=1e-6)
    lip = models.retarget_lip(x_s, torch.tensor([[0.2, 0.0]]))
    eye = models.retarget_eye(x_s, torch.tensor([[0.3, 0.3, 0.1]]))
    assert lip.shape == eye.shape == (1, 21, 3)
    with torch.no_grad():
        assert torch.allclose(
            lip.flatten(1), models.S.lip(torch.cat([x_s.flatten(1), torch.tensor([[0.2, 0.0]])], 1))
        )


def test_half_precision_is_cuda_only(models):
    half = LivePortraitModels(models.F, models.M, models.W, models.G, models.S, device="cpu")
    assert not half.uses_autocast
    half.half = True
    with pytest.warns(UserWarning, match="CUDA only"):
        half.to("cpu")
    assert not half.uses_autocast  # fp32 on CPU, same numbers as without half
    crop = _crop(8, size=64)
    assert torch.equal(half.motion(crop)["x"], models.motion(crop)["x"])


@pytest.mark.slow
def test_full_size_render_matches_reference(models):
    crop = _crop(6, size=256)
    src = models.extract_source(crop)
    assert src["f_s"].shape == (1, 32, 16, 64, 64)
    x_d = src["x_s"] + 0.02
    frame = models.warp_decode(src["f_s"], src["x_s"], x_d)
    assert frame.shape == (1, 3, 512, 512)
    ref_w, ref_g = RefW(**REF_W_PARAMS).eval(), RefG(**REF_G_PARAMS).eval()
    ref_w.load_state_dict(models.W.state_dict())
    ref_g.load_state_dict(models.G.state_dict())
    with torch.no_grad():
        expected = ref_g(feature=ref_w(src["f_s"], kp_source=src["x_s"], kp_driving=x_d)["out"])
    assert (frame - expected).abs().max().item() <= 1e-5


@pytest.mark.gpu
def test_cuda_half_precision_render(weights_dir):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    fp32 = load_liveportrait(weights_dir, device="cuda")
    half = load_liveportrait(weights_dir, device="cuda", half=True)
    crop = _crop(7, size=256)
    a, b = fp32.extract_source(crop), half.extract_source(crop)
    assert (a["x_s"] - b["x_s"]).abs().max() < 0.02
    x_d = a["x_s"].expand(4, -1, -1) + 0.01
    out_a = fp32.warp_decode(a["f_s"], a["x_s"], x_d)
    out_b = half.warp_decode(a["f_s"], a["x_s"], x_d, chunk_size=2)
    assert out_b.shape == (4, 3, 512, 512) and out_b.dtype == torch.float32 and out_b.device.type == "cuda"
    assert (out_a - out_b).abs().mean() < 0.02
