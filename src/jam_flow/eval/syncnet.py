"""SyncNet (Chung & Zisserman 2016, the public ``syncnet_v2`` model) and the LSE-C / LSE-D lip-sync scores
(Prajwal et al. 2020) computed the way the public evaluation computes them.

Dimension legend: b batch (windows), t video frames (25 fps), s audio samples (16 kHz), q MFCC frames (100 / s),
v shifts (``2 * vshift + 1``), e embedding size (1024).

Checkpoint: the public ``syncnet_v2.model`` is a ``torch.save``d state dict whose keys are ``netcnnaud.*``
(audio CNN), ``netfcaud.*`` (audio head), ``netcnnlip.*`` (lip 3-D CNN) and ``netfclip.*`` (lip head), the
``nn.Sequential`` child indices below. ``load_syncnet`` loads it strictly: every parameter and batch-norm
statistic must be present with the right shape; only ``num_batches_tracked`` counters (absent from checkpoints
written by old PyTorch) may be missing.

Inputs, as the public pipeline feeds them:
- lips: 5 consecutive face-crop frames, 224 x 224, BGR channel order, raw 0..255 values: ``[b, 3, 5, 224, 224]``;
- audio: 13 MFCCs (``python_speech_features.mfcc`` defaults: 25 ms frames, 10 ms step, 512-point FFT,
  26 mel filters, pre-emphasis 0.97, lifter 22, c0 replaced by the log frame energy) of 16 kHz audio in int16
  units, 20 MFCC frames (0.2 s) per window: ``[b, 1, 13, 20]``.
Video frame ``k`` pairs with MFCC frames ``4k .. 4k + 19``. For each shift in ``[-vshift, vshift]`` the mean
over frames of the distance between the lip embedding and the (zero-padded) shifted audio embedding is taken;
LSE-D is the minimum of that curve, LSE-C its median minus the minimum, and the AV offset is ``vshift - argmin``.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jam_flow.errors import InputError

__all__ = [
    "SyncNet",
    "SyncScores",
    "load_syncnet",
    "mfcc",
    "read_video",
    "read_audio_16k",
    "sync_scores",
    "lse_from_files",
    "main",
]

SYNCNET_FPS = 25
SYNCNET_SR = 16000
CROP_SIZE = 224


def _conv_stack(
    layers: list[tuple], conv: type[nn.Module], norm: type[nn.Module], pool: type[nn.Module]
) -> nn.Sequential:
    """Build ``conv, bn, relu[, pool]`` groups from ``(c_in, c_out, kernel, stride, padding, pool_spec)``; the
    child indices this produces are the syncnet_v2 key layout."""
    mods: list[nn.Module] = []
    for c_in, c_out, kernel, stride, padding, pool_spec in layers:
        mods += [
            conv(c_in, c_out, kernel_size=kernel, stride=stride, padding=padding),
            norm(c_out),
            nn.ReLU(),
        ]
        if pool_spec is not None:
            p_kernel, p_stride, p_pad = pool_spec
            mods.append(pool(kernel_size=p_kernel, stride=p_stride, padding=p_pad))
    return nn.Sequential(*mods)


def _head(dim_in: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim_out))


class SyncNet(nn.Module):
    """Two-stream SyncNet: an audio CNN over ``[b, 1, 13, 20]`` MFCC windows and a lip 3-D CNN over
    ``[b, 3, 5, 224, 224]`` frame windows, each ending in a 512-d feature and an MLP head to ``embed_dim``."""

    def __init__(self, embed_dim: int = 1024) -> None:
        super().__init__()
        # (c_in, c_out, kernel, stride, padding, (pool kernel, pool stride, pool padding) or None)
        self.netcnnaud = _conv_stack(
            [
                (1, 64, (3, 3), (1, 1), (1, 1), ((1, 1), (1, 1), 0)),
                (64, 192, (3, 3), (1, 1), (1, 1), ((3, 3), (1, 2), 0)),
                (192, 384, (3, 3), (1, 1), (1, 1), None),
                (384, 256, (3, 3), (1, 1), (1, 1), None),
                (256, 256, (3, 3), (1, 1), (1, 1), ((3, 3), (2, 2), 0)),
                (256, 512, (5, 4), (1, 1), (0, 0), None),
            ],
            nn.Conv2d,
            nn.BatchNorm2d,
            nn.MaxPool2d,
        )
        self.netfcaud = _head(512, embed_dim)
        self.netcnnlip = _conv_stack(
            [
                (3, 96, (5, 7, 7), (1, 2, 2), 0, ((1, 3, 3), (1, 2, 2), 0)),
                (96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1), ((1, 3, 3), (1, 2, 2), (0, 1, 1))),
                (256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1), None),
                (256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1), None),
                (256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1), ((1, 3, 3), (1, 2, 2), 0)),
                (256, 512, (1, 6, 6), (1, 1, 1), 0, None),
            ],
            nn.Conv3d,
            nn.BatchNorm3d,
            nn.MaxPool3d,
        )
        self.netfclip = _head(512, embed_dim)

    def forward_audio(self, mfcc_windows: Tensor) -> Tensor:
        """``[b, 1, 13, 20]`` -> ``[b, e]``."""
        if mfcc_windows.dim() != 4 or tuple(mfcc_windows.shape[1:]) != (1, 13, 20):
            raise InputError(
                f"SyncNet audio: expected [b, 1, 13, 20] MFCC windows, got {tuple(mfcc_windows.shape)}"
            )
        return self.netfcaud(self.netcnnaud(mfcc_windows).flatten(1))

    def forward_lip(self, frames: Tensor) -> Tensor:
        """``[b, 3, 5, 224, 224]`` -> ``[b, e]``."""
        if frames.dim() != 5 or tuple(frames.shape[1:]) != (3, 5, CROP_SIZE, CROP_SIZE):
            raise InputError(
                f"SyncNet lips: expected [b, 3, 5, 224, 224] frame windows, got {tuple(frames.shape)}"
            )
        return self.netfclip(self.netcnnlip(frames).flatten(1))

    def forward(self, mfcc_windows: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward_audio(mfcc_windows), self.forward_lip(frames)


def load_syncnet(path: str | Path, device: str | torch.device = "cpu") -> SyncNet:
    """Load a ``syncnet_v2.model`` state dict strictly (see module docstring) and return the net in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"--syncnet: checkpoint {path} does not exist (expected the public syncnet_v2.model)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise InputError(f"--syncnet: cannot read {path} as a torch state dict: {err}") from err
    if isinstance(state, nn.Module):
        state = state.state_dict()
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"--syncnet: {path} is not a state dict of tensors (netcnnaud.*, netfcaud.*, ...)")
    embed_key = "netfcaud.3.weight"
    if embed_key not in state:
        raise InputError(f"--syncnet: {path} has no {embed_key!r}: not a syncnet_v2 checkpoint")
    net = SyncNet(embed_dim=int(state[embed_key].shape[0]))
    expected = net.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise InputError(
            f"--syncnet: {path} does not match the syncnet_v2 layout; missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    bad = [
        f"{k}: {tuple(v.shape)} != {tuple(expected[k].shape)}"
        for k, v in state.items()
        if v.shape != expected[k].shape
    ]
    if bad:
        raise InputError(f"--syncnet: {path} has tensors of the wrong shape: {bad[:6]}")
    full = dict(expected)
    full.update(state)
    net.load_state_dict(full, strict=True)
    return net.to(device).eval()


# ------------------------------------------------------------------------------------------------- audio / MFCC
def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def _triangular_filters(num_filters: int, n_fft: int, sample_rate: int) -> np.ndarray:
    """``[num_filters, n_fft // 2 + 1]`` triangles on FFT-bin edges ``floor((n_fft + 1) * f / sr)``, equally
    spaced in mel from 0 Hz to Nyquist."""
    mels = np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(sample_rate / 2)), num_filters + 2)
    edges = np.floor((n_fft + 1) * _mel_to_hz(mels) / sample_rate).astype(np.int64)
    bins = np.arange(n_fft // 2 + 1)[None, :]
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins >= lo) & (bins < mid)
    falling = (bins >= mid) & (bins < hi)
    up = (bins - lo) / np.maximum(mid - lo, 1)
    down = (hi - bins) / np.maximum(hi - mid, 1)
    return np.where(rising, up, 0.0) + np.where(falling, down, 0.0)


def mfcc(
    wave: np.ndarray,
    sample_rate: int = SYNCNET_SR,
    frame_s: float = 0.025,
    step_s: float = 0.01,
    num_ceps: int = 13,
    num_filters: int = 26,
    n_fft: int = 512,
    preemph: float = 0.97,
    lifter: int = 22,
) -> np.ndarray:
    """MFCCs ``[q, num_ceps]`` of a mono signal ``[s]`` (int16 units), rectangular frames, c0 = log energy."""
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise InputError("audio: empty signal")
    x = np.concatenate([x[:1], x[1:] - preemph * x[:-1]])
    frame_len, step = int(round(frame_s * sample_rate)), int(round(step_s * sample_rate))
    count = 1 if x.size <= frame_len else 1 + math.ceil((x.size - frame_len) / step)
    x = np.pad(x, (0, (count - 1) * step + frame_len - x.size))
    idx = np.arange(frame_len)[None, :] + step * np.arange(count)[:, None]
    power = np.abs(np.fft.rfft(x[idx], n_fft)) ** 2 / n_fft  # [q, f]
    tiny = np.finfo(np.float64).eps
    energy = power.sum(1)
    energy[energy == 0] = tiny
    banks = power @ _triangular_filters(num_filters, n_fft, sample_rate).T
    banks[banks == 0] = tiny
    logb = np.log(banks)
    k = np.arange(num_filters)
    basis = np.cos(np.pi * (2 * k[None, :] + 1) * np.arange(num_ceps)[:, None] / (2 * num_filters))  # DCT-II
    scale = np.full(num_ceps, math.sqrt(2.0 / num_filters))
    scale[0] = math.sqrt(1.0 / num_filters)
    ceps = (logb @ basis.T) * scale[None, :]
    if lifter > 0:
        ceps *= 1.0 + (lifter / 2.0) * np.sin(np.pi * np.arange(num_ceps) / lifter)
    ceps[:, 0] = np.log(energy)
    return ceps


def read_audio_16k(path: str | Path) -> np.ndarray:
    """Mono audio of a wav/flac file resampled to 16 kHz, in int16 units (what the public pipeline reads)."""
    import soundfile as sf
    import torchaudio.functional as AF

    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio: file {path} does not exist")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # noqa: BLE001
        raise InputError(f"audio: cannot read {path}: {err}") from err
    wave = torch.from_numpy(data.mean(1))
    if sr != SYNCNET_SR:
        wave = AF.resample(wave, sr, SYNCNET_SR)
    return (wave.numpy().astype(np.float64) * 32768.0).clip(-32768, 32767)


def read_video(path: str | Path, crop: tuple[int, int, int, int] | None = None) -> Tensor:
    """Frames of a 25 fps video as ``[t, 3, 224, 224]`` float BGR 0..255, optionally cropped to the face box
    ``(x0, y0, x1, y1)`` (pixels) before resizing. Renders of ``jam-flow render`` are already face crops."""
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"video: file {path} does not exist")
    frames: list[Tensor] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"video: {path} has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate
            if rate is not None and abs(float(rate) - SYNCNET_FPS) > 0.01:
                raise InputError(
                    f"video: {path} runs at {float(rate):.3f} fps; SyncNet expects {SYNCNET_FPS} fps"
                )
            for frame in container.decode(stream):
                img = torch.from_numpy(frame.to_ndarray(format="bgr24"))  # [h, w, 3]
                if crop is not None:
                    x0, y0, x1, y1 = crop
                    if not (0 <= x0 < x1 <= img.shape[1] and 0 <= y0 < y1 <= img.shape[0]):
                        raise InputError(
                            f"--lse-crop: box {crop} lies outside the {img.shape[1]}x{img.shape[0]} "
                            f"frames of {path}"
                        )
                    img = img[y0:y1, x0:x1]
                img = img.permute(2, 0, 1)[None].float()
                img = F.interpolate(
                    img, size=(CROP_SIZE, CROP_SIZE), mode="bilinear", align_corners=False, antialias=True
                )
                frames.append(img[0].clamp(0, 255))
    except av.error.FFmpegError as err:
        raise InputError(f"video: cannot decode {path}: {err}") from err
    if not frames:
        raise InputError(f"video: {path} has no frames")
    return torch.stack(frames)


# ------------------------------------------------------------------------------------------------------ scores
@dataclass
class SyncScores:
    """LSE-D (``dist``: minimum mean distance), LSE-C (``conf``: median - minimum), the AV offset in frames as the
    public code reports it (``vshift - argmin``; positive: the video lags behind the audio) and the number of
    5-frame windows scored."""

    dist: float
    conf: float
    offset: int
    windows: int


@torch.no_grad()
def sync_scores(
    net: SyncNet,
    frames: Tensor,
    mfcc_feats: np.ndarray | Tensor,
    vshift: int = 15,
    batch_size: int = 20,
    audio_samples: int | None = None,
) -> SyncScores:
    """Score one video: ``frames [t, 3, 224, 224]`` (BGR 0..255) against ``mfcc_feats [q, 13]``.

    The number of scored frames is ``min(t, audio_samples // 640) - 5`` as in the public evaluation (640 samples
    of 16 kHz audio per 25 fps frame); without ``audio_samples`` it is bounded by the MFCCs available instead.
    """
    feats = torch.as_tensor(np.asarray(mfcc_feats), dtype=torch.float32)
    if feats.dim() != 2 or feats.shape[1] != 13:
        raise InputError(f"SyncNet: expected MFCCs [frames, 13], got {tuple(feats.shape)}")
    audio_frames = (
        audio_samples // (SYNCNET_SR // SYNCNET_FPS) if audio_samples is not None else feats.shape[0] // 4
    )
    length = min(frames.shape[0], audio_frames)
    last = min(length - 5, (feats.shape[0] - 20) // 4 + 1)  # every window needs 20 MFCC frames
    if last < 1:
        raise InputError(f"SyncNet: need at least 6 frames (0.24 s) of video and audio, got {length}")
    device = next(net.parameters()).device
    cc = feats.t()[None, None]  # [1, 1, 13, q]
    lip_emb, aud_emb = [], []
    for start in range(0, last, batch_size):
        ks = range(start, min(last, start + batch_size))
        lips = torch.stack([frames[k : k + 5].permute(1, 0, 2, 3) for k in ks]).to(
            device
        )  # [b, 3, 5, 224, 224]
        auds = torch.cat([cc[..., 4 * k : 4 * k + 20] for k in ks]).to(device)  # [b, 1, 13, 20]
        lip_emb.append(net.forward_lip(lips).cpu())
        aud_emb.append(net.forward_audio(auds).cpu())
    lip, aud = torch.cat(lip_emb), torch.cat(aud_emb)  # [w, e]
    aud_pad = F.pad(aud, (0, 0, vshift, vshift))
    span = 2 * vshift + 1
    dists = torch.stack(
        [
            F.pairwise_distance(lip[i : i + 1].expand(span, -1), aud_pad[i : i + span])
            for i in range(lip.shape[0])
        ]
    )  # [w, v]
    mean_dist = dists.mean(0)
    min_val, min_idx = mean_dist.min(0)
    return SyncScores(
        dist=float(min_val),
        conf=float(mean_dist.median() - min_val),
        offset=int(vshift - int(min_idx)),
        windows=int(lip.shape[0]),
    )


def lse_from_files(
    net: SyncNet,
    video: str | Path,
    audio: str | Path,
    crop: tuple[int, int, int, int] | None = None,
    vshift: int = 15,
) -> SyncScores:
    """LSE of an mp4 (25 fps, face crop or with ``crop``) paired with a wav (any rate; resampled to 16 kHz)."""
    wave = read_audio_16k(audio)
    return sync_scores(net, read_video(video, crop), mfcc(wave), vshift=vshift, audio_samples=wave.size)


def parse_crop(text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    try:
        box = tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise InputError(f"--lse-crop: expected x0,y0,x1,y1 in pixels, got {text!r}") from err
    if len(box) != 4:
        raise InputError(f"--lse-crop: expected 4 integers x0,y0,x1,y1, got {text!r}")
    return box  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    """``python -m jam_flow.eval.syncnet --syncnet syncnet_v2.model --video a.mp4 --audio a.wav``"""
    parser = argparse.ArgumentParser(
        prog="python -m jam_flow.eval.syncnet", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--syncnet", required=True, help="path to syncnet_v2.model")
    parser.add_argument("--video", required=True, help="25 fps mp4 of a face crop")
    parser.add_argument("--audio", required=True, help="wav/flac paired with the video")
    parser.add_argument(
        "--lse-crop", default=None, help="face box x0,y0,x1,y1 in pixels (default: whole frame)"
    )
    parser.add_argument("--vshift", type=int, default=15, help="offsets searched: [-vshift, vshift] frames")
    args = parser.parse_args(argv)
    net = load_syncnet(args.syncnet)
    scores = lse_from_files(net, args.video, args.audio, parse_crop(args.lse_crop), args.vshift)
    print(json.dumps({"lse_d": scores.dist, "lse_c": scores.conf, **asdict(scores)}, indent=2))
    return 0


if __name__ == "__main__":
    import sys

    try:
        raise SystemExit(main())
    except InputError as _err:  # the CLI convention: one line, exit 2, no traceback
        print(f"error: {_err}", file=sys.stderr)
        raise SystemExit(2) from None
