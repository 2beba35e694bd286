"""Shared parts of the paper's evaluation protocols: settings, metric selection, judge loading, the per-clip
generation cache, streamed video frames and the (Lightning Fabric) process layout.

Dimension legend: t video frames (25 fps), h, w frame size, s audio samples. Frames are uint8 RGB; masks: none.

Judges (all local paths; a selected metric whose judge is missing is one ``InputError`` naming its flag):
``--inception`` (FID), ``--i3d`` (FVD), ``--syncnet`` (LSE-C / LSE-D), ``--asr`` (WER), ``--speaker-model``
(SIM-o / spkSIM), ``--liveportrait`` (rendering, needed by every video metric of talking-head and ablation).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jam_flow.errors import InputError

__all__ = [
    "PROTOCOL_METRICS",
    "JUDGE_FLAGS",
    "ProtocolSettings",
    "select_metrics",
    "ClipCache",
    "Ranks",
    "iter_video_frames",
    "FrameFeeder",
    "clip_key",
]

log = logging.getLogger(__name__)

# protocol -> its metrics in the paper's column order (Tables 1-4)
PROTOCOL_METRICS: dict[str, tuple[str, ...]] = {
    "talking-head": ("fid", "fvd", "lse_c", "lse_d"),
    "tts": ("wer", "sim_o"),
    "dubbing": ("lse_c", "lse_d", "wer", "spk_sim"),
    "ablation": ("fid", "lse_c", "lse_d", "wer", "sim_o"),
}

# metric -> (settings field, flag, what the file is)
JUDGE_FLAGS: dict[str, tuple[str, str, str]] = {
    "fid": ("inception", "--inception", "torch-fidelity's weights-inception-2015-12-05-6726825d.pth"),
    "fvd": ("i3d", "--i3d", "StyleGAN-V's i3d_torchscript.pt"),
    "lse_c": ("syncnet", "--syncnet", "syncnet_v2.model"),
    "lse_d": ("syncnet", "--syncnet", "syncnet_v2.model"),
    "wer": ("asr", "--asr", "a local transformers Whisper (or CTC) directory"),
    "sim_o": (
        "speaker_model",
        "--speaker-model",
        "a speaker-verification model (TorchScript or x-vector dir)",
    ),
    "spk_sim": (
        "speaker_model",
        "--speaker-model",
        "a speaker-verification model (TorchScript or x-vector dir)",
    ),
}


@dataclass
class ProtocolSettings:
    """Everything ``jam-flow evaluate --protocol`` takes (see ``eval.protocols.cli`` for the flags)."""

    protocol: str
    ckpt: list[str]
    out: str
    labels: list[str] | None = None
    metrics: list[str] | None = None
    compare_paper: bool = False
    # data
    videos: str | None = None
    list_file: str | None = None
    audio_root: str | None = None
    data_dir: str | None = None
    split: str = "test"
    max_clips: int | None = None
    chunk_seconds: float = 20.0
    min_chunk_seconds: float = 2.0
    dub_reference: str = "same-speaker"
    mode: str | None = None  # talking-head: i2v | v2v | both (None: both; the ablation table: i2v)
    clue: str = "e_rest"  # talking-head: the e_rest clue of §5.2, or "none" (mouth only)
    audio_features_model: str | None = None  # talking-head, a stage-1 Motion-DiT: local wav2vec2 / HuBERT dir
    audio_features_layer: int = -1  # its hidden state (-1: the last, as jam-flow audio-features)
    # sampling
    nfe: int = 32
    cfg: float = 2.0
    seed: int = 0
    batch_size: int = 8
    # judges
    inception: str | None = None
    fid_feature: int = 2048
    frame_stride: int = 1
    i3d: str | None = None
    syncnet: str | None = None
    lse_crop: str | None = None
    asr: str | None = None
    speaker_model: str | None = None
    speaker_sr: int = 16000
    vocoder: str | None = None
    liveportrait: str | None = None
    render_crop_size: int = 256
    judge_batch: int = 16
    # processes
    devices: int = 1
    accelerator: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def select_metrics(settings: ProtocolSettings) -> tuple[str, ...]:
    """The protocol's metrics (or the ``--metrics`` subset, in the paper's order); every judge they need must be
    given, else one ``InputError`` listing each missing flag."""
    available = PROTOCOL_METRICS[settings.protocol]
    if settings.metrics:
        unknown = [m for m in settings.metrics if m not in available]
        if unknown:
            raise InputError(
                f"--metrics: {', '.join(unknown)} not part of protocol {settings.protocol} "
                f"(choose from {', '.join(available)})"
            )
        chosen = tuple(m for m in available if m in settings.metrics)
    else:
        chosen = available
    missing: dict[str, str] = {}
    for metric in chosen:
        attr, flag, what = JUDGE_FLAGS[metric]
        if getattr(settings, attr) is None:
            missing.setdefault(flag, f"{flag} PATH ({what}) for {metric}")
    if missing:
        raise InputError(
            "missing judge weights: "
            + "; ".join(missing.values())
            + " (or leave the metric out with --metrics)"
        )
    return chosen


def clip_key(settings: ProtocolSettings, ckpt: str, clip: dict[str, Any]) -> str:
    """What a cached clip was generated from: the checkpoint, the sampling settings and the clip's inputs."""
    spec = {
        "protocol": settings.protocol,
        "ckpt": str(Path(ckpt).resolve()),
        "nfe": settings.nfe,
        "cfg": settings.cfg,
        "seed": settings.seed,
        "clip": clip,
    }
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ClipCache:
    """``ROOT/<clip id>/``: the generated files of one clip plus ``done.json`` (written last, atomically), so a
    restarted run reuses every finished clip and redoes the rest. A clip generated from other inputs (another
    checkpoint, seed, NFE, CFG or source) is redone."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def dir(self, clip_id: str) -> Path:
        return self.root / clip_id

    def done(self, clip_id: str, key: str) -> bool:
        marker = self.dir(clip_id) / "done.json"
        if not marker.is_file():
            return False
        try:
            return json.loads(marker.read_text(encoding="utf-8")).get("key") == key
        except (OSError, json.JSONDecodeError):
            return False

    def start(self, clip_id: str) -> Path:
        """A clean directory for a clip about to be (re)generated."""
        d = self.dir(clip_id)
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def finish(self, clip_id: str, key: str, info: dict[str, Any] | None = None) -> None:
        d = self.dir(clip_id)
        tmp = d / "done.json.tmp"
        tmp.write_text(json.dumps({"key": key, **(info or {})}, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, d / "done.json")


class Ranks:
    """The process layout: one process per device through Lightning Fabric (``--devices N``, DDP); each rank
    works on clips ``rank, rank + world, ...`` and torchmetrics reduces the metric states across ranks."""

    def __init__(self, accelerator: str = "auto", devices: int = 1) -> None:
        from lightning.fabric import Fabric

        if devices < 1:
            raise InputError(f"--devices: expected a positive number of devices, got {devices}")
        strategy = "ddp" if devices > 1 else "auto"
        try:
            self.fabric = Fabric(accelerator=accelerator, devices=devices, strategy=strategy)
        except (ValueError, RuntimeError) as err:  # e.g. more devices than the machine has
            raise InputError(f"--devices/--accelerator: {err}") from err
        self.fabric.launch()
        self.rank = self.fabric.global_rank
        self.world = self.fabric.world_size
        self.device = self.fabric.device

    def shard(self, items: list[Any]) -> list[Any]:
        return items[self.rank :: self.world]

    def total(self, value: int) -> int:
        """Sum of an integer over all ranks."""
        if self.world == 1:
            return int(value)
        t = torch.tensor(float(value), device=self.device)
        return int(self.fabric.all_reduce(t, reduce_op="sum").item())

    def barrier(self) -> None:
        if self.world > 1:
            self.fabric.barrier()

    def run(self, items: list[Any], generate, score) -> dict[str, Any]:
        """Generate this rank's share (``generate(mine) -> (generated, reused)``), wait for every rank, score it
        (``score(mine) -> metrics``, reduced across ranks by torchmetrics); returns metrics and clip counts."""
        mine = self.shard(items)
        generated, reused = generate(mine)
        self.barrier()
        values = score(mine)
        return {
            "metrics": values,
            "clips": len(items),
            "generated": self.total(generated),
            "reused": self.total(reused),
        }


def iter_video_frames(path: str | Path, fps: float = 25.0) -> Iterator[np.ndarray]:
    """Stream a video's frames resampled to ``fps`` (slot ``j`` shows the latest frame starting at or before
    ``j / fps``, as ``render.io.read_video_frames`` and preprocessing do), RGB uint8 ``[h, w, 3]``."""
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"video: {path} does not exist")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise InputError(f"video: cannot open {path} ({err})") from err
    eps = 1e-6
    with container:
        if not container.streams.video:
            raise InputError(f"video: {path} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        native = float(rate) if rate else fps
        base, prev, t_prev, slot = None, None, 0.0, 0
        try:
            for index, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else index / native
                base = t if base is None else base
                t -= base
                while prev is not None and slot / fps < t - eps:
                    yield prev
                    slot += 1
                prev, t_prev = frame.to_ndarray(format="rgb24"), t
        except (av.error.FFmpegError, ValueError) as err:
            raise InputError(f"video: {path} is corrupt ({err})") from err
        while prev is not None and slot / fps < t_prev + 1.0 / native - eps:
            yield prev
            slot += 1


class FrameFeeder:
    """Feeds a stream of frames of one side (real or generated) into FID (every ``stride``-th frame) and FVD
    (non-overlapping windows of ``window`` consecutive frames), ``batch`` items per network call."""

    def __init__(self, fid, fvd, real: bool, stride: int, batch: int, window: int, device) -> None:
        self.fid, self.fvd, self.real = fid, fvd, real
        self.stride, self.batch, self.window, self.device = stride, batch, window, device
        self.images: list[np.ndarray] = []
        self.run: list[np.ndarray] = []
        self.clips: list[np.ndarray] = []
        self.count = 0

    def push(self, frame: np.ndarray) -> None:
        if self.fid is not None and self.count % self.stride == 0:
            self.images.append(frame)
            if len(self.images) >= self.batch:
                self._flush_fid()
        if self.fvd is not None:
            self.run.append(frame)
            if len(self.run) == self.window:
                self.clips.append(np.stack(self.run))
                self.run = []
                if len(self.clips) >= max(1, self.batch // self.window):
                    self._flush_fvd()
        self.count += 1

    def end_clip(self) -> None:
        """A clip ended: its trailing partial FVD window is dropped (windows never span two clips)."""
        self.run = []

    def close(self) -> None:
        self.end_clip()
        self._flush_fid()
        self._flush_fvd()

    def _flush_fid(self) -> None:
        if self.images:
            x = torch.from_numpy(np.stack(self.images)).permute(0, 3, 1, 2).to(self.device)
            self.fid.update(x, real=self.real)
            self.images = []

    def _flush_fvd(self) -> None:
        if self.clips:
            x = torch.from_numpy(np.stack(self.clips)).permute(0, 1, 4, 2, 3).to(self.device)
            self.fvd.update(x, real=self.real)
            self.clips = []
