"""The text-use probe's core (``jam_flow.flow.probe``): exact zero for a network blind to the text, a positive gain
for one that reads it, reproducible draws, and ``val/text_gain`` logged (TensorBoard too) in a tiny fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning_support import make_dataset

from jam_flow.flow.objective import FlowBatch
from jam_flow.flow.probe import TIME_BINS, TextUseSums, rotate_text, text_use_batch
from jam_flow.lightning.cli import run_cli
from jam_flow.models import JointDiT, tiny_joint_config
from jam_flow.models.stages import Stage, joint_interface

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tests"


def _batch(with_motion: bool = True, b: int = 3, n: int = 30, m: int = 8) -> FlowBatch:
    g = torch.Generator().manual_seed(0)
    lens = torch.tensor([n, n - 5, n - 9][:b])
    audio_mask = torch.arange(n)[None] < lens[:, None]
    text = torch.randint(0, 20, (b, 7), generator=g)  # equal lengths: only the token ids differ between clips
    batch = FlowBatch(audio=torch.randn(b, n, 100, generator=g), audio_mask=audio_mask, text=text)
    if with_motion:
        m_lens = (lens * 4 + 14) // 15
        batch.motion = torch.randn(b, m, 12, generator=g)
        batch.motion_rest = torch.randn(b, m, 51, generator=g)
        batch.motion_mask = torch.arange(m)[None] < m_lens[:, None]
    return batch


def _joint() -> JointDiT:
    torch.manual_seed(0)
    net = JointDiT(**tiny_joint_config()).eval()
    with torch.no_grad():  # adaLN-Zero starts at an output of 0: give every weight a value
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return net


@pytest.mark.parametrize("with_motion", [True, False])
def test_zeroed_text_embeddings_give_exactly_zero_gain(with_motion):
    net = _joint()
    with torch.no_grad():
        net.audio.text_embed.text_embed.weight.zero_()  # every token embeds to 0: which text it is cannot matter
    fwd = joint_interface(net, Stage.stage2)
    batch = _batch(with_motion)
    res = text_use_batch(fwd, batch, rotate_text(batch.text), torch.Generator().manual_seed(1)).result()
    assert res["text_gain"] == 0.0 and res["loss_own_text"] > 0.1
    for name, _, _ in TIME_BINS:
        assert res["bins"][name]["text_gain"] == 0.0
    # the same network with its text table back does read the text (the zero above is not a dead path)
    net2 = _joint()
    res2 = text_use_batch(
        joint_interface(net2, Stage.stage2), batch, rotate_text(batch.text), torch.Generator().manual_seed(1)
    ).result()
    assert res2["text_gain"] != 0.0


class Reader(torch.nn.Module):
    """Knows each clip's mel by its text: the exact velocity for the clip's own text, the velocity towards the
    other clip's mel for another clip's text, 0 without text. Records the times it is called with."""

    def __init__(self, batch: FlowBatch) -> None:
        super().__init__()
        self.by_text = {tuple(row.tolist()): x1 for row, x1 in zip(batch.text, batch.audio, strict=True)}
        self.times: list[tuple[str, torch.Tensor]] = []

    def forward(self, audio_x, text, time, drop_text=False, **_):
        self.times.append((("drop" if drop_text else "text"), time.clone()))
        v = torch.zeros_like(audio_x)
        if not drop_text:
            for i, row in enumerate(text):
                v[i] = (self.by_text[tuple(row.tolist())] - audio_x[i]) / (1 - time[i])
        return v, None


def test_a_network_that_reads_the_text_gains_in_every_bin_with_stratified_times():
    batch = _batch(with_motion=False)
    reader = Reader(batch)
    res = text_use_batch(reader, batch, rotate_text(batch.text), torch.Generator().manual_seed(3), per_bin=2)
    res = res.result()
    assert res["loss_own_text"] == pytest.approx(0.0, abs=1e-6)
    assert res["text_gain"] > 0.5 and res["loss_no_text"] > 0.5
    for name, _, _ in TIME_BINS:
        assert res["bins"][name]["text_gain"] > 0.5
    # 3 bins x 2 repeats x 3 texts; the three texts of a repeat share the times, each inside its bin
    assert len(reader.times) == 18
    for k, (name, lo, hi) in enumerate(t for t in TIME_BINS for _ in range(2)):
        calls = reader.times[3 * k : 3 * k + 3]
        assert [c[0] for c in calls] == ["text", "drop", "text"]
        assert all(torch.equal(c[1], calls[0][1]) for c in calls)
        assert bool(((calls[0][1] >= lo) & (calls[0][1] < hi)).all()), name


def test_probe_is_reproducible_and_sums_add_up():
    net = _joint()
    fwd = joint_interface(net, Stage.stage2)
    batch = _batch()
    one = text_use_batch(fwd, batch, rotate_text(batch.text), torch.Generator().manual_seed(5)).result()
    assert (
        text_use_batch(fwd, batch, rotate_text(batch.text), torch.Generator().manual_seed(5)).result() == one
    )
    assert (
        text_use_batch(fwd, batch, rotate_text(batch.text), torch.Generator().manual_seed(6)).result() != one
    )
    assert one["text_gain"] == pytest.approx(one["loss_other_text"] - one["loss_own_text"])
    assert one["text_gain_rel"] == pytest.approx(one["text_gain"] / one["loss_own_text"])
    # every bin scores the same frames, so the overall loss is the mean of the bins'
    for key in ("loss_own_text", "loss_no_text", "loss_other_text"):
        assert one[key] == pytest.approx(sum(one["bins"][n][key] for n, _, _ in TIME_BINS) / 3)
    with pytest.raises(ValueError, match="no valid frame"):
        TextUseSums().result()
    assert torch.equal(rotate_text(torch.tensor([[1], [2], [3]])), torch.tensor([[2], [3], [1]]))


def test_val_text_gain_is_logged_in_a_tiny_fit(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = make_dataset(tmp_path / "ds", n_train=4, n_val=3, min_s=0.5, max_s=0.7)
    cli = run_cli(
        "fit",
        [
            "--config",
            str(CONFIGS / "tiny_stage2.yaml"),
            "--data.data_dir",
            str(data),
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
            "--trainer.max_steps",
            "1",
            "--media.num_clips",
            "0",
        ],
    )
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["val/text_gain"])
    for name, _, _ in TIME_BINS:
        assert torch.isfinite(metrics[f"val/text_gain_{name}"])
    events = EventAccumulator(str(cli.trainer.logger.log_dir))
    events.Reload()
    assert "val/text_gain" in events.Tags()["scalars"]


def test_sums_from_several_ranks_add_up_to_one_run():
    """What the validation end does under DDP: each rank's sums as a vector, added (the all-reduce), equal the
    sums of one process that scored every batch; a rank that scored nothing adds zeros."""
    fwd = joint_interface(_joint(), Stage.stage2)
    a, b = _batch(), _batch(b=2, n=24)
    whole = TextUseSums()
    for batch, seed in ((a, 1), (b, 2)):
        text_use_batch(fwd, batch, rotate_text(batch.text), torch.Generator().manual_seed(seed), whole)
    ranks = [TextUseSums(), TextUseSums(), TextUseSums()]  # the third rank scored no clip
    for batch, seed, rank in ((a, 1, ranks[0]), (b, 2, ranks[1])):
        text_use_batch(fwd, batch, rotate_text(batch.text), torch.Generator().manual_seed(seed), rank)
    merged = TextUseSums.from_tensor(sum(r.to_tensor() for r in ranks))
    assert merged.clips == whole.clips == 5
    assert merged.frames == whole.frames
    got, want = merged.result(), whole.result()
    assert got["text_gain_rel"] == pytest.approx(want["text_gain_rel"], rel=1e-12)
    for name, _, _ in TIME_BINS:
        assert got["bins"][name]["loss_own_text"] == pytest.approx(
            want["bins"][name]["loss_own_text"], rel=1e-12
        )
    assert TextUseSums.from_tensor(TextUseSums().to_tensor()).clips == 0
