"""Synthetic corpus: byte determinism, the mouth track follows the phoneme timings, the CLI writes a valid set."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from jam_flow.cli import main as cli_main
from jam_flow.data.format import DatasetInfo, load_clip, read_manifest, read_stats, validate_dataset
from jam_flow.data.synth import mouth_opening
from jam_flow.data.synth.corpus import SPEAKERS, build_corpus, plan_clip, split_for_index
from jam_flow.data.synth.espeak import synthesize
from jam_flow.data.synth.visemes import (
    BILABIAL,
    CLOSED,
    OPEN_VOWEL,
    ROUND_VOWEL,
    TARGETS,
    articulation_track,
    classify,
    mouth_from_articulation,
)
from jam_flow.features import MelSettings, MotionSettings

SHORT = ["We met at noon.", "Papa baked a big apple pie.", "Bob saw a map of Rome.", "Mom paid for the boat."]


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "a"
    build_corpus(out, 3, seed=11, sentences=SHORT, workers=2, log=None)
    return out


def test_same_seed_same_bytes_any_worker_count(corpus, tmp_path):
    again = tmp_path / "b"
    build_corpus(again, 3, seed=11, sentences=SHORT, workers=1, log=None)
    assert _tree_hash(corpus) == _tree_hash(again)
    other = tmp_path / "c"
    build_corpus(other, 3, seed=12, sentences=SHORT, workers=2, log=None)
    assert _tree_hash(corpus) != _tree_hash(other)
    a = load_clip(corpus, read_manifest(corpus)[0])
    c = load_clip(other, read_manifest(other)[0])
    assert a["mel"].shape != c["mel"].shape or not np.array_equal(a["mel"], c["mel"])


def test_corpus_is_valid_and_well_formed(corpus):
    assert validate_dataset(corpus) == []
    records = read_manifest(corpus)
    assert [r.split for r in records] == [split_for_index(i) for i in range(3)] == ["train", "val", "test"]
    for rec in records:
        assert 2.0 <= rec.duration <= 8.0
        assert rec.speaker in SPEAKERS
        assert rec.text and all(s in SHORT for s in _sentences_of(rec.text))
        arrays = load_clip(corpus, rec)
        assert arrays["phonemes"].shape[1] == 3 and arrays["phonemes"].dtype == np.float32
        assert len(arrays["phoneme_names"]) == len(arrays["phonemes"])
        assert np.all(np.diff(arrays["phonemes"][:, 0]) >= 0)
        assert arrays["phonemes"][-1, 1] <= rec.duration + 0.01
        std = arrays["exp"].std(axis=0)
        assert 0.002 < std[19, 1] < 0.03  # a talking mouth moves by LivePortrait-like magnitudes
        assert np.abs(arrays["pitch"]).max() < 30
    stats = read_stats(corpus)
    assert np.all(stats["mel_std"] > 0)


def _sentences_of(text: str) -> list[str]:
    parts, cur = [], []
    for word in text.split(" "):
        cur.append(word)
        if word.endswith("."):
            parts.append(" ".join(cur))
            cur = []
    return parts


def _frame_classes(phonemes: np.ndarray, m: int) -> np.ndarray:
    t = np.arange(m) / 25
    idx = np.clip(np.searchsorted(phonemes[:, 0], t, side="right") - 1, 0, len(phonemes) - 1)
    inside = (t >= phonemes[idx, 0]) & (t < phonemes[idx, 1])
    return np.where(inside, phonemes[idx, 2], 0).astype(int)


def test_mouth_track_follows_phoneme_timings(corpus):
    closed_vals, open_vals, xcorr = [], [], np.zeros(9)
    for rec in read_manifest(corpus):
        arrays = load_clip(corpus, rec)
        opening = mouth_opening(arrays["exp"])
        ph = arrays["phonemes"]
        for start, end, cls in ph:
            j = int(round((start + end) / 2 * 25))
            if end - start >= 0.06 and j < len(opening):
                if cls == BILABIAL:
                    closed_vals.append(opening[j])
                elif cls == OPEN_VOWEL:
                    open_vals.append(opening[j])
        # cross-correlate with the un-coarticulated target sequence: the best lag must be 0
        ref = TARGETS[_frame_classes(ph, len(opening)), 0]
        x, y = opening - opening.mean(), ref - ref.mean()
        xcorr += [np.dot(np.roll(x, k)[4:-4], y[4:-4]) for k in range(-4, 5)]
    assert closed_vals and open_vals
    assert np.mean(closed_vals) < 0.25
    assert np.mean(open_vals) > 0.4
    assert np.mean(open_vals) - np.mean(closed_vals) > 0.3
    assert int(np.argmax(xcorr)) - 4 == 0


def test_mouth_opening_inverts_the_mapping():
    track = np.array([[0.0, 0.0, 0.0], [1.0, 0.2, 0.0], [0.45, -0.6, 1.0], [0.3, 0.8, 0.0]])
    mouth = mouth_from_articulation(track, gain=1.1)
    np.testing.assert_allclose(mouth_opening(mouth), 1.1 * track[:, 0], atol=1e-12)
    exp = np.zeros((4, 21, 3))
    exp[:, [14, 17, 19, 20]] = mouth
    np.testing.assert_allclose(mouth_opening(exp), 1.1 * track[:, 0], atol=1e-12)
    np.testing.assert_allclose(mouth_opening(mouth.reshape(4, 12)), 1.1 * track[:, 0], atol=1e-12)
    import torch

    t = torch.from_numpy(mouth)
    assert torch.allclose(mouth_opening(t), torch.from_numpy(1.1 * track[:, 0]))
    assert mouth_opening(CLOSED) == pytest.approx(0.0)


def test_viseme_classes_and_coarticulation():
    assert classify("p") == ([BILABIAL], False)
    assert classify("'aU")[0] == [OPEN_VOWEL, ROUND_VOWEL] and classify("'aU")[1]
    assert classify("_:")[0] == [0]
    # a 70 ms /p/ between two open vowels still (almost) closes the lips; /t/ in the same place does not
    for cls, lo, hi in ((BILABIAL, 0.0, 0.2), (4, 0.5, 1.0)):
        seg = np.array([[0.0, 0.2, OPEN_VOWEL, 0], [0.2, 0.27, cls, 0], [0.27, 0.5, OPEN_VOWEL, 0]])
        mid = articulation_track(seg, np.array([0.235]))[0, 0]
        assert lo <= mid <= hi, (cls, mid)


def test_espeak_is_reproducible_per_process(monkeypatch):
    import jam_flow.data.synth.espeak as espeak

    # an +f variant: its noise source is clock-seeded unless the synthesiser reseeds it
    a = synthesize("Bob saw a map.", "en-us+f3", 170, 40)
    b = synthesize("Bob saw a map.", "en-us+f3", 170, 40)
    assert a.sample_rate == 22050
    assert np.array_equal(a.samples, b.samples) and a.phonemes == b.phonemes
    assert any(p.name == "b" for p in a.phonemes)
    monkeypatch.setattr(espeak, "_LOADED_HERE", True)  # forces the fresh-interpreter path
    c = synthesize("Bob saw a map.", "en-us+f3", 170, 40)
    assert np.array_equal(a.samples, c.samples) and a.phonemes == c.phonemes
    with pytest.raises(espeak.EspeakError, match="no-such-voice"):
        synthesize("Hi.", "no-such-voice")


def test_plans_are_deterministic_and_vary():
    plans = [plan_clip(3, i, 0, SHORT) for i in range(20)]
    assert plans == [plan_clip(3, i, 0, SHORT) for i in range(20)]
    assert len({p.speaker for p in plans}) > 3 and len({p.rate for p in plans}) > 5


def test_cli_writes_a_valid_dataset(tmp_path, capsys):
    sentences = tmp_path / "s.txt"
    sentences.write_text("\n".join(SHORT[:2]) + "\n\n")
    out = tmp_path / "cli"
    assert (
        cli_main(
            [
                "synth-corpus",
                "--out",
                str(out),
                "--n-clips",
                "2",
                "--seed",
                "5",
                "--sentences",
                str(sentences),
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert cli_main(["data", "validate", str(out)]) == 0
    assert "2 clips (train 1, val 1, test 0): OK" in capsys.readouterr().out
    assert cli_main(["synth-corpus", "--out", str(out), "--n-clips", "2"]) == 2  # refuses a non-empty dir
    before = _tree_bytes(out)
    # a bad input under --overwrite fails before anything is touched
    missing = ["--sentences", str(tmp_path / "missing.txt")]
    assert cli_main(["synth-corpus", "--out", str(out), "--n-clips", "1", "--overwrite", *missing]) == 2
    assert "--sentences" in capsys.readouterr().err
    assert _tree_bytes(out) == before
    # --overwrite replaces the whole dataset (no stale clip of the old one stays) and leaves no temporary behind
    one = ["--n-clips", "1", "--seed", "5", "--sentences", str(sentences), "--workers", "1", "--overwrite"]
    assert cli_main(["synth-corpus", "--out", str(out), *one]) == 0
    assert sorted(p.name for p in (out / "clips").iterdir()) == ["synth_000000.npz", "synth_000000.wav"]
    assert (out / "clips" / "synth_000000.npz").read_bytes() == before["clips/synth_000000.npz"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    bad = tmp_path / "bad.txt"
    bad.write_text("ok line\nna\u00efve caf\u00e9\n")
    assert (
        cli_main(["synth-corpus", "--out", str(tmp_path / "x"), "--n-clips", "1", "--sentences", str(bad)])
        == 2
    )
    assert "bad.txt:2" in capsys.readouterr().err


def _tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_overwrite_refuses_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    """A file named dataset.json does not make a folder a dataset; nothing is deleted."""
    foreign = tmp_path / "mine"
    (foreign / "clips").mkdir(parents=True)
    (foreign / "dataset.json").write_text('{"format": "something-else"}')
    (foreign / "clips" / "holiday.jpg").write_bytes(b"\xff\xd8 photo")
    (foreign / "notes.txt").write_text("keep me")
    before = _tree_bytes(foreign)
    argv = ["synth-corpus", "--out", str(foreign), "--n-clips", "1", "--overwrite"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out: refusing to replace") and err.count("\n") == 1
    assert _tree_bytes(foreign) == before
    # a real dataset.json but foreign files beside it: still refused
    (foreign / "dataset.json").write_text(
        json.dumps(DatasetInfo(MelSettings(), MotionSettings(), 0, "synth").to_json())
    )
    (foreign / "manifest.jsonl").write_text("")
    assert cli_main(argv) == 2
    assert "notes.txt" in capsys.readouterr().err
    (foreign / "notes.txt").unlink()
    assert cli_main(argv) == 2
    assert "holiday.jpg" in capsys.readouterr().err
    assert (foreign / "clips" / "holiday.jpg").is_file()


def test_bad_sentence_files_and_seeds_are_one_line_errors(tmp_path, capsys):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 4)
    out = tmp_path / "out"
    cases = [
        (["--sentences", str(junk)], "--sentences"),
        (["--sentences", str(tmp_path)], "--sentences"),
        (["--seed", str(2**64)], "--seed"),
        (["--seed", "-1"], "--seed"),
    ]
    for extra, name in cases:
        assert cli_main(["synth-corpus", "--out", str(out), "--n-clips", "1", *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {name}") and err.count("\n") == 1, err
    assert not out.exists() and list(tmp_path.iterdir()) == [junk]


WORDS = ["black", "white", "red", "old", "new", "hot", "cold", "cat", "dog", "sun"]


def test_word_world_holds_combinations_out_deterministically(tmp_path):
    from jam_flow.data.synth.corpus import SynthConfig
    from jam_flow.data.synth.world import WordWorld

    world = WordWorld(WORDS, seed=3, heldout_fraction=0.2)
    cfg = SynthConfig(voices=("en-us",), rate=160, pitch=50, sentences_per_clip=1, min_seconds=0.3)
    plans = [plan_clip(3, i, 0, world, cfg) for i in range(200)]
    assert plans == [plan_clip(3, i, 0, WordWorld(WORDS, 3, 0.2), cfg) for i in range(200)]
    for p in plans:
        words = p.text.rstrip(".").lower().split()
        assert 2 <= len(words) <= 4 and len(set(words)) == len(words) and set(words) <= set(WORDS)
        assert p.text[0].isupper() and p.text.endswith(".") and p.text.count(".") == 1  # one sentence a clip
        assert (p.speaker, p.rate, p.pitch) == ("en-us", 160, 50)
        # training clips say kept combinations only; val and test clips held-out ones only
        assert world.is_heldout(p.text) == (split_for_index(p.index) != "train")
    train = {p.text for p in plans if split_for_index(p.index) == "train"}
    held = {p.text for p in plans if split_for_index(p.index) != "train"}
    assert held and not train & held
    # the held-out set depends on the seed
    other = WordWorld(WORDS, seed=4, heldout_fraction=0.2)
    assert any(world.is_heldout(t) != other.is_heldout(t) for t in train | held)
    # the default options still draw the bundled corpus's plans
    assert plan_clip(3, 5, 0, SHORT) == plan_clip(3, 5, 0, SHORT, SynthConfig())


def test_cli_word_corpus_is_byte_deterministic(tmp_path, capsys):
    words = tmp_path / "words.txt"
    words.write_text("\n".join(WORDS) + "\n")
    argv = ["--n-clips", "4", "--seed", "2", "--words", str(words), "--voices", "en-us"]
    argv += ["--rate", "160", "--pitch", "50", "--sentences-per-clip", "1"]
    assert cli_main(["synth-corpus", "--out", str(tmp_path / "a"), *argv, "--workers", "2"]) == 0
    assert cli_main(["synth-corpus", "--out", str(tmp_path / "b"), *argv, "--workers", "1"]) == 0
    assert _tree_hash(tmp_path / "a") == _tree_hash(tmp_path / "b")
    records = read_manifest(tmp_path / "a")
    assert [r.split for r in records] == ["train", "val", "test", "train"]
    assert all(r.speaker == "en-us" and r.duration < 2.0 for r in records)  # one short sentence a clip
    assert validate_dataset(tmp_path / "a") == []
    capsys.readouterr()
    bad = tmp_path / "bad.txt"
    bad.write_text("red\ntwo words\n")
    cases = [
        (["--words", str(bad)], "--words"),
        (["--words", str(tmp_path / "none.txt")], "--words"),
        (["--words", str(words), "--sentences", str(words)], "--words"),
        (["--voices", "klingon"], "--voices"),
        (["--rate", "5"], "--rate"),
        (["--pitch", "101"], "--pitch"),
        (["--sentences-per-clip", "0"], "--sentences-per-clip"),
        (["--words", str(words), "--heldout-fraction", "1.5"], "--heldout-fraction"),
    ]
    for extra, name in cases:
        assert cli_main(["synth-corpus", "--out", str(tmp_path / "x"), "--n-clips", "1", *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {name}") and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists()
