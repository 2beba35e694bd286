"""Dynamic batching by total mel frames (F5-TTS ``DynamicBatchSampler``), DDP-sharded and exactly resumable.

Dimension legend: n mel frames per clip. No tensors, no masks: this module deals in clip indices.

Clips are sorted by length and packed greedily under ``frames_per_batch`` (and ``max_samples``); the batch order is
shuffled per data epoch (seed ``seed + epoch``); rank ``r`` of ``W`` takes batches ``r, r + W, ...`` of a list
padded or trimmed to a multiple of ``W``. The order is a pure function of the data position ``(data epoch,
batches consumed)``, which ``state_dict`` records (see docs/training.md "Resumable position").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Sampler

__all__ = ["EpochSampler", "DynamicBatchSampler", "ResumableDataLoader", "build_batches"]


def build_batches(
    lengths: Sequence[int], frames_per_batch: int, max_samples: int = 0
) -> tuple[list[list[int]], int]:
    """Greedy length-sorted batches; returns ``(batches, num_dropped)`` (clips too long for any batch)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    frames = 0
    dropped = 0
    for i in order:
        n = int(lengths[i])
        if frames + n <= frames_per_batch and (max_samples == 0 or len(current) < max_samples):
            current.append(i)
            frames += n
            continue
        if current:
            batches.append(current)
        if n <= frames_per_batch:
            current, frames = [i], n
        else:
            current, frames = [], 0
            dropped += 1
    if current:
        batches.append(current)
    return batches, dropped


class EpochSampler(Sampler[int]):
    """Holds the epoch number Lightning sets: Lightning calls ``set_epoch`` on ``DataLoader.batch_sampler.sampler``
    at every epoch start. Iterating it yields the indices in length order (what :func:`build_batches` groups)."""

    def __init__(self, lengths: Sequence[int]) -> None:
        self.lengths = [int(x) for x in lengths]
        self.epoch = 0
        self.on_epoch_change: Callable[[int], None] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self.on_epoch_change is not None:
            self.on_epoch_change(int(epoch))

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], i)))

    def __len__(self) -> int:
        return len(self.lengths)


class DynamicBatchSampler(Sampler[list]):
    """Batches of clip indices with at most ``frames_per_batch`` mel frames each (see the module docstring).

    Args:
        lengths: mel frames of each clip.
        frames_per_batch: frame budget of one batch (per rank).
        max_samples: most clips in one batch (0: no cap).
        seed: base seed of the per-epoch shuffle.
        shuffle: shuffle the batch order each epoch (False: length order, e.g. validation).
        num_replicas: DDP world size.
        rank: this process's rank.
        pad: pad the batch list to a multiple of ``num_replicas`` (True) or trim it (False).
        tag_positions: yield ``(index, data_epoch, batch_position)`` tuples instead of plain indices.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        frames_per_batch: int,
        max_samples: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        pad: bool = True,
        tag_positions: bool = False,
    ) -> None:
        if frames_per_batch < 1:
            raise ValueError(f"frames_per_batch: expected >= 1, got {frames_per_batch}")
        if max_samples < 0:
            raise ValueError(f"max_samples: expected >= 0, got {max_samples}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.sampler = EpochSampler(lengths)
        self.sampler.on_epoch_change = self._lightning_epoch
        self.frames_per_batch = int(frames_per_batch)
        self.max_samples = int(max_samples)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.pad = pad
        self.tag_positions = tag_positions
        self.batches, self.num_dropped = build_batches(
            self.sampler.lengths, self.frames_per_batch, self.max_samples
        )
        self.position_fn: Callable[[], tuple[int, int] | None] | None = None
        self.data_epoch = 0
        self._offset = 0  # data epoch = Lightning epoch - offset
        self._await_offset = False  # after a resume: fix the offset at the next set_epoch
        self._skip = 0  # batches of the data epoch to skip at the next iteration
        self._yielded = 0

    @property
    def epoch(self) -> int:
        return self.data_epoch

    def set_epoch(self, epoch: int) -> None:
        """Lightning's epoch number (also called through ``self.sampler.set_epoch``)."""
        self.sampler.set_epoch(epoch)

    def _lightning_epoch(self, epoch: int) -> None:
        if self._await_offset:  # first epoch after a resume: the loaded position stays, the offset adapts
            self._offset = epoch - self.data_epoch
            self._await_offset = False
            return
        new = epoch - self._offset
        if new != self.data_epoch:
            self.data_epoch = new
            self._skip = 0

    def _global_batches(self, data_epoch: int) -> list[list[int]]:
        batches = list(self.batches)
        if self.shuffle and batches:
            g = torch.Generator().manual_seed(self.seed + data_epoch)
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        w = self.num_replicas
        if w > 1 and len(batches) % w:
            if self.pad and batches:
                need = w - len(batches) % w
                batches += [batches[i % len(batches)] for i in range(need)]
            else:
                batches = batches[: len(batches) - len(batches) % w]
        return batches

    def rank_batches(self, data_epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of a data epoch (default: the current one), in order."""
        return self._global_batches(self.data_epoch if data_epoch is None else data_epoch)[
            self.rank :: self.num_replicas
        ]

    def __iter__(self) -> Iterator[list]:
        epoch = self.data_epoch
        mine = self.rank_batches(epoch)
        skip, self._skip = min(self._skip, len(mine)), 0
        self._yielded = skip
        for pos in range(skip, len(mine)):
            self._yielded = pos + 1
            if self.tag_positions:
                yield [(i, epoch, pos) for i in mine[pos]]
            else:
                yield list(mine[pos])

    def __len__(self) -> int:
        total = len(self.batches)
        w = self.num_replicas
        if w > 1:
            total = -(-total // w) * w if (self.pad and total) else total - total % w
        return total // w

    def state_dict(self) -> dict:
        """``{"epoch": data epoch, "consumed": batches of it already trained on, ...}``."""
        pos = self.position_fn() if self.position_fn is not None else None
        epoch, consumed = pos if pos is not None else (self.data_epoch, self._yielded)
        return {
            "epoch": int(epoch),
            "consumed": int(consumed),
            "seed": self.seed,
            "num_replicas": self.num_replicas,
            "num_batches": len(self),
        }

    def load_state_dict(self, state: dict) -> None:
        same = (
            state.get("seed") == self.seed
            and state.get("num_replicas") == self.num_replicas
            and state.get("num_batches") == len(self)
        )
        epoch, consumed = int(state["epoch"]), int(state["consumed"])
        if (
            not same
        ):  # another seed / world size / dataset: the old position means nothing, start the epoch over
            consumed = 0
        if consumed >= len(self):  # that data epoch was finished
            epoch, consumed = epoch + 1, 0
        self.data_epoch, self._skip, self._yielded = epoch, consumed, consumed
        self._await_offset = True


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a :class:`DynamicBatchSampler` that Lightning treats as stateful: its
    ``state_dict`` / ``load_state_dict`` are saved in and restored from the checkpoint's loop state (before the
    first batch of the resumed run is drawn)."""

    def state_dict(self) -> dict:
        assert isinstance(self.batch_sampler, DynamicBatchSampler)
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        assert isinstance(self.batch_sampler, DynamicBatchSampler)
        self.batch_sampler.load_state_dict(state)
