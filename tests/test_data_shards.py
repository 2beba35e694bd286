"""Preprocessing across machines: `--shard I/N` parts merged exactly by `jam-flow data stats`, long videos cut at
pauses (`--max-clip-s`), one decoding pass equal to the two-pass path, resume without loading arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from test_data_preprocess import make_video  # noqa: E402

from jam_flow.cli import main as cli_main  # noqa: E402
from jam_flow.data.format import StatsAccumulator, read_manifest, read_stats, validate_dataset  # noqa: E402
from jam_flow.data.preprocess import PreprocessConfig, _finished, _selected_frames, extract_video_motion  # noqa: E402
from jam_flow.data.segments import ClipMotion, cut_points  # noqa: E402
from jam_flow.data.shards import in_shard, parse_shard  # noqa: E402
from jam_flow.data.sources import discover  # noqa: E402
from jam_flow.errors import InputError  # noqa: E402


def _argv(root: Path, out: Path, ckpt: Path, *extra: str) -> list[str]:
    return [
        "preprocess",
        "--dataset",
        "folder",
        "--root",
        str(root),
        "--out",
        str(out),
        "--motion-extractor",
        str(ckpt),
        "--face-detector",
        "full-frame",
        "--device",
        "cpu",
        "--crop-size",
        "32",
        *extra,
    ]


def test_moments_merge_exactly():
    rng = np.random.default_rng(0)
    parts = [(rng.normal(3, 2, (n, 100)), rng.normal(0, 0.1, (n // 3 + 1, 21, 3))) for n in (5, 40, 17)]
    whole, merged = StatsAccumulator(), StatsAccumulator()
    for mel, exp in parts:
        whole.update(mel, exp)
        one = StatsAccumulator()
        one.update(mel, exp)
        merged.merge(StatsAccumulator.from_moments(json.loads(json.dumps(one.moments())), "part"))
    a, b = whole.result(), merged.result()
    np.testing.assert_allclose(a["mel"]["mean"], b["mel"]["mean"], rtol=1e-12)
    np.testing.assert_allclose(a["mel"]["std"], b["mel"]["std"], rtol=1e-12)
    np.testing.assert_allclose(a["motion"]["exp_std"], b["motion"]["exp_std"], rtol=1e-12)
    with pytest.raises(InputError, match="mel.count"):
        StatsAccumulator.from_moments({"mel": {"count": -1, "mean": [0] * 100, "m2": [0] * 100}}, "x")


def test_shard_argument_and_assignment():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "a/b", "1", "-1/2"):
        with pytest.raises(InputError, match="--shard"):
            parse_shard(bad)
    ids = [f"clip{i}" for i in range(200)]
    owners = [[i for i in range(3) if in_shard(cid, i, 3)] for cid in ids]
    assert all(len(o) == 1 for o in owners) and {o[0] for o in owners} == {0, 1, 2}


def test_cut_points_land_in_pauses_on_the_motion_grid():
    sr, fps = 24000, 25
    rng = np.random.default_rng(0)
    wave = rng.normal(0, 0.3, 10 * sr).astype(np.float32)
    wave[int(4.0 * sr) : int(4.4 * sr)] *= 1e-4  # a pause
    wave[int(8.0 * sr) : int(8.3 * sr)] *= 1e-4
    pieces = cut_points(len(wave), wave, sr, fps, max_s=6.0)
    assert pieces[0][0] == 0 and pieces[-1][1] == len(wave)
    assert all(a == pb for (_, pb), (a, _) in zip(pieces, pieces[1:], strict=False))
    assert all((b - a) <= 6.0 * sr for a, b in pieces)
    assert all(a % (sr // fps) == 0 for a, _ in pieces)
    assert 4.0 * sr <= pieces[1][0] <= 4.4 * sr
    assert cut_points(len(wave), wave, sr, fps, max_s=0) == [(0, len(wave))]
    assert cut_points(len(wave), wave, sr, fps, max_s=10.0) == [(0, len(wave))]


@pytest.mark.parametrize("detector", ["haar", "full-frame"])
def test_one_decoding_pass_equals_the_two_pass_path(tmp_path, extractor_ckpt, detector):
    pytest.importorskip("cv2")
    from jam_flow.liveportrait import load_motion_extractor
    from jam_flow.liveportrait.face import FaceDetector

    video = make_video(tmp_path / "v.mp4", 1.2, size=128)
    cfg = PreprocessConfig(
        motion_extractor=str(extractor_ckpt),
        face_detector=None if detector == "haar" else detector,
        detect_every=3,
        crop_size=32,
        batch_size=7,
        min_face_ratio=0.0,
    )
    extractor, det = load_motion_extractor(cfg.motion_extractor, "cpu"), FaceDetector(cfg.face_detector)
    n = 30
    two, boxes2 = extract_video_motion(video, n, cfg, extractor, det)
    motion = ClipMotion(n, cfg, extractor, det)
    for j, rgb in _selected_frames(video, n, 25):
        motion.push(j, rgb)
        assert len(motion.pending) <= cfg.detect_every + cfg.box_smoothing  # only a few frames wait
    one, boxes1 = motion.finish()
    assert boxes1 == boxes2
    for key in two:
        assert np.array_equal(one[key], two[key]), key


def test_long_videos_are_cut_and_shards_merge_to_the_whole_run(tmp_path, extractor_ckpt, capsys, monkeypatch):
    root = tmp_path / "videos"
    root.mkdir()
    make_video(root / "long.mp4", 2.6)
    make_video(root / "a.mp4", 0.6)
    make_video(root / "b.mp4", 0.7)
    whole = tmp_path / "whole"
    assert cli_main(_argv(root, whole, extractor_ckpt, "--max-clip-s", "1.2")) == 0
    assert validate_dataset(whole) == []
    records = read_manifest(whole)
    pieces = [r for r in records if r.id.startswith("long__p")]
    assert len(pieces) >= 3 and all(r.duration <= 1.2 for r in pieces) and all(r.text == "" for r in pieces)
    assert sum(r.n_motion for r in pieces) == 65  # 2.6 s at 25 fps: the pieces partition the video
    # resume: a finished source (cut or not) is recognised without loading a single array
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("an array was loaded"))
    for src in discover("folder", root)[0]:
        done = _finished(whole, src)
        assert done is not None and done[0]
    monkeypatch.undo()
    # the same work in 2 shards into one folder, then merged by `jam-flow data stats`
    sharded = tmp_path / "sharded"
    for i in (0, 1):
        assert cli_main(_argv(root, sharded, extractor_ckpt, "--max-clip-s", "1.2", "--shard", f"{i}/2")) == 0
    assert not (sharded / "manifest.jsonl").exists()
    assert cli_main(["data", "stats", str(sharded)]) == 0
    assert "merged 2 shards" in capsys.readouterr().out
    assert validate_dataset(sharded) == []
    assert [r.to_json() for r in read_manifest(sharded)] == [
        r.to_json() for r in sorted(records, key=lambda r: (["train", "val", "test"].index(r.split), r.id))
    ]
    a, b = read_stats(whole), read_stats(sharded)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=0)  # float32 files of float64 merges
    # a missing shard is refused in one line
    (sharded / "shards" / "moments-1-of-2.json").unlink()
    assert cli_main(["data", "stats", str(sharded)]) == 2
    assert "shard(s) 1/2 missing" in capsys.readouterr().err
