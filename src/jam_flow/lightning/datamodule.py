"""DataModule over the clip dataset format (docs/CONVENTIONS.md "Dataset format"): dynamic frame batching,
padding masks, DDP sharding, resumable position, and bad clips that are skipped, counted and logged.

Dimension legend: b batch, n mel frames, c mel channels (100), m motion frames (25 fps), k keypoints (21),
nt text tokens. Masks are **True = valid**.

A batch (``collate``) is a dict:

* ``mel [b, n, c]`` natural-log mel, zero padded; ``audio_mask [b, n]``;
* ``exp [b, m, k, 3]`` raw LivePortrait expression (normalised later by the LightningModule with the dataset
  stats), edge padded; ``motion_mask [b, m]``. Each clip's motion is cropped / padded (repeating its last frame)
  to exactly ``audio_to_motion_frame(n - 1) + 1`` frames, so mel frame ``i`` and motion frame
  ``audio_to_motion_frame(i)`` are the same instant;
* ``text [b, nt]`` int64 vocabulary ids, padded with -1;
* ``ids`` (list of clip ids), ``skipped`` (int: clips of this batch that could not be loaded), ``skipped_ids``,
  ``skipped_errors`` and, for training batches, ``position`` = ``(data epoch, batch position)`` (resume
  bookkeeping, see :mod:`jam_flow.lightning.sampler`).

A clip whose file is missing or corrupt, whose arrays have the wrong shapes, or whose text has characters outside
the vocabulary is dropped from its batch (``load_clip`` raises ``ClipError``); the count travels with the batch
so the module can log it (TensorBoard ``data/skipped_clips``, the progress bar and an epoch-end summary).
Missing feature files are already found at setup time and reported there.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import Dataset

from jam_flow.data.format import (
    ClipError,
    ClipRecord,
    load_clip,
    read_dataset_json,
    read_manifest,
    read_stats,
)
from jam_flow.data.text import Vocab
from jam_flow.errors import InputError
from jam_flow.features import MelSettings, MotionSettings, audio_to_motion_frame
from jam_flow.lightning.sampler import DynamicBatchSampler, ResumableDataLoader

__all__ = ["ClipDataset", "collate_clips", "JAMFlowDataModule", "fit_motion_length"]

log = logging.getLogger(__name__)


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
    ) -> None:
        self.root = Path(root)
        self.records = records
        self.vocab = vocab
        self.mel = mel
        self.motion = motion

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> dict[str, Any]:
        """The clip's tensors; raises ``ClipError`` (or ``InputError`` for bad text) when it cannot be used."""
        rec = self.records[index]
        arrays = load_clip(self.root, rec)
        ids = self.vocab.encode(rec.text, where=f"clip {rec.id!r} text")
        exp = fit_motion_length(arrays["exp"], arrays["mel"].shape[0], self.mel, self.motion)
        return {
            "id": rec.id,
            "mel": torch.from_numpy(np.ascontiguousarray(arrays["mel"])),
            "exp": torch.from_numpy(np.ascontiguousarray(exp)),
            "text": torch.tensor(ids, dtype=torch.long),
        }

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
    return batch


class JAMFlowDataModule(L.LightningDataModule):
    """Clip dataset -> frame-budget batches.

    Args:
        data_dir: dataset directory (``dataset.json``, ``manifest.jsonl``, ``stats.json``, ``clips/``).
        frames_per_batch: mel-frame budget of one batch per GPU (F5-TTS: 38400).
        max_samples: most clips per batch (F5-TTS: 64; 0 = no cap).
        num_workers: DataLoader worker processes.
        seed: seed of the per-epoch batch shuffle (the same on every rank).
        max_duration: clips longer than this many seconds are left out (F5-TTS: 30).
        min_duration: clips shorter than this many seconds are left out (F5-TTS: 0.3).
        vocab_path: F5-TTS ``vocab.txt`` (must match an F5 checkpoint used for init); None = bundled vocabulary.
        val_frames_per_batch: frame budget of validation/test batches (None: ``frames_per_batch``).
        pad_batches: DDP: pad the batch list to a multiple of the world size (True) or trim it (False).
    """

    def __init__(
        self,
        data_dir: str,
        frames_per_batch: int = 38400,
        max_samples: int = 64,
        num_workers: int = 4,
        seed: int = 0,
        max_duration: float = 30.0,
        min_duration: float = 0.3,
        vocab_path: str | None = None,
        val_frames_per_batch: int | None = None,
        pad_batches: bool = True,
    ) -> None:
        super().__init__()
        if frames_per_batch < 1:
            raise InputError(
                f"--data.frames_per_batch: expected a positive number of mel frames, got {frames_per_batch}"
            )
        if max_samples < 0:
            raise InputError(f"--data.max_samples: expected >= 0 (0 = no cap), got {max_samples}")
        if num_workers < 0:
            raise InputError(f"--data.num_workers: expected >= 0, got {num_workers}")
        if not 0 <= min_duration < max_duration:
            raise InputError(
                f"--data.min_duration/max_duration: need 0 <= min < max, got {min_duration}, {max_duration}"
            )
        self.data_dir = Path(data_dir)
        self.frames_per_batch = frames_per_batch
        self.max_samples = max_samples
        self.num_workers = num_workers
        self.seed = seed
        self.max_duration = max_duration
        self.min_duration = min_duration
        self.vocab_path = vocab_path
        self.val_frames_per_batch = val_frames_per_batch
        self.pad_batches = pad_batches
        self.vocab = Vocab.from_file(vocab_path) if vocab_path else Vocab.default()
        self._prepared = False
        self.datasets: dict[str, ClipDataset] = {}
        self.missing: list[str] = []  # clips whose feature file is missing (found at setup)
        self.num_filtered = 0  # clips outside [min_duration, max_duration]

    # ------------------------------------------------------------------------------------------------ metadata
    @property
    def vocab_size(self) -> int:
        """``text_num_embeds`` for the network (linked by the CLI)."""
        return len(self.vocab)

    def _read(self) -> None:
        if self._prepared:
            return
        if not self.data_dir.is_dir():
            raise InputError(
                f"--data.data_dir: {self.data_dir} is not a directory (expected a jam-flow dataset)"
            )
        info = read_dataset_json(self.data_dir)
        self.mel, self.motion = info.mel, info.motion
        st = read_stats(self.data_dir)
        self.stats = {
            "mel": {"mean": st["mel_mean"].tolist(), "std": st["mel_std"].tolist()},
            "motion": {"exp_mean": st["exp_mean"].tolist(), "exp_std": st["exp_std"].tolist()},
        }
        records = read_manifest(self.data_dir)
        keep: list[ClipRecord] = []
        for rec in records:
            if not self.min_duration <= rec.duration <= self.max_duration:
                self.num_filtered += 1
            elif not (self.data_dir / rec.features).is_file():
                self.missing.append(rec.id)
            else:
                keep.append(rec)
        if self.missing:
            shown = ", ".join(self.missing[:10]) + (" ..." if len(self.missing) > 10 else "")
            log.warning(
                "%s: skipping %d clip(s) whose features file is missing: %s",
                self.data_dir,
                len(self.missing),
                shown,
            )
        if self.num_filtered:
            log.info(
                "%s: left out %d clip(s) outside %.2f-%.2f s",
                self.data_dir,
                self.num_filtered,
                self.min_duration,
                self.max_duration,
            )
        for split in ("train", "val", "test"):
            recs = [r for r in keep if r.split == split]
            self.datasets[split] = ClipDataset(self.data_dir, recs, self.vocab, self.mel, self.motion)
        if not self.datasets["train"].records:
            raise InputError(
                f"{self.data_dir / 'manifest.jsonl'}: no usable clip in the 'train' split "
                f"({len(records)} records, {len(self.missing)} missing, {self.num_filtered} filtered)"
            )
        self._prepared = True

    def meta(self) -> dict[str, Any]:
        """What inference needs from the data side (goes into ``ckpt["jam_flow"]``)."""
        self._read()
        return {
            "mel": self.mel.to_dict(),
            "motion": self.motion.to_dict(),
            "stats": self.stats,
            "vocab": self.vocab.to_list(),
        }

    # ------------------------------------------------------------------------------------------------ hooks
    def setup(self, stage: str | None = None) -> None:
        self._read()

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def _loader(self, split: str, shuffle: bool) -> ResumableDataLoader:
        self._read()
        ds = self.datasets[split]
        frames = (
            self.frames_per_batch
            if (shuffle or self.val_frames_per_batch is None)
            else self.val_frames_per_batch
        )
        world, rank = self._world()
        sampler = DynamicBatchSampler(
            [r.n_mel for r in ds.records],
            frames,
            self.max_samples,
            self.seed,
            shuffle=shuffle,
            num_replicas=world,
            rank=rank,
            pad=self.pad_batches,
            tag_positions=shuffle,
        )
        if sampler.num_dropped:
            log.warning(
                "%s split: %d clip(s) exceed frames_per_batch=%d on their own and are left out",
                split,
                sampler.num_dropped,
                frames,
            )
        if shuffle and self.trainer is not None:
            trainer = self.trainer
            sampler.position_fn = lambda: getattr(trainer.lightning_module, "data_position", None)
        return ResumableDataLoader(
            ds,
            batch_sampler=sampler,
            collate_fn=collate_clips,
            num_workers=self.num_workers,
            persistent_workers=False,
            pin_memory=False,
        )

    def train_dataloader(self) -> ResumableDataLoader:
        self._check_distributed_sampler()
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> ResumableDataLoader | list:
        self._read()
        return self._loader("val", shuffle=False) if self.datasets["val"].records else []

    def test_dataloader(self) -> ResumableDataLoader | list:
        self._read()
        return self._loader("test", shuffle=False) if self.datasets["test"].records else []

    def _check_distributed_sampler(self) -> None:
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return
        if getattr(trainer._accelerator_connector, "use_distributed_sampler", False):
            raise InputError(
                "--trainer.use_distributed_sampler must be false: the jam-flow batch sampler shards "
                "batches across ranks itself (jam-flow fit sets this by default)"
            )
