"""Clip dataset and batch padding over the clip format (docs/CONVENTIONS.md "Dataset format").

Dimension legend: b batch, n mel frames, c mel channels (100), m motion frames (25 fps), k keypoints (21),
nt text tokens. Masks are **True = valid**.

A batch (``collate_clips``) is a dict:

* ``mel [b, n, c]`` natural-log mel, zero padded; ``audio_mask [b, n]``;
* ``exp [b, m, k, 3]`` raw LivePortrait expression (normalised later with the dataset stats), edge padded;
  ``motion_mask [b, m]``. Each clip's motion is cropped / padded (repeating its last frame) to exactly
  ``audio_to_motion_frame(n - 1) + 1`` frames, so mel frame ``i`` and motion frame ``audio_to_motion_frame(i)``
  are the same instant;
* ``text [b, nt]`` int64 vocabulary ids, padded with -1;
* ``audio_feats [b, m, d]`` (only with ``audio_features``): precomputed stage-1 audio features on the motion grid
  (:mod:`jam_flow.data.audio_features`), fitted to the clip's motion frames like ``exp``, zero padded;
* ``ids``, ``skipped`` (clips of this batch that could not be loaded), ``skipped_ids``, ``skipped_errors`` and,
  for training batches, ``position`` = ``(data epoch, batch position)`` (see :mod:`jam_flow.data.batching`).

A clip that cannot be used (missing/corrupt file, wrong shapes, text outside the vocabulary) is dropped from its
batch and counted, never fatal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from jam_flow.data.audio_features import fit_feature_length
from jam_flow.data.format import ClipError, ClipRecord, load_clip
from jam_flow.data.text import Vocab
from jam_flow.errors import InputError
from jam_flow.features import MelSettings, MotionSettings, audio_to_motion_frame

__all__ = ["TRAIN_ARRAYS", "ClipDataset", "collate_clips", "fit_motion_length"]

# the arrays of a clip that training reads (the poses, scale, translation and canonical keypoints are not read)
TRAIN_ARRAYS = ("mel", "exp")


def fit_motion_length(exp: np.ndarray, n_mel: int, mel: MelSettings, motion: MotionSettings) -> np.ndarray:
    """Crop or edge-pad ``exp [m, k, 3]`` to ``audio_to_motion_frame(n_mel - 1) + 1`` frames."""
    want = audio_to_motion_frame(n_mel - 1, mel.sample_rate, mel.hop_length, motion.fps) + 1
    m = exp.shape[0]
    if m >= want:
        return exp[:want]
    return np.concatenate([exp, np.repeat(exp[-1:], want - m, axis=0)], axis=0)


class ClipDataset(Dataset):
    """One item per manifest record; ``__getitem__`` returns ``None`` for a clip that cannot be used."""

    def __init__(
        self,
        root: str | Path,
        records: list[ClipRecord],
        vocab: Vocab,
        mel: MelSettings,
        motion: MotionSettings,
        audio_features: str | None = None,
    ) -> None:
        """``audio_features``: the ``DIR/audio_features/<name>`` subdirectory to read per clip (None: none)."""
        self.audio_features = audio_features
        self.root = Path(root)
        self.records = records
        self.vocab = vocab
        self.mel = mel
        self.motion = motion

    def __len__(self) -> int:
        return len(self.records)

    def read_arrays(self, rec: ClipRecord) -> dict[str, np.ndarray]:
        """The clip's :data:`TRAIN_ARRAYS` (checked); raises ``ClipError`` when they cannot be used."""
        return load_clip(self.root, rec, keys=TRAIN_ARRAYS)

    def load(self, index: int) -> dict[str, Any]:
        """The clip's tensors; raises ``ClipError`` (or ``InputError`` for bad text) when it cannot be used."""
        rec = self.records[index]
        arrays = self.read_arrays(rec)
        ids = self.vocab.encode(rec.text, where=f"clip {rec.id!r} text")
        exp = fit_motion_length(arrays["exp"], arrays["mel"].shape[0], self.mel, self.motion)
        item = {
            "id": rec.id,
            "mel": torch.from_numpy(np.ascontiguousarray(arrays["mel"])),
            "exp": torch.from_numpy(np.ascontiguousarray(exp)),
            "text": torch.tensor(ids, dtype=torch.long),
            "transcript": rec.text,  # the plain text (``text`` holds its tokens: characters or phonemes)
        }
        if self.audio_features is not None:
            path = self.root / "audio_features" / self.audio_features / f"{rec.id}.npy"
            try:
                feats = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:
                raise ClipError(f"clip {rec.id!r}: audio features {path} unreadable ({err})") from err
            if feats.ndim != 2 or not np.isfinite(feats).all():
                raise ClipError(f"clip {rec.id!r}: audio features {path} must be a finite [m, d] array")
            feats = fit_feature_length(feats.astype(np.float32), exp.shape[0])
            item["audio_feats"] = torch.from_numpy(np.ascontiguousarray(feats))
        return item

    def __getitem__(self, key: int | tuple[int, int, int]) -> dict[str, Any]:
        """``key`` is an index, or ``(index, data_epoch, batch_position)`` from a position-tagging sampler."""
        index, position = (key[0], tuple(key[1:])) if isinstance(key, tuple) else (key, None)
        try:
            item = self.load(index)
        except (ClipError, InputError) as err:
            item = {"id": self.records[index].id, "error": str(err)}
        if position is not None:
            item["position"] = position
        return item


def collate_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad a list of dataset items into a batch (see the module docstring); failed items are counted."""
    bad = [it for it in items if "error" in it]
    good = [it for it in items if "error" not in it]
    batch: dict[str, Any] = {
        "skipped": len(bad),
        "skipped_ids": [it["id"] for it in bad],
        "skipped_errors": [it["error"] for it in bad],
        "ids": [it["id"] for it in good],
    }
    if items and "position" in items[0]:
        batch["position"] = items[0]["position"]  # (data epoch, batch position): exact resume bookkeeping
    if not good:
        return batch
    b = len(good)
    n = max(it["mel"].shape[0] for it in good)
    m = max(it["exp"].shape[0] for it in good)
    nt = max(max(it["text"].shape[0] for it in good), 1)
    c = good[0]["mel"].shape[1]
    k = good[0]["exp"].shape[1]
    mel = torch.zeros(b, n, c)
    exp = torch.zeros(b, m, k, 3)
    text = torch.full((b, nt), -1, dtype=torch.long)
    audio_mask = torch.zeros(b, n, dtype=torch.bool)
    motion_mask = torch.zeros(b, m, dtype=torch.bool)
    for i, it in enumerate(good):
        ni, mi, ti = it["mel"].shape[0], it["exp"].shape[0], it["text"].shape[0]
        mel[i, :ni] = it["mel"]
        exp[i, :mi] = it["exp"]
        exp[i, mi:] = it["exp"][-1]
        text[i, :ti] = it["text"]
        audio_mask[i, :ni] = True
        motion_mask[i, :mi] = True
    batch.update(mel=mel, exp=exp, text=text, audio_mask=audio_mask, motion_mask=motion_mask)
    batch["transcripts"] = [it.get("transcript") for it in good]  # plain text (None where an item has none)
    if "audio_feats" in good[0]:
        feats = torch.zeros(b, m, good[0]["audio_feats"].shape[1])
        for i, it in enumerate(good):
            feats[i, : it["audio_feats"].shape[0]] = it["audio_feats"]
        batch["audio_feats"] = feats
    return batch
