"""Dataset format v1: round trip, statistics, and every problem class of validate_dataset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from jam_flow.cli import main as cli_main
from jam_flow.data.format import (
    ClipError,
    ClipRecord,
    DatasetInfo,
    compute_stats,
    load_clip,
    read_manifest,
    read_stats,
    validate_dataset,
    write_clip,
    write_dataset_json,
    write_manifest,
    write_npz,
    write_stats,
)
from jam_flow.errors import InputError
from jam_flow.features import MelSettings, MotionSettings, num_motion_frames

SPLITS = ["train", "train", "val", "test"]


def _clip_arrays(rng, n, m):
    return {
        "mel": rng.normal(-5, 2, (n, 100)),
        "exp": rng.normal(0, 0.01, (m, 21, 3)),
        "pitch": rng.normal(0, 3, m),
        "yaw": rng.normal(0, 3, m),
        "roll": rng.normal(0, 3, m),
        "scale": 1.5 + rng.normal(0, 0.01, (m, 1)),
        "t": rng.normal(0, 0.01, (m, 3)),
        "kp": rng.normal(0, 0.3, (m, 21, 3)),
    }


def make_dataset(root: Path, n_clips: int = 4, with_audio: bool = True) -> list[ClipRecord]:
    rng = np.random.default_rng(0)
    mel = MelSettings()
    records = []
    for i in range(n_clips):
        samples = 24000 + 3000 * i
        duration = samples / 24000
        n, m = mel.num_frames(samples), num_motion_frames(duration)
        rec = ClipRecord(
            id=f"c{i}",
            split=SPLITS[i % 4],
            speaker=f"spk{i % 2}",
            duration=duration,
            n_mel=n,
            n_motion=m,
            text="hello there",
            features="",
        )
        audio = (rng.normal(0, 0.1, samples)).astype(np.float32) if with_audio else None
        records.append(write_clip(root, rec, _clip_arrays(rng, n, m), audio=audio))
    write_manifest(root, records)
    write_stats(root, compute_stats(root, records))
    write_dataset_json(root, DatasetInfo(MelSettings(), MotionSettings(), len(records), "test"))
    return records


def test_round_trip(tmp_path):
    records = make_dataset(tmp_path)
    assert validate_dataset(tmp_path) == []
    back = read_manifest(tmp_path)
    assert back == records
    assert [r.id for r in read_manifest(tmp_path, split="val")] == ["c2"]
    arrays = load_clip(tmp_path, back[1])
    assert arrays["mel"].shape == (back[1].n_mel, 100) and arrays["mel"].dtype == np.float32
    assert arrays["exp"].shape == (back[1].n_motion, 21, 3)
    stats = read_stats(tmp_path)
    assert stats["mel_mean"].shape == (100,) and stats["exp_std"].shape == (21, 3)
    # stats come from the train split only, and equal a direct computation
    train = [load_clip(tmp_path, r) for r in back if r.split == "train"]
    mel_all = np.concatenate([a["mel"] for a in train]).astype(np.float64)
    np.testing.assert_allclose(stats["mel_mean"], mel_all.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["mel_std"], mel_all.std(0), rtol=1e-4)
    assert cli_main(["data", "validate", str(tmp_path)]) == 0


def test_npz_writing_is_byte_deterministic(tmp_path):
    arrays = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.ones(3, np.float32)}
    write_npz(tmp_path / "x.npz", arrays)
    write_npz(tmp_path / "y.npz", dict(reversed(list(arrays.items()))))
    assert (tmp_path / "x.npz").read_bytes() == (tmp_path / "y.npz").read_bytes()
    with np.load(tmp_path / "x.npz") as z:
        np.testing.assert_array_equal(z["b"], arrays["b"])


def test_load_clip_raises_clip_error(tmp_path):
    records = make_dataset(tmp_path)
    rec = records[0]
    (tmp_path / rec.features).write_bytes(b"garbage")
    with pytest.raises(ClipError, match="c0.npz"):
        load_clip(tmp_path, rec)
    (tmp_path / records[1].features).unlink()
    with pytest.raises(ClipError, match="does not exist"):
        load_clip(tmp_path, records[1])
    bad = ClipRecord(**{**records[2].to_json(), "n_mel": records[2].n_mel + 7})
    with pytest.raises(ClipError, match="'mel' has shape"):
        load_clip(tmp_path, bad)


def test_read_manifest_names_file_and_line(tmp_path):
    make_dataset(tmp_path)
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    lines[2] = lines[2].replace('"n_mel": ', '"n_mel": "x", "_": ')
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"manifest.jsonl:3"):
        read_manifest(tmp_path)


def _rewrite_manifest(root: Path, edit) -> None:
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    rows = edit(rows)
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _edit_npz(root: Path, rec: ClipRecord, **changes) -> None:
    arrays = load_clip(root, rec, check=False)
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    write_npz(root / rec.features, arrays)


PLANTS = {
    "dataset_json_missing": (
        lambda r, recs: (r / "dataset.json").unlink(),
        "dataset.json: file does not exist",
    ),
    "dataset_json_version": (
        lambda r, recs: (r / "dataset.json").write_text(
            json.dumps({**json.loads((r / "dataset.json").read_text()), "version": 7})
        ),
        "unsupported format version 7",
    ),
    "dataset_json_settings": (
        lambda r, recs: (r / "dataset.json").write_text(
            json.dumps({**json.loads((r / "dataset.json").read_text()), "mel": {"bogus": 1}})
        ),
        "field 'mel' is not a MelSettings",
    ),
    "num_clips": (
        lambda r, recs: (r / "dataset.json").write_text(
            json.dumps({**json.loads((r / "dataset.json").read_text()), "num_clips": 9})
        ),
        "num_clips is 9 but the manifest has 4 rows",
    ),
    "manifest_missing": (
        lambda r, recs: (r / "manifest.jsonl").unlink(),
        "manifest.jsonl: manifest does not exist",
    ),
    "bad_json_line": (
        lambda r, recs: (r / "manifest.jsonl").write_text((r / "manifest.jsonl").read_text() + "{oops\n"),
        "manifest.jsonl:5: not valid JSON",
    ),
    "missing_field": (
        lambda r, recs: _rewrite_manifest(
            r, lambda rows: [{k: v for k, v in rows[0].items() if k != "speaker"}] + rows[1:]
        ),
        "manifest.jsonl:1: missing field(s) speaker",
    ),
    "wrong_type": (
        lambda r, recs: _rewrite_manifest(r, lambda rows: [{**rows[0], "n_mel": 3.5}] + rows[1:]),
        "manifest.jsonl:1: field 'n_mel' must be an integer",
    ),
    "bad_split": (
        lambda r, recs: _rewrite_manifest(r, lambda rows: [{**rows[0], "split": "dev"}] + rows[1:]),
        "field 'split' must be one of",
    ),
    "no_train": (
        lambda r, recs: _rewrite_manifest(r, lambda rows: [{**x, "split": "val"} for x in rows]),
        "no clip in the 'train' split",
    ),
    "duplicate_id": (
        lambda r, recs: _rewrite_manifest(r, lambda rows: rows + [rows[1]]),
        "manifest.jsonl:5: duplicate clip id 'c1'",
    ),
    "features_missing": (
        lambda r, recs: (r / recs[1].features).unlink(),
        "c1.npz: features file of clip 'c1' does not exist",
    ),
    "features_corrupt": (
        lambda r, recs: (r / recs[1].features).write_bytes(b"PK\x03\x04trunc"),
        "c1.npz: cannot read",
    ),
    "array_missing": (lambda r, recs: _edit_npz(r, recs[0], kp=None), "c0.npz: array 'kp' is missing"),
    "array_dtype": (
        lambda r, recs: _edit_npz(r, recs[0], yaw=np.zeros(recs[0].n_motion, np.float64)),
        "c0.npz: array 'yaw' has dtype float64",
    ),
    "array_shape": (
        lambda r, recs: _edit_npz(r, recs[0], exp=np.zeros((recs[0].n_motion, 20, 3), np.float32)),
        "c0.npz: array 'exp' has shape",
    ),
    "non_finite": (
        lambda r, recs: _edit_npz(r, recs[0], mel=np.full((recs[0].n_mel, 100), np.nan, np.float32)),
        "c0.npz: array 'mel' holds",
    ),
    "pose_range": (
        lambda r, recs: _edit_npz(r, recs[0], roll=np.full(recs[0].n_motion, 400.0, np.float32)),
        "pitch/yaw/roll must be degrees",
    ),
    "n_motion_vs_duration": (
        lambda r, recs: _rewrite_manifest(
            r, lambda rows: [{**rows[0], "duration": rows[0]["duration"] + 0.5}] + rows[1:]
        ),
        "n_motion 25 != ceil(duration * 25)",
    ),
    "n_mel_vs_n_motion": (
        lambda r, recs: _rewrite_manifest(
            r, lambda rows: [{**rows[0], "n_mel": rows[0]["n_mel"] + 20}] + rows[1:]
        ),
        "implies",
    ),
    "audio_missing": (
        lambda r, recs: (r / recs[3].audio).unlink(),
        "c3.wav: audio file of clip 'c3' does not exist",
    ),
    "audio_rate": (
        lambda r, recs: __import__("soundfile").write(r / recs[3].audio, np.zeros(16000, np.float32), 16000),
        "c3.wav: sample rate 16000 Hz",
    ),
    "stats_missing": (
        lambda r, recs: (r / "stats.json").unlink(),
        "stats.json: statistics file does not exist",
    ),
    "stats_shape": (
        lambda r, recs: (r / "stats.json").write_text(
            json.dumps(
                {
                    **json.loads((r / "stats.json").read_text()),
                    "mel": {"mean": [0.0] * 80, "std": [1.0] * 100},
                }
            )
        ),
        "mel.mean has shape [80], expected [100]",
    ),
    "stats_std": (
        lambda r, recs: (r / "stats.json").write_text(
            json.dumps(
                {
                    **json.loads((r / "stats.json").read_text()),
                    "mel": {"mean": [0.0] * 100, "std": [0.0] * 100},
                }
            )
        ),
        "mel.std has values <= 0",
    ),
}


@pytest.mark.parametrize("name", sorted(PLANTS))
def test_validate_reports_planted_problem(tmp_path, name, capsys):
    records = make_dataset(tmp_path)
    plant, expected = PLANTS[name]
    plant(tmp_path, records)
    problems = validate_dataset(tmp_path)
    assert any(expected in p for p in problems), problems
    assert cli_main(["data", "validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert expected in out and "problem(s)" in out


def test_duplicate_id_is_reported_by_id_and_read_once(tmp_path, caplog):
    """A row repeating an id is one problem naming the id (no false count mismatch), and the loaders
    skip it with a warning instead of training the clip twice."""
    make_dataset(tmp_path)
    _rewrite_manifest(tmp_path, lambda rows: rows[:2] + [{**rows[2], "id": "c1"}] + rows[3:])
    problems = validate_dataset(tmp_path)
    assert any("duplicate clip id 'c1'" in p for p in problems), problems
    assert not any("num_clips" in p for p in problems), problems
    ids = [r.id for r in read_manifest(tmp_path)]
    assert ids == ["c0", "c1", "c3"]
    assert "skipping 1 duplicate clip id(s): 'c1' (line 3, first on line 2)" in caplog.text


def test_validate_cli_bad_dir(tmp_path):
    assert cli_main(["data", "validate", str(tmp_path / "nope")]) == 2


def test_num_motion_frames_convention():
    assert num_motion_frames(1.0) == 25 and num_motion_frames(1.001) == 26
    assert num_motion_frames(2.6033333333333335) == math.ceil(2.6033333333333335 * 25)
