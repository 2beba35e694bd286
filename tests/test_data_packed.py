"""Packed datasets (litdata shards): pack, validate, train batches equal to the clip folder's, `--ckpt_path last`
across version folders, and per-micro-batch random draws under gradient accumulation."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from lightning_support import make_dataset

from jam_flow.cli import main as jam_flow_main
from jam_flow.data.packed import is_packed, pack_dataset, validate_packed
from jam_flow.lightning.cli import newest_checkpoint, run_cli
from jam_flow.lightning.datamodule import JAMFlowDataModule
from jam_flow.lightning.module import JAMFlowModule, _step_seed

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "tests" / "tiny_stage2.yaml")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("src") / "ds", n_train=14, n_val=3, corrupt=1)


@pytest.fixture(scope="module")
def packed(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "pk"
    pack_dataset(source, str(out), shard_size_mb=1)
    return out


def _batches(data: str, **kw) -> list[dict]:
    dm = JAMFlowDataModule(data, frames_per_batch=300, max_samples=4, num_workers=0, **kw)
    dm.setup("fit")
    loader = dm.train_dataloader()
    out = []
    for epoch in range(2):
        loader.batch_sampler.set_epoch(epoch)
        out += list(loader)
    return out


def test_packed_batches_equal_the_clip_folder(source, packed):
    assert is_packed(packed) and not is_packed(source) and is_packed("s3://bucket/prefix")
    pack = json.loads((packed / "pack.json").read_text())
    assert pack["arrays"] == ["mel", "exp"] and pack["num_items"] == 17 and pack["num_failed"] == 1
    a, b = _batches(str(source)), _batches(str(packed))
    assert len(a) == len(b) >= 4
    for x, y in zip(a, b, strict=True):
        assert (
            x["ids"] == y["ids"] and x["skipped_ids"] == y["skipped_ids"] and x["position"] == y["position"]
        )
        if "mel" in x:
            for key in ("mel", "exp", "text", "audio_mask", "motion_mask"):
                assert torch.equal(x[key], y[key]), key
    skipped = [e for x in b for e in x["skipped_errors"]]
    assert len(skipped) == 2 and "was not packed" in skipped[0]  # the corrupt clip, once per epoch


def test_items_are_in_length_order_per_split(packed):
    rows = [json.loads(line) for line in (packed / "manifest.jsonl").read_text().splitlines()]
    keys = [(["train", "val", "test"].index(r["split"]), r["n_mel"], r["id"]) for r in rows]
    assert keys == sorted(keys)


def test_pack_and_validate_commands(source, tmp_path, capsys):
    out = tmp_path / "pk"
    assert jam_flow_main(["data", "pack", str(source), "--out", str(out), "--shard-size-mb", "1"]) == 0
    assert jam_flow_main(["data", "validate", str(out)]) == 1  # the corrupt clip is reported
    assert "was not packed" in capsys.readouterr().out
    assert jam_flow_main(["data", "pack", str(source), "--out", str(out)]) == 2  # not empty
    assert jam_flow_main(["data", "pack", str(source), "--out", str(out), "--overwrite"]) == 0
    assert jam_flow_main(["data", "pack", str(source), "--out", "gs://b/p"]) == 2
    assert (
        jam_flow_main(["data", "pack", str(source), "--out", str(tmp_path / "x"), "--shard-size-mb", "0"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err and all(line.startswith("error: ") for line in err)
    good = make_dataset(tmp_path / "good", n_train=4, n_val=1)
    assert jam_flow_main(["data", "pack", str(good), "--out", str(tmp_path / "gp")]) == 0
    assert validate_packed(str(tmp_path / "gp")) == []
    # a manifest that disagrees with the shards is found
    man = tmp_path / "gp" / "manifest.jsonl"
    lines = man.read_text().splitlines()
    man.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")
    problems = validate_packed(str(tmp_path / "gp"))
    assert len(problems) == 2 and all("manifest.jsonl and the shards disagree" in p for p in problems)


def test_packed_data_dir_errors_are_one_line(tmp_path):
    from jam_flow.errors import InputError

    (tmp_path / "pack.json").write_text('{"format": "other"}')
    with pytest.raises(InputError, match="pack.json: field 'format'"):
        JAMFlowDataModule(str(tmp_path)).setup("fit")
    with pytest.raises(InputError, match="wav2vec2: a packed dataset"):
        JAMFlowDataModule("s3://bucket/prefix", audio_features="wav2vec2").setup("fit")


def test_ckpt_path_last_finds_the_newest_run_in_any_version_folder(tmp_path):
    assert newest_checkpoint(tmp_path) is None and newest_checkpoint(tmp_path / "absent") is None
    old = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    new = tmp_path / "lightning_logs" / "version_3" / "checkpoints" / "last.ckpt"
    hpc = tmp_path / "hpc_ckpt_1.ckpt"
    for i, path in enumerate((new, old, hpc)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, ns=(time.time_ns(), 1_000_000_000 * (i + 1)))
    assert newest_checkpoint(tmp_path) == hpc
    os.utime(new, ns=(time.time_ns(), 9_000_000_000))
    assert newest_checkpoint(tmp_path) == new


def test_fit_ckpt_path_last_resumes_across_version_folders(source, tmp_path):
    common = ["--config", TINY, "--data.data_dir", str(source), "--trainer.default_root_dir", str(tmp_path)]
    common += [
        "--data.frames_per_batch",
        "150",
        "--media.num_clips",
        "0",
        "--checkpoint.every_n_train_steps",
        "1",
    ]
    first = run_cli(
        "fit", [*common, "--trainer.max_steps", "2", "--ckpt_path", "last"]
    )  # nothing yet: new run
    assert first.trainer.global_step == 2
    resumed = run_cli("fit", [*common, "--trainer.max_steps", "3", "--ckpt_path", "last"])
    assert resumed.trainer.global_step == 3
    assert resumed.trainer.ckpt_path.endswith("version_0/checkpoints/last.ckpt")
    assert (tmp_path / "lightning_logs" / "version_1").is_dir()


def test_accumulated_micro_batches_draw_differently(tmp_path, monkeypatch):
    source = make_dataset(tmp_path / "clean", n_train=6, n_val=1)
    seeds: list[tuple[int, int, int]] = []
    original = JAMFlowModule.compute_loss

    def record(self, fb, forward_fn, generator):
        if self.training:
            seeds.append((int(self.global_step), generator.initial_seed(), torch.initial_seed()))
        return original(self, fb, forward_fn, generator)

    monkeypatch.setattr(JAMFlowModule, "compute_loss", record)
    args = ["--config", TINY, "--data.data_dir", str(source), "--trainer.default_root_dir", str(tmp_path)]
    args += ["--data.frames_per_batch", "150", "--media.num_clips", "0", "--trainer.max_steps", "2"]
    run_cli("fit", [*args, "--trainer.accumulate_grad_batches", "2", "--trainer.limit_val_batches", "0"])
    assert [s[0] for s in seeds] == [0, 0, 1, 1]
    for step in (0, 1):
        (_, g0, t0), (_, g1, t1) = [s for s in seeds if s[0] == step]
        assert g0 != g1 and t0 != t1, f"step {step}: both micro-batches drew from the same state"
        assert g0 == _step_seed(0, 0, step)  # micro-batch 0 draws what a run without accumulation draws


def test_slurm_template_parses_and_uses_real_options(capsys):
    import re
    import subprocess

    path = Path(__file__).resolve().parents[1] / "configs" / "slurm" / "fit.sbatch"
    subprocess.run(["bash", "-n", str(path)], check=True)
    text = path.read_text()
    assert "#SBATCH --requeue" in text and "#SBATCH --signal=SIGUSR1@" in text and "--ckpt_path last" in text
    with pytest.raises(SystemExit):
        run_cli("fit", ["--help"])
    options = set(re.findall(r"--[a-z_]+(?:\.[a-z_]+)*", capsys.readouterr().out))
    used = set(re.findall(r"--(?:trainer|data)\.[a-z_]+", text))
    assert used and used <= options, used - options


class _FakeS3:
    """The few S3 calls packing makes, over a dict (key -> bytes); ``fail_upload`` breaks the n-th upload."""

    def __init__(self, objects: dict[str, bytes], fail_upload: int | None = None) -> None:
        self.objects, self.fail_upload, self.uploads = objects, fail_upload, 0

    def list_objects_v2(self, Bucket, Prefix, **_):  # noqa: N803 (boto3's names)
        return {"Contents": [{"Key": k} for k in sorted(self.objects) if k.startswith(Prefix)]}

    def delete_objects(self, Bucket, Delete):  # noqa: N803
        for obj in Delete["Objects"]:
            self.objects.pop(obj["Key"], None)

    def upload_file(self, filename, bucket, key):
        self.uploads += 1
        if self.uploads == self.fail_upload:
            raise OSError("connection reset")
        self.objects[key] = Path(filename).read_bytes()


def test_s3_overwrite_removes_the_old_pack_only_after_the_new_one_is_uploaded(source, monkeypatch):
    import jam_flow.data.packed as packed_mod
    from jam_flow.errors import InputError

    old = {"pre/pack.json": b"{}", "pre/old-0.bin": b"old", "pre/stale-9-9.bin": b"old"}
    fake = _FakeS3(dict(old), fail_upload=2)
    monkeypatch.setattr(packed_mod, "_s3_client", lambda: fake)
    with pytest.raises(InputError, match="cannot upload"):
        pack_dataset(source, "s3://bucket/pre", shard_size_mb=1, overwrite=True)
    assert all(fake.objects[k] == v for k, v in old.items())  # a failed upload deletes nothing
    fake.fail_upload = None
    pack_dataset(source, "s3://bucket/pre", shard_size_mb=1, overwrite=True)
    assert "pre/stale-9-9.bin" not in fake.objects  # the old pack's leftovers go after the upload
    assert json.loads(fake.objects["pre/pack.json"])["num_items"] == 17
