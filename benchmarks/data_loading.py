"""Training data loading: clips/s and mel frames/s of the DataModule's loader from a per-clip folder, from local
litdata shards and from shards served by an S3-compatible server on loopback (moto), plus start-up time and
memory per loader worker.

    python benchmarks/data_loading.py --clips 10000 --json benchmarks/results/data_loading_cpu.json

Per source: ``startup_s`` (DataModule setup + loader start until the first batch), then two full epochs of the
training loader (``frames_per_batch`` 38400, ``max_samples`` 64, shuffled batch order, ``--workers`` persistent
workers): ``clips_per_s`` / ``frames_per_s`` of each epoch (for S3 the first epoch downloads the shards into the
local cache, the second reads the cache), ``read_clips_per_s`` (the dataset's reads alone, one process, no
collation), and the resident / proportional set size of each worker process after the epochs (``worker_rss_mb``,
``worker_pss_mb``; forked workers share the parent's pages, PSS splits them). The clips are synthetic and short
(0.3-0.8 s, random arrays); every file was just written, so all sources are read from the page cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table, write_json  # noqa: E402


def make_clips(root: Path, n: int, seed: int = 0) -> None:
    """``n`` short synthetic clips in format v1 (random arrays of the right shapes), with their statistics."""
    from jam_flow.data.format import (
        ClipRecord,
        DatasetInfo,
        StatsAccumulator,
        write_clip,
        write_dataset_json,
        write_manifest,
        write_stats,
    )
    from jam_flow.features import MelSettings, MotionSettings, num_motion_frames

    mel_s, mot_s = MelSettings(), MotionSettings()
    rng = np.random.default_rng(seed)
    acc = StatsAccumulator()
    records = []
    for i in range(n):
        dur = float(np.round(rng.uniform(0.3, 0.8), 3))
        n_mel = mel_s.num_frames(round(dur * mel_s.sample_rate))
        m = num_motion_frames(dur, mot_s.fps)
        arrays = {
            "mel": rng.standard_normal((n_mel, 100), dtype=np.float32) - 5,
            "exp": 0.01 * rng.standard_normal((m, 21, 3), dtype=np.float32),
            "pitch": np.zeros(m, np.float32),
            "yaw": np.zeros(m, np.float32),
            "roll": np.zeros(m, np.float32),
            "scale": np.ones((m, 1), np.float32),
            "t": np.zeros((m, 3), np.float32),
            "kp": rng.standard_normal((m, 21, 3), dtype=np.float32),
        }
        split = "train" if i % 50 else "val"
        rec = ClipRecord(f"c{i:06d}", split, f"spk{i % 7}", dur, n_mel, m, "hello there", "")
        records.append(write_clip(root, rec, arrays))
        if split == "train":
            acc.update(arrays["mel"], arrays["exp"])
    write_manifest(root, records)
    write_dataset_json(root, DatasetInfo(mel=mel_s, motion=mot_s, num_clips=n, source="benchmark"))
    write_stats(root, acc.result())


def _worker_memory() -> list[dict]:
    import psutil

    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            full = child.memory_full_info()
            out.append({"rss_mb": full.rss / 2**20, "pss_mb": getattr(full, "pss", 0) / 2**20})
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def measure(source: str, data: str, workers: int, epochs: int = 2) -> dict:
    from jam_flow.lightning.datamodule import JAMFlowDataModule

    t0 = time.perf_counter()
    dm = JAMFlowDataModule(data, frames_per_batch=38400, max_samples=64, num_workers=workers)
    dm.setup("fit")
    loader = dm.train_dataloader()
    ds = dm.datasets["train"]
    record = {"source": source, "workers": workers, "clips": len(ds)}
    it = iter(loader)
    first = next(it)
    record["startup_s"] = time.perf_counter() - t0
    del first, it
    for epoch in range(epochs):
        loader.batch_sampler.set_epoch(epoch + 1)
        clips = frames = 0
        t = time.perf_counter()
        for batch in loader:
            clips += len(batch["ids"])
            frames += int(batch["audio_mask"].sum()) if "audio_mask" in batch else 0
        dt = time.perf_counter() - t
        record[f"epoch{epoch + 1}_clips_per_s"] = clips / dt
        record[f"epoch{epoch + 1}_frames_per_s"] = frames / dt
        record[f"epoch{epoch + 1}_s"] = dt
    mem = _worker_memory()
    record["worker_rss_mb"] = float(np.mean([m["rss_mb"] for m in mem])) if mem else 0.0
    record["worker_pss_mb"] = float(np.mean([m["pss_mb"] for m in mem])) if mem else 0.0
    record["num_worker_processes"] = len(mem)
    del loader
    n = min(len(ds), 3000)
    t = time.perf_counter()
    for rec in ds.records[:n]:
        ds.read_arrays(rec)
    record["read_clips_per_s"] = n / (time.perf_counter() - t)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=10000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--shard-size-mb", type=int, default=64)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from moto.server import ThreadedMotoServer

    from jam_flow.data.packed import pack_dataset

    tmp = Path(tempfile.mkdtemp(prefix="jam-flow-bench-data-"))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    try:
        t = time.perf_counter()
        make_clips(tmp / "clips", args.clips)
        make_s = time.perf_counter() - t
        t = time.perf_counter()
        pack_dataset(tmp / "clips", str(tmp / "shards"), args.shard_size_mb)
        pack_s = time.perf_counter() - t
        server.start()
        host, port = server.get_host_and_port()
        os.environ.update(
            AWS_ENDPOINT_URL=f"http://{host}:{port}",
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
            JAM_FLOW_CACHE_DIR=str(tmp / "cache"),
        )
        import boto3

        boto3.client("s3").create_bucket(Bucket="jam-flow-bench")
        url = "s3://jam-flow-bench/shards"
        t = time.perf_counter()
        pack_dataset(tmp / "clips", url, args.shard_size_mb)
        upload_s = time.perf_counter() - t
        records = [
            measure("per-clip folder", str(tmp / "clips"), args.workers),
            measure("local shards", str(tmp / "shards"), args.workers),
            measure("loopback S3 shards", url, args.workers),
        ]
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    base = records[0]["epoch2_clips_per_s"]
    for r in records:
        r["speedup_vs_per_clip"] = r["epoch2_clips_per_s"] / base
    cols = [
        "source",
        "startup_s",
        "epoch1_clips_per_s",
        "epoch2_clips_per_s",
        "epoch2_frames_per_s",
        "read_clips_per_s",
        "worker_rss_mb",
        "worker_pss_mb",
        "speedup_vs_per_clip",
    ]
    meta = machine("cpu")
    meta["note"] = "shared 2-core CPU, loaded by other jobs while measured"
    setup = {
        "clips": args.clips,
        "workers": args.workers,
        "shard_size_mb": args.shard_size_mb,
        "frames_per_batch": 38400,
        "max_samples": 64,
        "make_clips_s": make_s,
        "pack_local_s": pack_s,
        "pack_and_upload_s3_s": upload_s,
    }
    print(f"machine: {meta.get('cpu')} | load {meta['loadavg_1_5_15']} | {setup}")
    print(table(records, cols))
    if args.json:
        write_json(args.json, {"machine": meta, "setup": setup, "records": records})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
