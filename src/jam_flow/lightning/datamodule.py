"""DataModule over the clip dataset format (docs/CONVENTIONS.md "Dataset format"): splits, duration filter,
frame-budget batches (:mod:`jam_flow.data.batching`), DDP sharding, resumable position, and bad clips that are
skipped, counted and logged (TensorBoard ``data/skipped_clips``, the progress bar, an epoch-end summary).

Dimension legend: b batch, n mel frames, m motion frames. Masks are **True = valid**. Batches are
:func:`jam_flow.data.dataset.collate_clips` dicts; missing feature files are found and reported at setup time.

``data_dir`` is a clip folder (the default format, what ``make demo`` uses), a packed folder or an ``s3://`` URL
(:mod:`jam_flow.data.packed`): the same records, batches and positions either way, only the reader differs.
Loader workers are persistent (started once per run, not once per epoch) and batches are pinned on CUDA.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

import lightning as L

from jam_flow.data.audio_features import features_dir
from jam_flow.data.batching import DynamicBatchSampler, ResumableDataLoader
from jam_flow.data.dataset import ClipDataset, collate_clips
from jam_flow.data.format import ClipRecord, read_dataset_json, read_manifest, read_stats
from jam_flow.data.meta import DataMeta, DatasetStats
from jam_flow.data.packed import PackedClipDataset, is_packed, open_packed, read_packed_records
from jam_flow.data.text import load_vocab
from jam_flow.errors import InputError

__all__ = ["JAMFlowDataModule"]

log = logging.getLogger(__name__)


class JAMFlowDataModule(L.LightningDataModule):
    """Clip dataset -> frame-budget batches.

    Args:
        data_dir: dataset directory (``dataset.json``, ``manifest.jsonl``, ``stats.json``, ``clips/``), a packed
            dataset folder or an ``s3://bucket/prefix`` packed dataset (``jam-flow data pack``).
        frames_per_batch: mel-frame budget of one batch per GPU (F5-TTS: 38400).
        max_samples: most clips per batch (F5-TTS: 64; 0 = no cap).
        num_workers: DataLoader worker processes.
        seed: seed of the per-epoch batch shuffle (the same on every rank).
        max_duration: clips longer than this many seconds are left out (F5-TTS: 30).
        min_duration: clips shorter than this many seconds are left out (F5-TTS: 0.3).
        vocab_path: F5-TTS ``vocab.txt`` (must match an F5 checkpoint used for init); None = the bundled vocabulary
            of ``text_units``.
        text_units: ``char`` (one token per character, F5-TTS's; default) or ``phoneme`` (one token per IPA phoneme
            from eSpeak NG, ``jam_flow.data.text``); the clips' plain text is turned into these units on loading,
            and the units travel with the checkpoint, so ``generate --text`` does the same.
        val_frames_per_batch: frame budget of validation/test batches (None: ``frames_per_batch``).
        pad_batches: DDP: pad the batch list to a multiple of the world size (True) or trim it (False).
        audio_features: stage-1 Motion-DiT audio features: ``mel`` (the mel averaged onto the motion grid, computed
            on the fly) or ``wav2vec2`` (precomputed once with ``jam-flow audio-features``, read from
            ``DIR/audio_features/<audio_features_name>/``; paper appendix A). Stage 2 uses neither.
        audio_features_name: subdirectory of ``DIR/audio_features`` holding the wav2vec2 / HuBERT features.
        shuffle: shuffle the training batch order each epoch (False: the length order every epoch, e.g. to compare
            two data sources batch by batch).
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
        audio_features: Literal["mel", "wav2vec2"] = "mel",
        audio_features_name: str = "wav2vec2",
        shuffle: bool = True,
        text_units: Literal["char", "phoneme"] = "char",
    ) -> None:
        super().__init__()
        if audio_features not in ("mel", "wav2vec2"):
            raise InputError(f"--data.audio_features: expected 'mel' or 'wav2vec2', got {audio_features!r}")
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
        self.data_url = str(data_dir)
        self.packed = is_packed(self.data_url)
        self.data_dir = Path(data_dir)  # a packed source's local metadata folder once read
        self.frames_per_batch = frames_per_batch
        self.max_samples = max_samples
        self.num_workers = num_workers
        self.seed = seed
        self.max_duration = max_duration
        self.min_duration = min_duration
        self.vocab_path = vocab_path
        self.val_frames_per_batch = val_frames_per_batch
        self.pad_batches = pad_batches
        self.audio_features = audio_features
        self.audio_features_name = audio_features_name
        self.shuffle = shuffle
        self.audio_feature_dim: int | None = 100 if audio_features == "mel" else None
        self.text_units = text_units
        self.vocab = load_vocab(vocab_path, text_units)
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
        source = None
        if self.packed:
            if self.audio_features == "wav2vec2":
                raise InputError(
                    "--data.audio_features wav2vec2: a packed dataset holds mel and exp only; "
                    "train stage 1 with wav2vec2 features from the clip folder"
                )
            source = open_packed(self.data_url)
            self.data_dir = source.meta_dir
        elif not self.data_dir.is_dir():
            raise InputError(
                f"--data.data_dir: {self.data_dir} is not a directory (expected a jam-flow dataset)"
            )
        info = read_dataset_json(self.data_dir)
        self.mel, self.motion = info.mel, info.motion
        st = read_stats(self.data_dir)
        self.stats = DatasetStats(st["mel_mean"], st["mel_std"], st["exp_mean"], st["exp_std"])
        item_of: dict[str, int] = {}
        if source is not None:
            records, item_of = read_packed_records(source)
        else:
            records = read_manifest(self.data_dir)
        keep: list[ClipRecord] = []
        for rec in records:
            if not self.min_duration <= rec.duration <= self.max_duration:
                self.num_filtered += 1
            elif source is None and not (self.data_dir / rec.features).is_file():
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
        feats_name = None
        if self.audio_features == "wav2vec2":
            info_path = features_dir(self.data_dir, self.audio_features_name) / "info.json"
            if not info_path.is_file():
                raise InputError(
                    f"--data.audio_features wav2vec2: {info_path} is missing; compute the features once with "
                    f"`jam-flow audio-features --data-dir {self.data_dir} --model W2V_DIR`"
                )
            self.audio_feature_dim = int(json.loads(info_path.read_text(encoding="utf-8"))["dim"])
            feats_name = self.audio_features_name
        for split in ("train", "val", "test"):
            recs = [r for r in keep if r.split == split]
            if source is not None:
                self.datasets[split] = PackedClipDataset(
                    source, recs, item_of, self.vocab, self.mel, self.motion
                )
            else:
                self.datasets[split] = ClipDataset(
                    self.data_dir, recs, self.vocab, self.mel, self.motion, audio_features=feats_name
                )
        if not self.datasets["train"].records:
            raise InputError(
                f"{self.data_dir / 'manifest.jsonl'}: no usable clip in the 'train' split "
                f"({len(records)} records, {len(self.missing)} missing, {self.num_filtered} filtered)"
            )
        self._prepared = True

    def meta(self) -> DataMeta:
        """What a model takes from the data side (goes into ``ckpt["jam_flow"]``)."""
        self._read()
        return DataMeta(self.mel, self.motion, self.stats, self.vocab)

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
            num_replicas=world,
            rank=rank,
            pad=self.pad_batches,
            shuffle=shuffle and self.shuffle,
            tag_positions=shuffle,
        )
        if sampler.num_dropped:
            log.warning(
                "%s split: %d clip(s) exceed frames_per_batch=%d on their own and are left out",
                split,
                sampler.num_dropped,
                frames,
            )
        if shuffle and len(sampler) == 0:
            longest = max((r.n_mel for r in ds.records), default=0)
            raise InputError(
                f"--data.frames_per_batch: no training batch: {split} split: {sampler.num_dropped} of "
                f"{len(ds.records)} clip(s) exceed frames_per_batch={frames} on their own (the longest has {longest} "
                "mel frames); raise --data.frames_per_batch or lower --data.max_duration"
            )
        if shuffle and self.trainer is not None:
            trainer = self.trainer
            sampler.position_fn = lambda: getattr(trainer.lightning_module, "data_position", None)
        return ResumableDataLoader(
            ds,
            batch_sampler=sampler,
            collate_fn=collate_clips,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self._on_cuda(),
        )

    def _on_cuda(self) -> bool:
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

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
