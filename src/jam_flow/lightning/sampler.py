"""Dynamic batching by total mel frames (F5-TTS ``DynamicBatchSampler``), made DDP-correct and resumable.

Dimension legend: n mel frames per clip. No tensors: this module deals in clip indices.

Batches are built once, globally and identically on every rank (no communication needed):

1. indices are sorted by mel length (ties by index), so a batch holds clips of similar length and little padding;
2. a batch is filled greedily while ``sum(frames) <= frames_per_batch`` and ``len(batch) < max_samples``
   (``max_samples = 0``: no sample cap); a clip that does not fit closes the batch and opens the next one; a clip
   longer than ``frames_per_batch`` on its own is dropped (counted in ``num_dropped``); the last partial batch is
   kept (F5-TTS ``drop_residual=False``);
3. each epoch the batch order is shuffled with ``torch.randperm`` seeded by ``seed + epoch``;
4. DDP: the batch list is padded (by repeating batches from its start) or trimmed to a multiple of the world
   size (``pad=True`` / ``False``), then rank ``r`` takes batches ``r, r + W, r + 2W, ...``: ranks never share a
   batch within an epoch (except repeated pad batches) and all run the same number of steps.

Resuming: ``state_dict()`` records the epoch and how many batches of it were consumed; after
``load_state_dict()`` the next iteration skips those batches (once), so a resumed run sees exactly the batches an
uninterrupted run would have seen. The consumed count comes from ``consumed_fn`` when one is set (the DataModule
points it at Lightning's batch progress, which is exact despite the loader's prefetching) and otherwise from the
number of batches this sampler has yielded in the epoch.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Sampler

__all__ = ["EpochSampler", "DynamicBatchSampler", "ResumableDataLoader", "build_batches"]


def build_batches(lengths: Sequence[int], frames_per_batch: int, max_samples: int = 0) -> tuple[list[list[int]], int]:
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
    """Holds the epoch number. Lightning calls ``set_epoch`` on ``DataLoader.batch_sampler.sampler`` at every
    epoch start; iterating it yields the indices in length order (what :func:`build_batches` groups)."""

    def __init__(self, lengths: Sequence[int]) -> None:
        self.lengths = [int(x) for x in lengths]
        self.epoch = 0
        self.on_epoch_change: Callable[[int], None] | None = None

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch and self.on_epoch_change is not None:
            self.on_epoch_change(int(epoch))
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], i)))

    def __len__(self) -> int:
        return len(self.lengths)


class DynamicBatchSampler(Sampler[list[int]]):
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
    ) -> None:
        if frames_per_batch < 1:
            raise ValueError(f"frames_per_batch: expected >= 1, got {frames_per_batch}")
        if max_samples < 0:
            raise ValueError(f"max_samples: expected >= 0, got {max_samples}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.sampler = EpochSampler(lengths)
        self.sampler.on_epoch_change = self._epoch_changed
        self.frames_per_batch = int(frames_per_batch)
        self.max_samples = int(max_samples)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.pad = pad
        self.batches, self.num_dropped = build_batches(self.sampler.lengths, self.frames_per_batch, self.max_samples)
        self.consumed_fn: Callable[[], int] | None = None
        self._yielded = 0
        self._skip = 0

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def _epoch_changed(self, epoch: int) -> None:
        # a pending skip belongs to the epoch it was recorded in
        self._skip = 0
        self._yielded = 0

    def _global_batches(self) -> list[list[int]]:
        batches = list(self.batches)
        if self.shuffle and batches:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        w = self.num_replicas
        if w > 1 and len(batches) % w:
            if self.pad and batches:
                need = w - len(batches) % w
                batches += [batches[i % len(batches)] for i in range(need)]
            else:
                batches = batches[: len(batches) - len(batches) % w]
        return batches

    def rank_batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch, in order."""
        return self._global_batches()[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        mine = self.rank_batches()
        skip, self._skip = min(self._skip, len(mine)), 0
        self._yielded = skip
        for batch in mine[skip:]:
            self._yielded += 1
            yield list(batch)

    def __len__(self) -> int:
        total = len(self.batches)
        w = self.num_replicas
        if w > 1:
            total = -(-total // w) * w if (self.pad and total) else total - total % w
        return total // w

    def state_dict(self) -> dict:
        consumed = self.consumed_fn() if self.consumed_fn is not None else self._yielded
        epoch = self.epoch
        if consumed >= len(self):  # the epoch was finished: resume at the start of the next one
            epoch, consumed = epoch + 1, 0
        return {"epoch": epoch, "consumed": int(consumed), "seed": self.seed, "num_replicas": self.num_replicas,
                "num_batches": len(self)}

    def load_state_dict(self, state: dict) -> None:
        same = (state.get("seed") == self.seed and state.get("num_replicas") == self.num_replicas
                and state.get("num_batches") == len(self))
        self.sampler.epoch = int(state["epoch"])
        # with another seed / world size / dataset the old position means nothing: restart the epoch
        self._skip = int(state["consumed"]) if same else 0
        self._yielded = self._skip


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
