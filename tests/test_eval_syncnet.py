"""SyncNet: strict loading of the public syncnet_v2 key layout, forward shapes, LSE-C / LSE-D."""

from __future__ import annotations

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from jam_flow.errors import InputError
from jam_flow.eval.syncnet import load_syncnet, lse_from_files, mfcc, sync_scores

# The public syncnet_v2.model layout, written out independently of our module: (key prefix, kind, shape args).
_CONV_AUD = [
    (0, 1, 64, (3, 3)),
    (4, 64, 192, (3, 3)),
    (8, 192, 384, (3, 3)),
    (11, 384, 256, (3, 3)),
    (14, 256, 256, (3, 3)),
    (18, 256, 512, (5, 4)),
]
_CONV_LIP = [
    (0, 3, 96, (5, 7, 7)),
    (4, 96, 256, (1, 5, 5)),
    (8, 256, 256, (1, 3, 3)),
    (11, 256, 256, (1, 3, 3)),
    (14, 256, 256, (1, 3, 3)),
    (18, 256, 512, (1, 6, 6)),
]


def _public_layout_state(embed: int = 1024) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(embed)
    state: dict[str, torch.Tensor] = {}

    def bn(prefix: str, c: int) -> None:
        state[f"{prefix}.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        state[f"{prefix}.bias"] = 0.1 * torch.randn(c, generator=g)
        state[f"{prefix}.running_mean"] = 0.1 * torch.randn(c, generator=g)
        state[f"{prefix}.running_var"] = 1 + torch.rand(c, generator=g)

    for net, convs in (("netcnnaud", _CONV_AUD), ("netcnnlip", _CONV_LIP)):
        for idx, c_in, c_out, kernel in convs:
            fan_in = c_in * int(np.prod(kernel))
            state[f"{net}.{idx}.weight"] = torch.randn(c_out, c_in, *kernel, generator=g) / fan_in**0.5
            state[f"{net}.{idx}.bias"] = torch.zeros(c_out)
            bn(f"{net}.{idx + 1}", c_out)
    for head in ("netfcaud", "netfclip"):
        state[f"{head}.0.weight"] = torch.randn(512, 512, generator=g) / 512**0.5
        state[f"{head}.0.bias"] = torch.zeros(512)
        bn(f"{head}.1", 512)
        state[f"{head}.3.weight"] = torch.randn(embed, 512, generator=g) / 512**0.5
        state[f"{head}.3.bias"] = torch.zeros(embed)
    return state


_SMALL = 64  # embedding size of the layout variants (the public model uses 1024)


@pytest.fixture(scope="module")
def small_state() -> dict[str, torch.Tensor]:
    return _public_layout_state(embed=_SMALL)


@pytest.fixture(scope="module")
def syncnet_ckpt(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    torch.save(_public_layout_state(), path)
    return str(path)


def test_load_strict_public_layout_and_forward_shapes(syncnet_ckpt):
    net = load_syncnet(syncnet_ckpt)
    ref = _public_layout_state()
    own = net.state_dict()
    for key, value in ref.items():
        assert torch.equal(own[key], value), key
    assert not net.training
    with torch.no_grad():
        assert net.forward_audio(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
        assert net.forward_lip(torch.rand(1, 3, 5, 224, 224) * 255).shape == (1, 1024)
    with pytest.raises(InputError, match="13, 20"):
        net.forward_audio(torch.randn(2, 1, 13, 19))


def test_load_accepts_counters_and_rejects_wrong_layout(tmp_path, small_state):
    counters = {
        k.replace(".running_mean", ".num_batches_tracked"): torch.tensor(3)
        for k in small_state
        if k.endswith(".running_mean")
    }
    torch.save({**small_state, **counters}, tmp_path / "with_counters.model")
    assert load_syncnet(tmp_path / "with_counters.model").netfclip[3].out_features == _SMALL

    missing = dict(small_state)
    del missing["netcnnlip.9.running_var"]
    torch.save(missing, tmp_path / "missing.model")
    with pytest.raises(InputError, match="netcnnlip.9.running_var"):
        load_syncnet(tmp_path / "missing.model")

    renamed = {k.replace("netcnnaud", "audio_encoder"): v for k, v in small_state.items()}
    torch.save(renamed, tmp_path / "renamed.model")
    with pytest.raises(InputError, match="syncnet"):
        load_syncnet(tmp_path / "renamed.model")

    wrong = dict(small_state)
    wrong["netcnnaud.18.weight"] = torch.zeros(512, 256, 4, 4)
    torch.save(wrong, tmp_path / "wrong.model")
    with pytest.raises(InputError, match="wrong shape"):
        load_syncnet(tmp_path / "wrong.model")
    with pytest.raises(InputError, match="does not exist"):
        load_syncnet(tmp_path / "nope.model")


class _Probe(nn.Module):
    """Stands in for SyncNet: the lip embedding is the first frame's pixel, the audio embedding the first MFCC."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward_lip(self, frames):
        return frames[:, 0, 0, 0, :1]

    def forward_audio(self, mfcc_windows):
        return mfcc_windows[:, 0, 0, :1]


@pytest.mark.parametrize("delay", [-3, 0, 2])
def test_sync_scores_offset_and_confidence(delay: int):
    t = 40
    values = torch.randn(t + 10, generator=torch.Generator().manual_seed(1)) * 10
    frames = values[:t, None, None, None].expand(t, 3, 224, 224).clone()
    feats = np.zeros((4 * t, 13), dtype=np.float32)
    for k in range(t):
        feats[4 * k, 0] = float(values[(k - delay) % t])  # audio carries the picture `delay` frames later
    scores = sync_scores(_Probe(), frames, feats, vshift=6)
    assert scores.offset == -delay  # public convention: positive = video lags the audio
    assert scores.windows == t - 5
    assert scores.conf > 0 and scores.dist >= 0


def test_mfcc_shape_and_energy_coefficient():
    x = np.random.default_rng(0).standard_normal(16000) * 1000
    feats = mfcc(x)
    assert feats.shape == (99, 13)
    quiet = mfcc(x * 0.1)
    assert np.allclose(feats[:, 0] - quiet[:, 0], np.log(100.0))  # c0 is the log frame energy


def test_lse_from_mp4_and_wav(tmp_path, small_state):
    video, audio = tmp_path / "clip.mp4", tmp_path / "clip.wav"
    frames = 8
    with av.open(str(video), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        rng = np.random.default_rng(2)
        for _ in range(frames):
            img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    sf.write(
        audio,
        np.random.default_rng(3).standard_normal(int(24000 * frames / 25)).astype(np.float32) * 0.1,
        24000,
    )
    torch.save(small_state, tmp_path / "syncnet.model")
    net = load_syncnet(tmp_path / "syncnet.model")
    scores = lse_from_files(net, video, audio, vshift=2)
    assert scores.windows == frames - 5
    assert np.isfinite(scores.dist) and scores.dist > 0 and scores.conf >= 0 and abs(scores.offset) <= 2
    with pytest.raises(InputError, match="outside"):
        lse_from_files(net, video, audio, crop=(0, 0, 65, 10))
