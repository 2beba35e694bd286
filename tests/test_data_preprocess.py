"""Real-video preprocessing on small mp4 files built here with PyAV (synthetic frames + eSpeak audio)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from jam_flow.cli import main as cli_main  # noqa: E402
from jam_flow.data.audio import resample  # noqa: E402
from jam_flow.data.format import load_clip, read_manifest, validate_dataset  # noqa: E402
from jam_flow.data.preprocess import PreprocessConfig, run  # noqa: E402
from jam_flow.data.sources import discover, hash_split  # noqa: E402
from jam_flow.data.synth.espeak import synthesize  # noqa: E402


def _frames(n: int, size: int, face: bool):
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        img = np.full((size, size, 3), 90, np.uint8)
        if face:
            c = size / 2
            img[((xx - c) / (0.32 * size)) ** 2 + ((yy - c) / (0.42 * size)) ** 2 < 1] = (220, 180, 150)
            for ex in (c - 0.13 * size, c + 0.13 * size):
                img[(xx - ex) ** 2 + (yy - 0.4 * size) ** 2 < (0.04 * size) ** 2] = (30, 30, 30)
            mouth_h = 0.02 * size * (1 + 2 * abs(np.sin(i / 3)))
            img[(abs(xx - c) < 0.12 * size) & (abs(yy - 0.68 * size) < mouth_h)] = (120, 20, 20)
        yield img


def make_video(
    path: Path, seconds: float, fps: int = 30, audio: bool = True, face: bool = True, size: int = 96
) -> Path:
    speech = synthesize("Bob saw a big map of Rome.", "en-us", 190, 50)
    wave = resample(speech.samples.astype(np.float32) / 32768, speech.sample_rate, 24000)
    wave = np.resize(wave, int(seconds * 24000)).astype(np.float32)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=fps)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        if audio:
            astream = c.add_stream("aac", rate=24000)
            astream.layout = "mono"
        for img in _frames(int(round(seconds * fps)), size, face):
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in vs.encode(None):
            c.mux(pkt)
        if audio:
            for k in range(0, len(wave), 1024):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(wave[None, k : k + 1024]), format="fltp", layout="mono"
                )
                frame.sample_rate, frame.pts = 24000, k
                for pkt in astream.encode(frame):
                    c.mux(pkt)
            for pkt in astream.encode(None):
                c.mux(pkt)
    return path


@pytest.mark.parametrize(
    "crop", [pytest.param(32, id="crop32"), pytest.param(256, id="crop256", marks=pytest.mark.slow)]
)
def test_folder_preprocess_valid_failures_and_resume(tmp_path, extractor_ckpt, capsys, crop):
    """crop 32 keeps the CPU test fast (LivePortrait's ConvNeXt costs seconds per 256 px frame on a busy CPU);
    the slow variant runs the real 256 px crop."""
    root, out = tmp_path / "videos", tmp_path / "out"
    (root / "alice").mkdir(parents=True)
    good = ["alice/take2.mp4", "bob_take2.mp4"]
    assert all(hash_split(name) == "train" for name in ("alice__take2", "bob_take2"))
    make_video(root / good[0], 0.64)
    (root / "alice" / "take2.txt").write_text("Text:  BOB SAW A BIG MAP OF ROME\nConf:  3\n")
    make_video(root / good[1], 0.6, fps=24)
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    full = (root / good[1]).read_bytes()
    (root / "truncated.mp4").write_bytes(full[: len(full) // 2])
    make_video(root / "silent.mp4", 0.6, audio=False)
    make_video(root / "tiny.mp4", 0.3)

    argv = [
        "preprocess",
        "--dataset",
        "folder",
        "--root",
        str(root),
        "--out",
        str(out),
        "--motion-extractor",
        str(extractor_ckpt),
        "--face-detector",
        "full-frame",
        "--device",
        "cpu",
        "--crop-size",
        str(crop),
    ]
    assert cli_main(argv) == 0
    assert validate_dataset(out) == []
    records = {r.id: r for r in read_manifest(out)}
    assert sorted(records) == ["alice__take2", "bob_take2"]
    assert (
        records["alice__take2"].text == "BOB SAW A BIG MAP OF ROME"
        and records["alice__take2"].speaker == "alice"
    )
    assert records["bob_take2"].text == "" and records["bob_take2"].speaker == "default"
    arrays = load_clip(out, records["alice__take2"])
    assert arrays["exp"].shape == (16, 21, 3) and arrays["pitch"].shape == (16,)
    assert np.all(np.abs(arrays["pitch"]) <= 97.5)

    failures = {
        Path(f["path"]).name: f for f in map(json.loads, (out / "failures.jsonl").read_text().splitlines())
    }
    assert failures["corrupt.mp4"]["kind"] == "corrupt"
    assert failures["truncated.mp4"]["kind"] == "corrupt"
    assert failures["silent.mp4"]["kind"] == "no-audio"
    assert failures["tiny.mp4"]["kind"] == "too-short"
    assert "2 clips ready (0 resumed), 4 failed" in capsys.readouterr().out

    # interrupt: one clip lost its npz and the manifest was never written; the rerun redoes only that clip
    kept = out / records["alice__take2"].features
    stamp = kept.stat().st_mtime_ns
    (out / records["bob_take2"].features).unlink()
    (out / "manifest.jsonl").unlink()
    assert cli_main(argv) == 0
    assert "1 already finished, 5 to process" in capsys.readouterr().out
    assert kept.stat().st_mtime_ns == stamp
    assert validate_dataset(out) == []


def test_no_face_goes_to_the_report(tmp_path, extractor_ckpt):
    pytest.importorskip("cv2")
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    make_video(root / "RD_Blank_000.mp4", 0.6, face=False)
    cfg = PreprocessConfig(
        motion_extractor=str(extractor_ckpt), face_detector=None, detect_every=4, crop_size=32
    )
    finished, failures = run("hdtf", root, out, cfg, log=lambda *_: None)
    assert finished == [] and [f["kind"] for f in failures] == ["no-face"]
    assert not (out / "manifest.jsonl").exists()


def test_discovery_layouts(tmp_path):
    cv = tmp_path / "celebv"
    for split, spk, clip in (("train", "abc", "00001"), ("test", "xyz", "00002"), ("weird", "abc", "00003")):
        (cv / split / spk).mkdir(parents=True, exist_ok=True)
        (cv / split / spk / f"{clip}.mp4").write_bytes(b"x")
    (cv / "train" / "abc" / "00001.txt").write_text("Text:  HELLO   WORLD\nConf:  4\n")
    clips, skipped = discover("celebv-dub", cv)
    by_id = {c.id: c for c in clips}
    assert by_id["train__abc__00001"].text == "HELLO WORLD" and by_id["train__abc__00001"].split == "train"
    assert by_id["test__xyz__00002"].split == "test" and by_id["test__xyz__00002"].speaker == "xyz"
    assert by_id["weird__abc__00003"].split == hash_split("abc") and skipped == []

    hd = tmp_path / "hdtf"
    hd.mkdir()
    for name in ("RD_Radio11_000.mp4", "RD_Radio11_001.mp4", "WDA_BarackObama_000.mp4", "random.mp4"):
        (hd / name).write_bytes(b"x")
    clips, skipped = discover("hdtf", hd)
    assert [c.speaker for c in clips] == ["RD_Radio11", "RD_Radio11", "WDA_BarackObama"]
    assert clips[0].split == clips[1].split == hash_split("RD_Radio11")
    assert [p.name for p, _ in skipped] == ["random.mp4"]
    with pytest.raises(Exception, match="no HDTF clips"):
        discover("hdtf", tmp_path / "celebv")


def test_bad_arguments_fail_fast(tmp_path, capsys):
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.mp4").write_bytes(b"not a video")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    base = ["preprocess", "--dataset", "folder", "--root", str(root), "--out", str(tmp_path / "out")]
    assert cli_main([*base, "--motion-extractor", str(junk)]) == 2
    assert "junk.pth" in capsys.readouterr().err
    assert cli_main([*base, "--motion-extractor", str(tmp_path / "missing.pth")]) == 2
    assert cli_main([*base, "--motion-extractor", str(junk), "--crop-size", "8"]) == 2
    assert (
        cli_main(
            [
                "preprocess",
                "--dataset",
                "hdtf",
                "--root",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "o"),
                "--motion-extractor",
                str(junk),
            ]
        )
        == 2
    )


def test_preprocessed_dataset_trains(tmp_path, extractor_ckpt):
    """A folder of mp4 files -> `jam-flow preprocess` -> `jam-flow fit` runs on it and leaves last.ckpt."""
    root, out = tmp_path / "videos", tmp_path / "out"
    root.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        make_video(root / name, 0.64)
    argv = ["preprocess", "--dataset", "folder", "--root", str(root), "--out", str(out),
            "--motion-extractor", str(extractor_ckpt), "--face-detector", "full-frame", "--crop-size", "32"]  # fmt: skip
    assert cli_main(argv) == 0
    assert validate_dataset(out) == []
    config = Path(__file__).resolve().parents[1] / "configs" / "tests" / "tiny_stage2.yaml"
    fit = ["fit", "--config", str(config), "--data.data_dir", str(out), "--trainer.max_steps", "2",
           "--trainer.default_root_dir", str(tmp_path / "run"), "--media.num_clips", "0",
           "--trainer.enable_progress_bar", "false"]  # fmt: skip
    assert cli_main(fit) == 0
    assert len(list((tmp_path / "run").glob("**/checkpoints/last.ckpt"))) == 1
