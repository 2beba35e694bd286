"""Packed datasets: the training arrays of a clip dataset (format v1) as litdata shards, in a local folder or an
S3-compatible bucket (``jam-flow data pack``), read by the DataModule with the same frame-budget batching.

Dimension legend: n mel frames, c mel channels (100), m motion frames (25 fps), k keypoints (21). No masks here.

```
URL/pack.json        {"format": "jam-flow-packed", "version": 1, "library": "litdata", "arrays": ["mel", "exp"],
                      "num_items": N, "order": ["split", "n_mel", "id"], "shard_size_mb": S, "pack_id": str}
URL/dataset.json     the source's dataset.json (num_clips = N)
URL/manifest.jsonl   the source's clip records in item order (row i is item i; ``features`` / ``audio`` still
                     name the source folder's files, which training does not read)
URL/stats.json       the source's statistics (train split)
URL/index.json, URL/chunk-*.bin
                     litdata shards (``litdata.optimize``); item i = {"id": str, "error": str, "mel": [n, c],
                     "exp": [m, k, 3]} (float32; ``error`` is non-empty for a clip that could not be packed)
```

Items are ordered by split, then mel length, then id: the length-sorted frame-budget batches
(:mod:`jam_flow.data.batching`) are runs of neighbouring items, so a batch reads one or two shards. Which clip
goes to which rank, the shuffle and the resumable position stay with :class:`~jam_flow.data.batching.
DynamicBatchSampler`; litdata's ``StreamingDataset`` is used for random access only (``dataset[i]``), whole shards
are downloaded into a local cache (``JAM_FLOW_CACHE_DIR``, default ``~/.cache/jam-flow``) and read from there.
S3 endpoint and credentials come from boto3's usual environment variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``) or its config files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jam_flow.atomic import atomic_file, replace_dir
from jam_flow.data.dataset import TRAIN_ARRAYS, ClipDataset
from jam_flow.data.format import (
    SPLITS,
    ClipError,
    ClipRecord,
    array_problems,
    load_clip,
    read_dataset_json,
    read_manifest,
    read_stats,
    write_dataset_json,
    write_manifest,
)
from jam_flow.data.text import Vocab
from jam_flow.errors import InputError
from jam_flow.features import MelSettings, MotionSettings

__all__ = [
    "PACK_FORMAT",
    "PACK_VERSION",
    "PACK_FILE",
    "META_FILES",
    "is_remote",
    "is_packed",
    "PackedSource",
    "open_packed",
    "pack_dataset",
    "PackedClipDataset",
    "validate_packed",
    "packed_stats",
    "read_packed_records",
]

PACK_FORMAT = "jam-flow-packed"
PACK_VERSION = 1
PACK_FILE = "pack.json"
META_FILES = (
    "dataset.json",
    "manifest.jsonl",
    "stats.json",
    PACK_FILE,
)  # pack.json last: it marks a finished pack
_ORDER = ["split", "n_mel", "id"]
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------- locations
def is_remote(url: str | Path) -> bool:
    return str(url).startswith("s3://")


def is_packed(url: str | Path) -> bool:
    """An ``s3://`` URL (always packed) or a local folder holding ``pack.json``."""
    return is_remote(url) or (Path(url) / PACK_FILE).is_file()


def _check_url(url: str, arg: str) -> None:
    if "://" in url and not is_remote(url):
        raise InputError(f"{arg}: {url}: only local folders and s3:// URLs are supported")
    if is_remote(url) and not _split_s3(url)[0]:
        raise InputError(f"{arg}: {url}: expected s3://bucket/prefix")


def _split_s3(url: str) -> tuple[str, str]:
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


def _s3_client():
    import boto3

    return boto3.client("s3")  # endpoint, region and credentials from the usual AWS environment / config


def _s3_error(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"


def _allow_http_endpoint() -> None:
    """litdata fetches shards with obstore, which refuses a plain-http endpoint unless told. An ``http://``
    ``AWS_ENDPOINT_URL`` (a MinIO on a private network, the tests' loopback server) is the user's explicit choice,
    so it is allowed in this process (https endpoints and AWS are unaffected)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    if endpoint.startswith("http://"):
        from litdata.streaming import downloader

        options = getattr(downloader, "_OBSTORE_CLIENT_OPTIONS", None)
        if isinstance(options, dict):
            options["allow_http"] = True


def _cache_root() -> Path:
    return Path(os.environ.get("JAM_FLOW_CACHE_DIR") or Path.home() / ".cache" / "jam-flow")


# ----------------------------------------------------------------------------------------------------- opening
@dataclass(frozen=True)
class PackedSource:
    """An opened packed dataset: its URL, a local folder with its metadata files, and its ``pack.json``."""

    url: str
    meta_dir: Path
    pack: dict[str, Any]

    @property
    def chunk_cache(self) -> Path | None:
        """Where litdata keeps downloaded shards (None for a local folder: read in place)."""
        if not is_remote(self.url):
            return None
        return _cache_root() / "chunks" / str(self.pack["pack_id"])


def open_packed(url: str, arg: str = "--data.data_dir") -> PackedSource:
    """Check ``pack.json`` and make the metadata files readable locally (fetched once from S3)."""
    url = str(url).rstrip("/")
    _check_url(url, arg)
    if is_remote(url):
        meta_dir = _fetch_meta(url, arg)
    else:
        meta_dir = Path(url)
        if not meta_dir.is_dir():
            raise InputError(f"{arg}: {url} is not a directory")
    path = meta_dir / PACK_FILE
    if not path.is_file():
        raise InputError(f"{arg}: {url} has no {PACK_FILE} (not a packed dataset)")
    try:
        pack = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{url}/{PACK_FILE}: not valid JSON ({err})") from err
    if not isinstance(pack, dict) or pack.get("format") != PACK_FORMAT:
        raise InputError(f"{url}/{PACK_FILE}: field 'format' must be {PACK_FORMAT!r}")
    if pack.get("version") != PACK_VERSION:
        raise InputError(
            f"{url}/{PACK_FILE}: unsupported version {pack.get('version')!r} (this reader knows {PACK_VERSION})"
        )
    for key, typ in (("num_items", int), ("pack_id", str), ("arrays", list)):
        if not isinstance(pack.get(key), typ):
            raise InputError(f"{url}/{PACK_FILE}: field {key!r} is missing or not a {typ.__name__}")
    if not set(TRAIN_ARRAYS) <= set(pack["arrays"]):
        raise InputError(f"{url}/{PACK_FILE}: field 'arrays' must hold {list(TRAIN_ARRAYS)}")
    return PackedSource(url, meta_dir, pack)


def _fetch_meta(url: str, arg: str) -> Path:
    """Download the small metadata files of ``url`` into ``<cache>/packed/<hash of url>/`` (every call: a
    re-packed URL is picked up; the shards are cached under the new ``pack_id``)."""
    bucket, prefix = _split_s3(url)
    meta_dir = _cache_root() / "packed" / hashlib.sha256(url.encode()).hexdigest()[:16]
    meta_dir.mkdir(parents=True, exist_ok=True)
    client = _s3_client()
    for name in META_FILES:
        key = f"{prefix}/{name}" if prefix else name
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as err:  # botocore: no credentials, no bucket, no key, no connection
            raise InputError(f"{arg}: cannot read {url}/{name} ({_s3_error(err)})") from err
        with atomic_file(meta_dir / name) as tmp:
            tmp.write_bytes(body)
    return meta_dir


# ----------------------------------------------------------------------------------------------------- packing
class _PackItem:
    """litdata ``optimize`` function: a manifest record (JSON) -> the item of its clip (picklable)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        rec = ClipRecord.from_json(row, f"clip {row.get('id')!r}")
        try:
            arrays = load_clip(self.root, rec, keys=TRAIN_ARRAYS)
            error = ""
        except ClipError as err:
            arrays, error = _empty_arrays(), str(err)
        return {"id": rec.id, "error": error, "mel": arrays["mel"], "exp": arrays["exp"]}


def _empty_arrays(mel: MelSettings = MelSettings(), motion: MotionSettings = MotionSettings()) -> dict:
    return {
        "mel": np.zeros((0, mel.n_mels), np.float32),
        "exp": np.zeros((0, motion.num_kp, 3), np.float32),
    }


def _pack_order(records: list[ClipRecord]) -> list[ClipRecord]:
    return sorted(records, key=lambda r: (SPLITS.index(r.split), r.n_mel, r.id))


def _owned(path: Path) -> str | None:
    return None if (path / PACK_FILE).is_file() else f"it holds no {PACK_FILE} (not a packed dataset)"


def pack_dataset(
    src: str | Path, out: str, shard_size_mb: int = 64, workers: int = 1, overwrite: bool = False
) -> dict[str, Any]:
    """Write the packed form of the clip dataset ``src`` to ``out`` (a folder or ``s3://bucket/prefix``);
    returns ``pack.json``. Clips that cannot be loaded are packed as failed items (skipped by the loader)."""
    src = Path(src)
    out = str(out).rstrip("/")
    _check_url(out, "--out")
    if shard_size_mb < 1:
        raise InputError(f"--shard-size-mb: expected >= 1, got {shard_size_mb}")
    if workers < 1:
        raise InputError(f"--workers: expected >= 1, got {workers}")
    if is_packed(src):
        raise InputError(f"DIR: {src} is already packed")
    info = read_dataset_json(src)
    read_stats(src)  # the source must have its statistics
    records = _pack_order(read_manifest(src))
    if not records:
        raise InputError(f"{src / 'manifest.jsonl'}: no clip to pack")
    if is_remote(out):
        bucket, prefix = _split_s3(out)
        old_keys = _check_remote_out(bucket, prefix, overwrite)
        with tempfile.TemporaryDirectory(prefix="jam-flow-pack-") as tmp:
            pack = _write_pack(src, Path(tmp) / "pack", records, info, shard_size_mb, workers)
            new_keys = _upload(Path(tmp) / "pack", bucket, prefix)
        # the replaced pack's objects go only once the new pack is written and uploaded (pack.json last)
        _delete_keys(bucket, sorted(set(old_keys) - new_keys))
        return pack
    with replace_dir(out, overwrite, _owned) as tmp:
        return _write_pack(src, tmp, records, info, shard_size_mb, workers)


def _write_pack(src, dest: Path, records, info, shard_size_mb: int, workers: int) -> dict[str, Any]:
    from litdata import optimize

    dest.mkdir(parents=True, exist_ok=True)
    optimize(
        fn=_PackItem(str(src)),
        inputs=[r.to_json() for r in records],
        output_dir=str(dest.resolve()),
        chunk_bytes=f"{int(shard_size_mb)}MB",
        num_workers=workers,
        reorder_files=False,
        keep_data_ordered=True,
        verbose=False,
        # fork: the packing processes reuse this interpreter (no re-import of __main__, no start-up cost)
        start_method="fork" if "fork" in mp.get_all_start_methods() else None,
    )
    failed = _check_order(dest, records)
    write_manifest(dest, records)
    write_dataset_json(
        dest, type(info)(mel=info.mel, motion=info.motion, num_clips=len(records), source=info.source)
    )
    with atomic_file(dest / "stats.json") as tmp:
        tmp.write_bytes((src / "stats.json").read_bytes())
    digest = hashlib.sha256()
    for name in ("index.json", "manifest.jsonl"):
        digest.update((dest / name).read_bytes())
    pack = {
        "format": PACK_FORMAT,
        "version": PACK_VERSION,
        "library": "litdata",
        "arrays": list(TRAIN_ARRAYS),
        "num_items": len(records),
        "num_failed": len(failed),
        "order": _ORDER,
        "shard_size_mb": int(shard_size_mb),
        "pack_id": digest.hexdigest()[:16],
    }
    with atomic_file(dest / PACK_FILE) as tmp:
        tmp.write_text(json.dumps(pack, indent=2) + "\n", encoding="utf-8")
    if failed:
        log.warning(
            "%s: %d clip(s) could not be packed (skipped in training): %s", src, len(failed), failed[:10]
        )
    return pack


def _check_order(dest: Path, records: list[ClipRecord]) -> list[str]:
    """Item i must be record i (litdata keeps the input order with ``keep_data_ordered``); returns failed ids."""
    from litdata import StreamingDataset

    ds = StreamingDataset(str(dest.resolve()))
    if len(ds) != len(records):
        raise InputError(f"pack: litdata wrote {len(ds)} items for {len(records)} clips")
    failed = []
    for i, rec in enumerate(records):
        item = ds[i]
        if item["id"] != rec.id:
            raise InputError(f"pack: item {i} holds clip {item['id']!r}, expected {rec.id!r}")
        if item["error"]:
            failed.append(rec.id)
    return failed


def _check_remote_out(bucket: str, prefix: str, overwrite: bool) -> list[str]:
    """The keys already under ``s3://bucket/prefix``: none, or (with ``overwrite``) a packed dataset's, which
    :func:`pack_dataset` deletes after the new pack is uploaded. Deletes nothing itself."""
    client = _s3_client()
    url = f"s3://{bucket}/{prefix}"
    try:
        keys = _list_keys(client, bucket, prefix)
    except Exception as err:
        raise InputError(f"--out: cannot list {url} ({_s3_error(err)})") from err
    if not keys:
        return keys
    if not overwrite:
        raise InputError(f"--out: {url} is not empty (pass --overwrite to replace a packed dataset)")
    if f"{prefix}/{PACK_FILE}".lstrip("/") not in keys:
        raise InputError(f"--out: refusing to replace {url}: it holds no {PACK_FILE} (not a packed dataset)")
    return keys


def _delete_keys(bucket: str, keys: list[str]) -> None:
    client = _s3_client()
    for start in range(0, len(keys), 1000):
        batch = [{"Key": k} for k in keys[start : start + 1000]]
        client.delete_objects(Bucket=bucket, Delete={"Objects": batch})


def _list_keys(client, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    kwargs = {"Bucket": bucket, "Prefix": f"{prefix}/" if prefix else ""}
    while True:
        resp = client.list_objects_v2(**kwargs)
        keys += [o["Key"] for o in resp.get("Contents", [])]
        if not resp.get("IsTruncated"):
            return keys
        kwargs["ContinuationToken"] = resp["NextContinuationToken"]


def _upload(folder: Path, bucket: str, prefix: str) -> set[str]:
    """Upload the pack in ``folder`` (shards and litdata's index first, pack.json last); returns the keys."""
    client = _s3_client()
    uploaded: set[str] = set()
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name not in META_FILES)
    for name in [*names, *META_FILES]:  # shards and litdata's index first, pack.json last
        key = f"{prefix}/{name}" if prefix else name
        try:
            client.upload_file(str(folder / name), bucket, key)
        except Exception as err:
            raise InputError(f"--out: cannot upload s3://{bucket}/{key} ({_s3_error(err)})") from err
        uploaded.add(key)
    return uploaded


# ----------------------------------------------------------------------------------------------------- reading
class PackedClipDataset(ClipDataset):
    """:class:`~jam_flow.data.dataset.ClipDataset` over a packed dataset: ``records`` are manifest rows, each
    read from its item (``item_of[id]``) through a litdata ``StreamingDataset`` opened lazily in each process."""

    def __init__(
        self,
        source: PackedSource,
        records: list[ClipRecord],
        item_of: dict[str, int],
        vocab: Vocab,
        mel: MelSettings,
        motion: MotionSettings,
    ) -> None:
        super().__init__(source.meta_dir, records, vocab, mel, motion, audio_features=None)
        self.source = source
        self.item_of = item_of
        self._stream: Any = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers open their own stream
        state = self.__dict__.copy()
        state["_stream"], state["_pid"] = None, -1
        return state

    def stream(self):
        if self._stream is None or self._pid != os.getpid():
            self._stream, self._pid = _open_stream(self.source), os.getpid()
        return self._stream

    def read_arrays(self, rec: ClipRecord) -> dict[str, np.ndarray]:
        index = self.item_of[rec.id]
        try:
            item = self.stream()[index]
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise ClipError(f"{self.source.url}: cannot read item {index} (clip {rec.id!r}): {err}") from err
        return _checked(item, rec, index, self.source.url)


def _open_stream(source: PackedSource):
    from litdata import StreamingDataset

    # local shards are memory-mapped: batch_decode 0 decodes the item asked for only (litdata's default decodes a
    # window of up to 256 neighbours, which the shuffled batch order mostly throws away). Downloaded shards are
    # read as files: there litdata's default window (one read of the shard per window) is the fast choice.
    if not is_remote(source.url):
        return StreamingDataset(str(Path(source.url).resolve()), batch_decode=0)
    _allow_http_endpoint()
    cache = source.chunk_cache
    assert cache is not None
    cache.mkdir(parents=True, exist_ok=True)
    return _WholeShards(StreamingDataset(source.url, cache_dir=str(cache)))


class _WholeShards:
    """litdata fetches single items by byte range until told otherwise; the packed order makes whole shards the
    better unit (a batch is a run of neighbouring items), so the first read is a slice, which makes litdata
    download whole shards into the cache and read every later item from there."""

    def __init__(self, ds) -> None:
        self.ds = ds
        self.whole = False

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int):
        if not self.whole:  # a slice read switches litdata to whole shards kept in the cache
            self.whole = True
            return self.ds[index : index + 1][0]
        return self.ds[index]


def _checked(item: Any, rec: ClipRecord, index: int, url: str) -> dict[str, np.ndarray]:
    where = f"{url} item {index} (clip {rec.id!r})"
    if not isinstance(item, dict) or item.get("id") != rec.id:
        got = item.get("id") if isinstance(item, dict) else type(item).__name__
        raise ClipError(f"{where}: holds clip {got!r} (manifest.jsonl and the shards disagree)")
    if item.get("error"):
        raise ClipError(f"{where}: was not packed ({item['error']})")
    arrays = {k: np.asarray(item[k]) for k in TRAIN_ARRAYS if k in item}
    problems = array_problems(arrays, rec, keys=TRAIN_ARRAYS)
    if problems:
        raise ClipError(f"{where}: " + "; ".join(problems))
    return arrays


def read_packed_records(source: PackedSource) -> tuple[list[ClipRecord], dict[str, int]]:
    """The manifest rows and each clip's item index (row i is item i)."""
    records = read_manifest(source.meta_dir)
    rows = [
        json.loads(line)["id"]
        for line in (source.meta_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    if len(rows) != source.pack["num_items"]:
        raise InputError(
            f"{source.url}/manifest.jsonl: {len(rows)} rows but {PACK_FILE} says {source.pack['num_items']} items"
        )
    item_of: dict[str, int] = {}
    for i, cid in enumerate(rows):
        item_of.setdefault(cid, i)
    return records, item_of


def packed_stats(url: str) -> dict[str, Any]:
    """Statistics (``stats.json`` content) recomputed from a packed dataset's train items (all when none is in
    train); failed items are skipped."""
    from jam_flow.data.format import StatsAccumulator

    source = open_packed(url, arg="DIR")
    records, item_of = read_packed_records(source)
    use = [r for r in records if r.split == "train"] or records
    stream = _open_stream(source)
    acc = StatsAccumulator()
    for rec in use:
        try:
            arrays = _checked(stream[item_of[rec.id]], rec, item_of[rec.id], url)
        except ClipError:
            continue
        acc.update(arrays["mel"], arrays["exp"])
    return acc.result()


# ----------------------------------------------------------------------------------------------------- validation
def validate_packed(url: str) -> list[str]:
    """Every problem of a packed dataset (metadata, item count, each item's id and arrays); [] when sound."""
    try:
        source = open_packed(url, arg="DIR")
    except InputError as err:
        return [str(err)]
    problems: list[str] = []
    for reader in (read_dataset_json, read_stats):
        try:
            reader(source.meta_dir)
        except InputError as err:
            problems.append(str(err))
    try:
        records, item_of = read_packed_records(source)
    except InputError as err:
        return [*problems, str(err)]
    try:
        info = read_dataset_json(source.meta_dir)
        if info.num_clips != len(records):
            problems.append(
                f"{url}/dataset.json: num_clips is {info.num_clips}, the manifest has {len(records)}"
            )
    except InputError:
        pass
    if not any(r.split == "train" for r in records):
        problems.append(f"{url}/manifest.jsonl: no clip in the 'train' split")
    try:
        stream = _open_stream(source)
        n_items = len(stream)
    except Exception as err:  # litdata / botocore: missing index.json, unreachable endpoint
        return [*problems, f"{url}: cannot open the shards ({type(err).__name__}: {err})"]
    if n_items != len(records):
        problems.append(f"{url}/index.json: {n_items} items, the manifest has {len(records)} rows")
    for rec in records:
        index = item_of[rec.id]
        if index >= n_items:
            continue
        try:
            _checked(stream[index], rec, index, url)
        except ClipError as err:
            problems.append(str(err))
    return problems
