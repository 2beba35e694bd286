"""Scale tests with real parts (slow): a packed dataset uploaded to an S3-compatible server on loopback (moto) and
trained from on 2 DDP CPU processes (gloo), and a run killed with SIGTERM mid-epoch then resumed with
`--ckpt_path last`. Run with `pytest -m slow tests/test_data_scale.py`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from lightning_support import make_dataset

from jam_flow.data.format import read_manifest
from jam_flow.data.packed import pack_dataset, validate_packed

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
TINY = str(TESTS.parent / "configs" / "tests" / "tiny_stage2.yaml")
BUCKET = "jam-flow-test"
N_TRAIN = 40  # max_samples 2 with a budget that never binds: 20 batches an epoch, 10 per rank with 2 ranks


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 (random port) and the environment that points boto3 / litdata at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "JAM_FLOW_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("src") / "ds", n_train=N_TRAIN, n_val=0, min_s=0.4, max_s=0.7)


def _fit_cmd(data: str, root: Path, record: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jam_flow.cli",
        "fit",
        "--config",
        TINY,
        "--data.data_dir",
        data,
        "--trainer.default_root_dir",
        str(root),
        "--data.frames_per_batch",
        "100000",
        "--data.max_samples",
        "2",
        "--data.num_workers",
        "1",
        "--media.num_clips",
        "0",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.callbacks+=lightning_support.LossRecorder",
        f"--trainer.callbacks.path={record}",
        *extra,
    ]


def _env(extra: dict | None = None) -> dict:
    return {
        **os.environ,
        **(extra or {}),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }


def _trace(path: Path) -> list[tuple[int, str, list[str]]]:
    """(step, loss text, clip ids) per recorded batch, in order (a repeated step is kept twice)."""
    rows = []
    for line in path.read_text().splitlines():
        step, loss, ids = (line.split(" ") + [""])[:3]
        rows.append((int(step), loss, ids.split(",") if ids else []))
    return rows


def _ddp(data: str, root: Path, record: Path, env: dict, *extra: str) -> None:
    cmd = _fit_cmd(data, root, record, "--trainer.devices", "2", "--trainer.strategy", "ddp", *extra)
    proc = subprocess.run(cmd, env=_env(env), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_s3_pack_then_train_on_two_ddp_processes(s3_env, source, tmp_path):
    url = f"s3://{BUCKET}/packed/ds"
    pack = pack_dataset(source, url, shard_size_mb=1)
    assert pack["num_items"] == N_TRAIN and pack["num_failed"] == 0
    assert validate_packed(url) == []
    steps = ["--trainer.max_steps", "20"]
    # shuffling off: every rank's batches (ids, and so losses) equal those read from the local clip folder
    _ddp(url, tmp_path / "s3", tmp_path / "s3.txt", s3_env, *steps, "--data.shuffle", "false")
    _ddp(str(source), tmp_path / "local", tmp_path / "local.txt", s3_env, *steps, "--data.shuffle", "false")
    for rank in (0, 1):
        remote, local = _trace(tmp_path / f"s3.txt.rank{rank}"), _trace(tmp_path / f"local.txt.rank{rank}")
        assert [r[0] for r in remote] == list(range(20))
        assert remote == local, f"rank {rank}: the s3 batches differ from the clip folder's"
    # shuffling on: within each epoch (10 steps per rank) every clip is seen exactly once across the ranks
    _ddp(url, tmp_path / "shuf", tmp_path / "shuf.txt", s3_env, *steps)
    traces = [_trace(tmp_path / f"shuf.txt.rank{rank}") for rank in (0, 1)]
    assert [len(t) for t in traces] == [20, 20]  # the same number of batches on every rank
    train_ids = sorted(r.id for r in read_manifest(source) if r.split == "train")
    orders = []
    for epoch in (0, 1):
        seen = Counter(i for t in traces for step, _, ids in t if step // 10 == epoch for i in ids)
        assert sorted(seen) == train_ids and set(seen.values()) == {1}, f"epoch {epoch}: {seen}"
        orders.append([ids for step, _, ids in traces[0] if step // 10 == epoch])
    assert orders[0] != orders[1]  # reshuffled per epoch


def test_sigterm_mid_epoch_then_ckpt_path_last_is_bit_identical(source, tmp_path):
    packed = tmp_path / "packed"
    pack_dataset(source, str(packed), shard_size_mb=1)
    args = ["--trainer.max_steps", "14", "--checkpoint.every_n_train_steps", "3"]
    straight = subprocess.run(
        _fit_cmd(str(packed), tmp_path / "a", tmp_path / "a.txt", *args),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert straight.returncode == 0, straight.stderr[-4000:]
    # the same run, killed with SIGTERM once it is past step 7 (20 batches an epoch: mid-epoch), then requeued
    record = tmp_path / "b.txt"
    proc = subprocess.Popen(
        _fit_cmd(str(packed), tmp_path / "b", record, *args),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if record.is_file() and len(record.read_text().splitlines()) >= 8:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, (
        f"status {proc.returncode}: {err[-2000:]}"
    )  # stopped by SIGTERM, not finished
    killed_at = len(_trace(record))
    assert 8 <= killed_at < 14, err[-2000:]
    resumed = subprocess.run(
        _fit_cmd(str(packed), tmp_path / "b", record, *args, "--ckpt_path", "last"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert (tmp_path / "b" / "lightning_logs" / "version_1").is_dir()  # a new version folder, yet resumed
    a = {step: (loss, ids) for step, loss, ids in _trace(tmp_path / "a.txt")}
    b = _trace(record)
    restart = b[killed_at][0]
    assert 0 < restart <= killed_at and restart % 3 == 0  # from the last checkpoint, not from step 0
    assert sorted({s for s, _, _ in b}) == list(range(14))
    for step, loss, ids in b:  # steps run twice (after the checkpoint, before the kill) agree too
        assert (loss, ids) == a[step], f"step {step}: {loss} {ids} != {a[step]}"
