"""End-to-end training through `jam-flow fit` (LightningCLI) on tiny configs: fast_dev_run, the Contract run
(last.ckpt + export), exact resume, falling loss on a repeated batch, bad clips, stage-1 -> stage-2 transfer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning_support import make_dataset, read_losses

from jam_flow.atomic import default_file_mode
from jam_flow.cli import main as jam_flow_main
from jam_flow.inference.bundle import load_bundle
from jam_flow.lightning.cli import fit_main, run_cli
from jam_flow.lightning.module import WarmupLinearDecay

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tests"
TINY = str(CONFIGS / "tiny_stage2.yaml")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    return str(
        make_dataset(
            tmp_path_factory.mktemp("data") / "ds", n_train=6, n_val=1, n_test=1, min_s=0.5, max_s=0.8
        )
    )


def _fit(config: str, data: str, root: Path, *extra: str):
    return run_cli(
        "fit", ["--config", config, "--data.data_dir", data, "--trainer.default_root_dir", str(root), *extra]
    )


def _recorder(path: Path) -> list[str]:
    return ["--trainer.callbacks+=lightning_support.LossRecorder", f"--trainer.callbacks.path={path}"]


def test_warmup_then_linear_decay():
    f = WarmupLinearDecay(warmup=4, decay=8)
    assert f(0) == pytest.approx(1e-8) and f(2) == pytest.approx(0.5, abs=1e-6) and f(4) == 1.0
    assert (
        f(8) == pytest.approx(0.5, abs=1e-6)
        and f(12) == pytest.approx(1e-8)
        and f(100) == pytest.approx(1e-8)
    )
    assert WarmupLinearDecay(warmup=0, decay=0)(50) == 1.0


def test_fast_dev_run_with_validation_media(dataset, tmp_path):
    assert (
        fit_main(
            [
                "--config",
                TINY,
                "--data.data_dir",
                dataset,
                "--trainer.fast_dev_run",
                "1",
                "--trainer.default_root_dir",
                str(tmp_path),
            ]
        )
        == 0
    )


def test_contract_resume_and_export(dataset, tmp_path):
    common = [
        "--data.frames_per_batch",
        "150",
        "--media.num_clips",
        "0",
        "--checkpoint.every_n_train_steps",
        "1",
    ]
    straight = _fit(
        TINY, dataset, tmp_path / "a", "--trainer.max_steps", "4", *common, *_recorder(tmp_path / "a.txt")
    )
    assert straight.trainer.num_training_batches >= 3  # step 2 is in the middle of an epoch
    first = _fit(
        TINY, dataset, tmp_path / "b", "--trainer.max_steps", "2", *common, *_recorder(tmp_path / "b.txt")
    )
    assert first.trainer.global_step == 2
    last = list(
        (tmp_path / "b").glob("**/checkpoints/last.ckpt")
    )  # the Contract: OUT/**/checkpoints/last.ckpt
    assert len(last) == 1
    resumed = _fit(
        TINY,
        dataset,
        tmp_path / "b",
        "--trainer.max_steps",
        "4",
        "--ckpt_path",
        str(last[0]),
        *common,
        *_recorder(tmp_path / "b.txt"),
    )
    assert resumed.trainer.global_step == 4
    a, b = read_losses(tmp_path / "a.txt"), read_losses(tmp_path / "b.txt")
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    for step in range(4):
        assert b[step][1] == a[step][1], f"step {step} saw other clips after resuming"
        assert b[step][0] == pytest.approx(a[step][0], rel=1e-5, abs=1e-6), f"step {step}"
    # export (Contract): DIR/model.safetensors + DIR/config.yaml with the EMA weights
    ckpt = sorted((tmp_path / "b").glob("**/checkpoints/last*.ckpt"))[-1]
    out = tmp_path / "export"
    assert jam_flow_main(["export", "--ckpt", str(ckpt), "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and (out / "config.yaml").is_file()
    bundle = load_bundle(out)
    meta = torch.load(ckpt, map_location="cpu", weights_only=True)["jam_flow"]
    for k, v in bundle.model.state_dict().items():
        assert torch.equal(v, meta["ema_state_dict"][k]), k
    assert bundle.config["motion"]["mouth_indices"] == [14, 17, 19, 20] and bundle.stats is not None
    assert jam_flow_main(["export", "--ckpt", str(ckpt), "--out", str(out)]) == 2  # refuses to overwrite
    # --overwrite swaps in a complete export with the usual file modes and no temporary left behind
    assert jam_flow_main(["export", "--ckpt", str(ckpt), "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model.safetensors"]
    assert all(p.stat().st_mode & 0o777 == default_file_mode() for p in out.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export")]
    (out / "notes.txt").write_text("mine")  # not an export any more: --overwrite refuses to delete it
    assert jam_flow_main(["export", "--ckpt", str(ckpt), "--out", str(out), "--overwrite"]) == 2
    assert (out / "notes.txt").read_text() == "mine"
    # validate / test subcommands on the checkpoint
    val = run_cli(
        "validate",
        [
            "--config",
            TINY,
            "--data.data_dir",
            dataset,
            "--trainer.default_root_dir",
            str(tmp_path / "v"),
            "--media.num_clips",
            "0",
            "--ckpt_path",
            str(ckpt),
        ],
    )
    assert "val/loss" in val.trainer.callback_metrics
    test = run_cli(
        "test",
        [
            "--config",
            TINY,
            "--data.data_dir",
            dataset,
            "--trainer.default_root_dir",
            str(tmp_path / "t"),
            "--media.num_clips",
            "0",
            "--ckpt_path",
            str(ckpt),
        ],
    )
    assert "test/loss" in test.trainer.callback_metrics


def test_loss_falls_on_a_repeated_batch(tmp_path):
    data = str(make_dataset(tmp_path / "one", n_train=1, n_val=0, min_s=0.6, max_s=0.6))
    # every step hides both streams, so the losses of different steps are comparable
    _fit(
        TINY,
        data,
        tmp_path / "run",
        "--trainer.max_steps",
        "20",
        "--trainer.limit_val_batches",
        "0",
        "--media.num_clips",
        "0",
        "--model.lr",
        "5e-3",
        "--model.masking.p_both",
        "1",
        "--model.masking.p_motion_only",
        "0",
        "--model.masking.p_audio_only",
        "0",
        *_recorder(tmp_path / "l.txt"),
    )
    losses = [v[0] for _, v in sorted(read_losses(tmp_path / "l.txt").items())]
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_bad_clips_are_skipped_counted_and_logged(tmp_path):
    data = str(make_dataset(tmp_path / "bad", n_train=5, n_val=0, corrupt=1, missing=1))
    cli = _fit(
        TINY,
        data,
        tmp_path / "run",
        "--trainer.max_steps",
        "3",
        "--media.num_clips",
        "0",
        "--data.frames_per_batch",
        "400",
    )
    assert cli.trainer.global_step == 3
    assert cli.trainer.callback_metrics["data/skipped_clips"].item() == 2  # 1 missing at setup + 1 corrupt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(cli.trainer.logger.log_dir)))
    events.Reload()
    assert events.Scalars("data/skipped_clips")[-1].value == 2


@pytest.mark.slow
def test_stage1_runs_and_stage2_initialisation(dataset, tmp_path):
    quick = ["--trainer.max_steps", "1", "--trainer.limit_val_batches", "0", "--media.num_clips", "0"]
    _fit(str(CONFIGS / "tiny_stage1_motion.yaml"), dataset, tmp_path / "m", *quick)
    _fit(str(CONFIGS / "tiny_stage1_audio.yaml"), dataset, tmp_path / "a", *quick)
    motion_ckpt = next((tmp_path / "m").glob("**/checkpoints/last.ckpt"))
    audio_ckpt = next((tmp_path / "a").glob("**/checkpoints/last.ckpt"))
    cli = _fit(
        TINY,
        dataset,
        tmp_path / "j",
        "--trainer.max_steps",
        "0",
        "--media.num_clips",
        "0",
        "--model.init_motion_from",
        str(motion_ckpt),
        "--model.init_audio_from",
        str(audio_ckpt),
    )
    net = cli.model.net
    motion_src = torch.load(motion_ckpt, weights_only=True)["jam_flow"]["ema_state_dict"]
    for k, v in net.motion.state_dict().items():
        want = motion_src[k][:, : v.shape[1]] if k == "input_embed.proj.weight" else motion_src[k]
        assert torch.equal(v, want), k
    assert motion_src["input_embed.proj.weight"].shape[1] == net.motion.input_embed.proj.weight.shape[1] + 100
    audio_src = load_bundle(audio_ckpt).model.state_dict()
    assert all(torch.equal(v, audio_src[k]) for k, v in net.audio.state_dict().items())


@pytest.mark.slow
def test_ddp_two_cpu_processes(dataset, tmp_path):
    """`jam-flow fit` with DDP on 2 CPU processes (gloo): same step count, disjoint batches per step."""
    import os
    import subprocess
    import sys

    tests_dir = str(Path(__file__).resolve().parent)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "jam_flow.cli",
        "fit",
        "--config",
        TINY,
        "--data.data_dir",
        dataset,
        "--trainer.default_root_dir",
        str(tmp_path / "ddp"),
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.max_steps",
        "3",
        "--data.frames_per_batch",
        "150",
        "--media.num_clips",
        "0",
        "--trainer.enable_progress_bar",
        "false",
        *_recorder(tmp_path / "l.txt"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = read_losses(f"{tmp_path / 'l.txt'}.rank0"), read_losses(f"{tmp_path / 'l.txt'}.rank1")
    assert sorted(r0) == sorted(r1) == [0, 1, 2]
    for step in range(3):
        assert not set(r0[step][1].split(",")) & set(r1[step][1].split(",")), (
            f"step {step}: ranks share clips"
        )
    assert list((tmp_path / "ddp").glob("**/checkpoints/last.ckpt"))
