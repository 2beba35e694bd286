"""Validation media: generation with the EMA network through the ODE sampler, and what gets logged."""

from __future__ import annotations

import torch
from lightning_support import make_dataset

from jam_flow.lightning.callbacks import ValidationMedia
from jam_flow.lightning.datamodule import JAMFlowDataModule
from jam_flow.lightning.module import JAMFlowModule
from jam_flow.models import JointDiT


class Writer:
    """Collects what a TensorBoard SummaryWriter would receive."""

    def __init__(self) -> None:
        self.tags: dict[str, object] = {}

    def add_figure(self, tag, fig, global_step=None):
        self.tags[tag] = fig

    def add_audio(self, tag, wave, global_step=None, sample_rate=None):
        self.tags[tag] = (wave, sample_rate)

    def add_scalar(self, tag, value, global_step=None):
        self.tags[tag] = value


def test_media_generation_and_logging(tmp_path):
    root = make_dataset(tmp_path / "ds", n_train=2, n_val=2, min_s=0.5, max_s=0.7)
    dm = JAMFlowDataModule(str(root), frames_per_batch=400, max_samples=4, num_workers=0)
    dm.setup("fit")
    cfg = dict(
        audio=dict(
            dim=32,
            depth=2,
            heads=2,
            dim_head=16,
            ff_mult=2,
            text_dim=16,
            conv_layers=1,
            text_num_embeds=dm.vocab_size,
        ),
        motion=dict(dim=32, depth=2, heads=2, dim_head=16, ff_mult=2),
        joint_layers="half",
        window=4,
    )
    module = JAMFlowModule(JointDiT(**cfg), stage="stage2")
    module.set_data_meta(dm.meta())
    batch = next(iter(dm.val_dataloader()))
    media_cb = ValidationMedia(num_clips=2, nfe=2, cfg=2.0, prompt_frac=0.4)
    media = media_cb.generate(module, batch)
    b = min(2, batch["mel"].shape[0])
    assert media["mel_gen"].shape == batch["mel"][:b].shape and media["mouth_gen"].shape[-2:] == (4, 3)
    known = media["audio_known"]
    assert known.any() and not known.all()
    assert torch.allclose(media["mel_gen"][known], batch["mel"][:b][known])  # the prompt comes back exactly
    mk = media["motion_known"]
    assert torch.allclose(media["mouth_gen"][mk], media["mouth_gt"][mk], atol=1e-5)
    gt_raw = batch["exp"][:b][:, :, [14, 17, 19, 20]]
    assert torch.allclose(media["mouth_gt"], gt_raw, atol=1e-5)  # denormalised back to LivePortrait units
    writer = Writer()
    media_cb.log_media(writer, media, module, step=3)
    for i in range(b):
        assert {f"val/mel/{i}", f"val/audio/{i}", f"val/mouth/{i}", f"val/mouth_mae/{i}"} <= set(writer.tags)
        wave, sr = writer.tags[f"val/audio/{i}"]
        assert sr == 24000 and wave.shape[-1] == 256 * (int(batch["audio_mask"][i].sum()) - 1)


def test_judge_cer_without_a_judge_is_one_clear_error():
    """Without ``judge_path`` the judge score is refused up front (no generation, no AttributeError on None), and
    a validation epoch with neither media nor judge does nothing."""
    from types import SimpleNamespace

    import pytest

    from jam_flow.errors import InputError

    callback = ValidationMedia(num_clips=0)
    with pytest.raises(InputError, match=r"--media\.judge_path: .*jam-flow train-judge"):
        callback.judge_cer(SimpleNamespace(), {})
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, global_step=1, logger=None)
    callback.on_validation_epoch_end(trainer, SimpleNamespace())
