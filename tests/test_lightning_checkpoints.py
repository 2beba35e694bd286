"""Checkpoint safety on the training side: the best checkpoint is the one its validation scored, last.ckpt on its own step interval,
atomic checkpoint files, non-finite steps skipped/counted/stopped, and one-line --ckpt_path errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning_support import make_dataset
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from jam_flow.atomic import default_file_mode
from jam_flow.cli import main as jam_flow_main
from jam_flow.errors import InputError
from jam_flow.lightning.callbacks import (
    AtomicCheckpointIO,
    Checkpoint,
    NonFiniteGuard,
    NonFiniteTrainingError,
)
from jam_flow.lightning.cli import _check_ckpt_path as check_ckpt_path


class Scripted(L.LightningModule):
    """A one-weight model whose val/loss at each validation step comes from ``scores``; ``nan_steps`` gives a NaN
    training loss at those steps."""

    def __init__(self, scores: dict[int, float] | None = None, nan_steps=()) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.scores = scores or {}
        self.nan_steps = set(nan_steps)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        if self.global_step in self.nan_steps:
            loss = loss * float("nan")
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.scores.get(self.global_step, 10.0), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2)


def _loader(n: int) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n, 2)), batch_size=1)


def _trainer(tmp_path, callbacks, max_steps: int, val_every: int | None) -> L.Trainer:
    return L.Trainer(
        default_root_dir=tmp_path,
        max_steps=max_steps,
        val_check_interval=val_every,
        check_val_every_n_epoch=None if val_every else 1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )


def test_best_is_the_step_its_validation_scored(tmp_path):
    """every_n_train_steps == val_check_interval (the stage configs): validations at 20, 40, 60 score 3, 1, 2."""
    ckpt = Checkpoint(
        dirpath=tmp_path / "ckpt",
        monitor="val/loss",
        mode="min",
        save_top_k=1,
        save_last=True,
        every_n_train_steps=20,
        filename="best-{step}",
    )
    model = Scripted(scores={20: 3.0, 40: 1.0, 60: 2.0})
    _trainer(tmp_path, [ckpt], 60, 20).fit(model, _loader(200), _loader(1))
    best = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)
    assert best["global_step"] == 40 and float(ckpt.best_model_score) == 1.0
    assert ckpt.best_model_path.endswith("best-step=40.ckpt")
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 60
    # files have the usual mode and no partial file stays behind
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["best-step=40.ckpt", "last.ckpt"]
    assert all(p.stat().st_mode & 0o777 == default_file_mode() for p in (tmp_path / "ckpt").iterdir())


def test_last_is_written_on_its_own_interval_without_validation(tmp_path):
    seen = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            path = tmp_path / "ckpt" / "last.ckpt"
            if path.is_file():
                seen.append((trainer.global_step, torch.load(path, weights_only=True)["global_step"]))

    ckpt = Checkpoint(dirpath=tmp_path / "ckpt", monitor="val/loss", save_last=True, every_n_train_steps=10)
    # validation only at the end of an epoch of 100 steps: none runs in 25 steps
    _trainer(tmp_path, [ckpt, Spy()], 25, None).fit(Scripted(), _loader(100), _loader(1))
    # (step seen by the spy, step saved in last.ckpt): Lightning runs checkpoint callbacks after the others
    first = dict(seen)
    assert min(first) == 11 and first[11] == 10 and first[21] == 20
    assert not [p for p in (tmp_path / "ckpt").iterdir() if p.name.startswith("best")]


def test_a_failed_checkpoint_save_leaves_nothing(tmp_path, monkeypatch):
    def broken_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    (tmp_path / "last.ckpt").write_bytes(b"previous")
    with pytest.raises(OSError, match="disk full"):
        AtomicCheckpointIO().save_checkpoint({"x": 1}, tmp_path / "last.ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert (tmp_path / "last.ckpt").read_bytes() == b"previous"


def test_non_finite_steps_are_skipped_then_stop_the_run(tmp_path, caplog):
    guard = NonFiniteGuard(max_consecutive_nonfinite=3)
    model = Scripted(nan_steps={2, 3, 7})  # never 3 in a row: training finishes
    _trainer(tmp_path, [guard], 10, None).fit(model, _loader(100), _loader(1))
    assert guard.steps == 3 and guard.losses == 3 and guard.consecutive == 0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert "non-finite gradients" in caplog.text

    guard = NonFiniteGuard(max_consecutive_nonfinite=3)
    model = Scripted(nan_steps=range(4, 100))
    with pytest.raises(NonFiniteTrainingError, match=r"step 6: 3 consecutive .*--model.lr"):
        _trainer(tmp_path / "b", [guard], 50, None).fit(model, _loader(100), _loader(1))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(ValueError, match="max_consecutive_nonfinite"):
        NonFiniteGuard(-1)


class _Boom:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_ckpt_path_errors_are_one_line(tmp_path, capsys):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "global_step": 3}, good)
    check_ckpt_path(str(good))
    check_ckpt_path("last")
    check_ckpt_path(None)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    plain = tmp_path / "plain.ckpt"
    plain.write_bytes(pickle.dumps({"state_dict": _Boom()}))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": _Boom()}, foreign)
    other = tmp_path / "other.ckpt"
    torch.save([1, 2], other)
    cases = {
        tmp_path / "missing.ckpt": "does not exist",
        truncated: "not a readable PyTorch checkpoint",
        plain: "refused|not a readable",
        foreign: "refused: unpickling it would call",
        other: "no 'state_dict'",
    }
    for path, piece in cases.items():
        with pytest.raises(InputError, match=piece) as info:
            check_ckpt_path(str(path))
        assert str(info.value).startswith("--ckpt_path:") and "\n" not in str(info.value)
    assert "pickled code ran" not in capsys.readouterr().out


def test_fit_refuses_a_bad_ckpt_path_before_training(tmp_path, capsys):
    data = make_dataset(tmp_path / "ds", n_train=2, n_val=1, n_test=0, min_s=0.5, max_s=0.6)
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x80\x04 not a checkpoint")
    argv = [
        "fit",
        "--config",
        str(Path(__file__).resolve().parents[1] / "configs" / "tests" / "tiny_stage2.yaml"),
        "--data.data_dir",
        str(data),
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        "--ckpt_path",
        str(bad),
    ]
    capsys.readouterr()
    assert jam_flow_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --ckpt_path:") and "Traceback" not in "\n".join(err)
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_fit_prints_a_diverged_run_as_one_line(monkeypatch, capsys):
    import jam_flow.lightning.cli as lcli

    def diverge(subcommand, argv):
        raise NonFiniteTrainingError("training stopped at step 7: 3 consecutive optimizer steps had NaN/inf")

    monkeypatch.setattr(lcli, "run_cli", diverge)
    assert jam_flow_main(["fit", "--config", "x.yaml"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: training stopped at step 7: 3 consecutive optimizer steps had NaN/inf"]
