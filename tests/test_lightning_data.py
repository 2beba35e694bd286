"""Batch sampler (frame budget, DDP sharding, resume) and the DataModule over the clip format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning_support import make_dataset

from jam_flow.data.batching import DynamicBatchSampler, build_batches
from jam_flow.data.dataset import collate_clips, fit_motion_length
from jam_flow.errors import InputError
from jam_flow.features import MelSettings, MotionSettings, audio_to_motion_frame
from jam_flow.lightning.datamodule import JAMFlowDataModule

LENGTHS = [int(x) for x in np.random.default_rng(0).integers(20, 400, size=97)] + [900]


def test_build_batches_respects_budget_and_cap():
    batches, dropped = build_batches(LENGTHS, frames_per_batch=800, max_samples=5)
    assert dropped == 1  # the 900-frame clip fits no batch
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(97))
    for b in batches:
        assert sum(LENGTHS[i] for i in b) <= 800 and len(b) <= 5
    assert [LENGTHS[b[0]] for b in batches] == sorted(LENGTHS[b[0]] for b in batches)  # length-sorted


@pytest.mark.parametrize("world,pad", [(2, True), (3, True), (3, False)])
def test_ddp_ranks_get_disjoint_batches_and_the_same_step_count(world, pad):
    samplers = [
        DynamicBatchSampler(LENGTHS, 800, 5, seed=7, num_replicas=world, rank=r, pad=pad)
        for r in range(world)
    ]
    for s in samplers:
        s.set_epoch(3)
    per_rank = [list(s) for s in samplers]
    assert len({len(p) for p in per_rank}) == 1 and all(
        len(p) == len(s) for p, s in zip(per_rank, samplers, strict=True)
    )
    n_real = len(samplers[0].batches)
    seen = [tuple(b) for p in per_rank for b in p]
    if pad:
        assert len(seen) == -(-n_real // world) * world and len(set(seen)) == n_real
    else:
        assert len(seen) == n_real - n_real % world and len(set(seen)) == len(seen)


def test_shuffle_is_deterministic_per_seed_and_changes_per_epoch():
    a, b = DynamicBatchSampler(LENGTHS, 800, 5, seed=1), DynamicBatchSampler(LENGTHS, 800, 5, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(map(tuple, list(a))) == sorted(map(tuple, first))
    assert list(DynamicBatchSampler(LENGTHS, 800, 5, seed=2)) != first


def test_resume_continues_the_data_position():
    s = DynamicBatchSampler(LENGTHS, 800, 5, seed=1)
    s.set_epoch(2)
    full = list(s)
    it = iter(s)
    for _ in range(4):
        next(it)
    state = s.state_dict()
    assert state["epoch"] == 2 and state["consumed"] == 4
    fresh = DynamicBatchSampler(LENGTHS, 800, 5, seed=1)
    fresh.load_state_dict(state)
    fresh.set_epoch(2)  # Lightning resumes in the same epoch
    assert list(fresh) == full[4:]
    assert list(fresh) == full  # the skip applies to one iteration only
    # Lightning closed the epoch early (max_steps) and resumes with the next epoch number: the data continues
    s.set_epoch(0)
    epoch0, epoch1 = list(s), s.rank_batches(1)
    late = DynamicBatchSampler(LENGTHS, 800, 5, seed=1)
    late.load_state_dict({**state, "epoch": 0, "consumed": 3})
    late.set_epoch(1)
    assert list(late) == epoch0[3:]
    late.set_epoch(2)
    assert list(late) == epoch1
    # a finished data epoch resumes at the start of the next one; a foreign position is ignored
    done = DynamicBatchSampler(LENGTHS, 800, 5, seed=1)
    done.load_state_dict({**state, "consumed": len(done)})
    assert done.data_epoch == 3 and list(done) == done.rank_batches(3)
    other_seed = DynamicBatchSampler(LENGTHS, 800, 5, seed=9)
    other_seed.load_state_dict(state)
    assert len(list(other_seed)) == len(other_seed)
    tagged = DynamicBatchSampler(LENGTHS, 800, 5, seed=1, tag_positions=True)
    tagged.position_fn = lambda: (5, 7)
    first = next(iter(tagged))
    assert all(t[1:] == (0, 0) for t in first) and tagged.state_dict()["epoch"] == 5


def test_fit_motion_length_crops_and_pads_to_the_frame_mapping():
    mel, mot = MelSettings(), MotionSettings()
    exp = np.arange(10 * 21 * 3, dtype=np.float32).reshape(10, 21, 3)
    for n_mel in (30, 40, 45):
        want = audio_to_motion_frame(n_mel - 1) + 1
        out = fit_motion_length(exp, n_mel, mel, mot)
        assert out.shape == (want, 21, 3)
        assert np.array_equal(out[: min(want, 10)], exp[: min(want, 10)])
        if want > 10:
            assert np.array_equal(out[10:], np.repeat(exp[-1:], want - 10, 0))


def test_datamodule_batches_masks_and_bad_clips(tmp_path):
    root = make_dataset(tmp_path / "ds", n_train=6, n_val=2, corrupt=1, missing=1)
    dm = JAMFlowDataModule(str(root), frames_per_batch=400, max_samples=3, num_workers=0, seed=0)
    dm.setup("fit")
    assert dm.missing == ["clip001"] and len(dm.datasets["train"]) == 5
    meta = dm.meta()
    assert (
        set(meta.to_dict()) == {"mel", "motion", "stats", "vocab", "text_units"}
        and len(meta.vocab) == dm.vocab_size
    )
    assert meta.to_dict()["text_units"] == "char"
    assert meta.stats.exp_std.shape == (21, 3) and meta.stats.mel_mean.shape == (100,)
    batches = list(dm.train_dataloader())
    skipped = sum(b["skipped"] for b in batches)
    assert skipped == 1 and any("clip000" in b["skipped_ids"] for b in batches)
    ids = [i for b in batches for i in b["ids"]]
    assert sorted(ids) == ["clip002", "clip003", "clip004", "clip005"]
    for b in batches:
        if "mel" not in b:
            continue
        assert b["mel"].shape[1] * b["mel"].shape[0] <= 400 * 3 and b["audio_mask"].sum() <= 400
        n_valid = b["audio_mask"].sum(1)
        assert torch.equal(b["motion_mask"].sum(1), audio_to_motion_frame(n_valid - 1) + 1)
        assert (b["text"][~(b["text"] >= 0)] == -1).all() and (b["mel"][~b["audio_mask"]] == 0).all()
    assert len(list(dm.val_dataloader())) >= 1 and dm.test_dataloader() == []


def test_collate_of_an_all_bad_batch_and_input_errors(tmp_path):
    out = collate_clips([{"id": "x", "error": "broken"}])
    assert out["skipped"] == 1 and "mel" not in out
    with pytest.raises(InputError, match="data_dir"):
        JAMFlowDataModule(str(tmp_path / "nope"), frames_per_batch=100).setup("fit")
    with pytest.raises(InputError, match="frames_per_batch"):
        JAMFlowDataModule(str(tmp_path), frames_per_batch=0)
