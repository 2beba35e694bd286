"""Stage-1 audio features for the Motion-DiT: wav2vec2 / HuBERT hidden states on the 25 fps motion grid (paper
appendix A: "we follow the talking-head practice of concatenating wav2vec2 features to motion inputs").

Dimension legend: s audio samples, t feature frames (50 / s at 16 kHz), d feature width (768 for a base model),
m motion frames (25 / s). No masks here (one clip at a time).

Computed **once, at preprocessing** (``jam-flow audio-features``), from each clip's ``clips/<id>.wav`` and stored
beside the clips::

    DIR/audio_features/<name>/<id>.npy   float32 [m, d], m = the clip's motion frames (audio_to_motion_frame grid)
    DIR/audio_features/<name>/info.json  {"kind": "wav2vec2", "model": <directory name>, "layer": L, "dim": d, "fps": 25}

``<name>`` defaults to ``wav2vec2``; training reads it with ``--data.audio_features wav2vec2`` (and
``--data.audio_features_name``). The model is a local Hugging Face directory in the ``save_pretrained`` layout
(``config.json`` + weights) of a ``transformers`` ``Wav2Vec2Model`` or ``HubertModel``; nothing is downloaded.
``layer`` picks ``hidden_states[layer]`` (0 = the projected CNN features, ``num_hidden_layers`` = the last layer).
The wave is resampled to the model's rate (``preprocessor_config.json`` ``sampling_rate``, else 16 kHz),
normalised to zero mean / unit variance (``Wav2Vec2FeatureExtractor``'s ``do_normalize``), and the hidden states
(one per 20 ms, centred at ``20 i + 12.5`` ms) are linearly interpolated to the motion frame times ``j / fps``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jam_flow.errors import InputError

__all__ = [
    "AudioFeatureExtractor",
    "write_audio_features",
    "features_dir",
    "fit_feature_length",
    "resolve_layer",
]

log = logging.getLogger(__name__)

MODEL_TYPES = {"wav2vec2": "Wav2Vec2Model", "hubert": "HubertModel"}


def features_dir(data_dir: str | Path, name: str = "wav2vec2") -> Path:
    return Path(data_dir) / "audio_features" / name


def resolve_layer(model_dir: str | Path, layer: int) -> int:
    """``layer`` counted from the end when negative (-1 = the last hidden state, as ``jam-flow audio-features``)."""
    if layer >= 0:
        return layer
    try:
        depth = int(json.loads((Path(model_dir) / "config.json").read_text())["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        depth = -layer - 1  # unreadable: the extractor reports the directory problem
    return depth + 1 + layer


def fit_feature_length(feats: np.ndarray, m: int) -> np.ndarray:
    """Crop or edge-pad ``feats [m', d]`` to ``m`` frames (as the dataset fits the motion to its mel)."""
    if feats.shape[0] >= m:
        return feats[:m]
    if feats.shape[0] == 0:
        return np.zeros((m, feats.shape[1]), dtype=np.float32)
    return np.concatenate([feats, np.repeat(feats[-1:], m - feats.shape[0], axis=0)], axis=0)


class AudioFeatureExtractor:
    """A local wav2vec2 / HuBERT directory; ``__call__(wave, sample_rate, m)`` gives ``[m, d]`` float32."""

    def __init__(self, model_dir: str | Path, layer: int, device: str = "cpu") -> None:
        path = Path(model_dir)
        if not path.is_dir():
            raise InputError(
                f"--model: {path} is not a directory (expected a save_pretrained wav2vec2/HuBERT)"
            )
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise InputError(
                f"--model: {path} has no config.json (expected a save_pretrained wav2vec2/HuBERT)"
            )
        try:
            cfg: dict[str, Any] = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"--model: {cfg_path} is not readable JSON ({err})") from err
        kind = cfg.get("model_type")
        if kind not in MODEL_TYPES:
            raise InputError(
                f"--model: {path} holds a {kind!r} model; expected one of {sorted(MODEL_TYPES)} (wav2vec2 / HuBERT)"
            )
        try:
            import transformers
        except ImportError as err:
            raise InputError(
                "--model: wav2vec2 features need the 'transformers' package (pip install 'jam-flow[wav2vec2]')"
            ) from err
        cls = getattr(transformers, MODEL_TYPES[kind])
        try:
            self.model = cls.from_pretrained(str(path), local_files_only=True).to(device).eval()
        except (OSError, ValueError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(f"--model: cannot load {MODEL_TYPES[kind]} from {path} ({first})") from err
        depth = int(self.model.config.num_hidden_layers)
        if not 0 <= layer <= depth:
            raise InputError(f"--layer: {path} has hidden states 0..{depth}, got {layer}")
        self.layer, self.kind, self.device = layer, kind, device
        self.dim = int(self.model.config.hidden_size)
        self.name = path.name
        pre = path / "preprocessor_config.json"
        self.sample_rate = 16000
        if pre.is_file():
            self.sample_rate = int(json.loads(pre.read_text(encoding="utf-8")).get("sampling_rate", 16000))
        # the CNN front end's total stride (320 samples = 20 ms at 16 kHz) and receptive field (400 = 25 ms)
        self.stride = int(np.prod(self.model.config.conv_stride))

    @torch.no_grad()
    def __call__(self, wave: np.ndarray, sample_rate: int, m: int, fps: int = 25) -> np.ndarray:
        """``wave [s]`` at ``sample_rate`` -> ``[m, d]``: ``hidden_states[layer]`` at the motion frame times."""
        import torchaudio.functional as AF

        x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
        if sample_rate != self.sample_rate:
            x = AF.resample(x, sample_rate, self.sample_rate)
        x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
        out = self.model(x[None].to(self.device), output_hidden_states=True)
        h = out.hidden_states[self.layer][0].float().cpu()  # [t, d]
        if h.shape[0] == 0:
            return np.zeros((m, self.dim), dtype=np.float32)
        hop_s = self.stride / self.sample_rate
        # feature i is centred at i * hop + half the first conv's window (12.5 ms for a 25 ms receptive field)
        centre = 0.5 * float(self.model.config.conv_kernel[0]) / self.sample_rate
        pos = ((torch.arange(m, dtype=torch.float64) / fps - centre) / hop_s).clamp(0, h.shape[0] - 1)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=h.shape[0] - 1)
        w = (pos - lo).float()[:, None]
        return ((1 - w) * h[lo] + w * h[hi]).numpy().astype(np.float32)


def write_audio_features(
    data_dir: str | Path,
    model_dir: str | Path,
    layer: int,
    name: str = "wav2vec2",
    device: str = "cpu",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Compute the features of every manifest clip that has an audio file (``clips/<id>.wav``); returns counts. A clip without a
    wave, or whose wave cannot be read, is skipped, counted and logged (training then skips it too)."""
    from jam_flow.data.audio import load_audio
    from jam_flow.data.format import read_dataset_json, read_manifest
    from jam_flow.features import audio_to_motion_frame

    data = Path(data_dir)
    info = read_dataset_json(data)
    extractor = AudioFeatureExtractor(model_dir, layer, device)
    out_dir = features_dir(data, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = skipped = reused = 0
    for rec in read_manifest(data):
        target = out_dir / f"{rec.id}.npy"
        if target.is_file() and not overwrite:
            reused += 1
            continue
        try:
            if rec.audio is None:
                raise InputError("the manifest lists no audio file")
            wave = load_audio(data / rec.audio, info.mel.sample_rate)
        except (InputError, OSError, RuntimeError) as err:
            log.warning("clip %r: no usable wave for audio features (%s)", rec.id, err)
            skipped += 1
            continue
        mel, mot = info.mel, info.motion
        m = int(audio_to_motion_frame(max(rec.n_mel - 1, 0), mel.sample_rate, mel.hop_length, mot.fps)) + 1
        feats = extractor(wave, info.mel.sample_rate, m, info.motion.fps)
        if not np.isfinite(feats).all():
            log.warning("clip %r: non-finite audio features, skipped", rec.id)
            skipped += 1
            continue
        np.save(target, feats)
        written += 1
    meta = {
        "kind": extractor.kind,
        "model": extractor.name,
        "layer": layer,
        "dim": extractor.dim,
        "fps": info.motion.fps,
        "sample_rate": extractor.sample_rate,
    }
    (out_dir / "info.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return {**meta, "written": written, "reused": reused, "skipped": skipped, "dir": str(out_dir)}


def main(argv: list[str]) -> int:
    """``jam-flow audio-features --data-dir DIR --model W2V_DIR [--layer L] [--name wav2vec2] [--device cpu]``."""
    import argparse

    p = argparse.ArgumentParser(
        prog="jam-flow audio-features",
        description="Write stage-1 wav2vec2/HuBERT features (25 fps) beside a dataset's clips.",
    )
    p.add_argument("--data-dir", required=True, help="jam-flow dataset (clips with .wav audio)")
    p.add_argument(
        "--model", required=True, help="local save_pretrained Wav2Vec2Model / HubertModel directory"
    )
    p.add_argument("--layer", type=int, default=-1, help="hidden state index (default: the last layer)")
    p.add_argument("--name", default="wav2vec2", help="subdirectory of DIR/audio_features (default wav2vec2)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="recompute features that exist")
    args = p.parse_args(argv)
    layer = resolve_layer(args.model, args.layer)
    summary = write_audio_features(args.data_dir, args.model, layer, args.name, args.device, args.overwrite)
    print(json.dumps(summary))
    return 0
