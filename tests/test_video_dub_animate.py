"""``jam-flow dub-video`` and ``jam-flow animate`` end to end on small generated videos, a tiny random JointDiT, a tiny
random Vocos and random-weight LivePortrait networks of the real architecture (toy widths, as in the render tests);
plus the windowing rules (cuts at pauses, text per window, seams)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from inference_fixtures import write_export, write_vocos  # noqa: E402
from test_render_e2e import _weights_dir, tiny_models  # noqa: E402

import jam_flow.liveportrait as lp  # noqa: E402
from jam_flow.cli import main as cli_main  # noqa: E402
from jam_flow.errors import InputError  # noqa: E402
from jam_flow.flow.sampler import SamplerSettings  # noqa: E402
from jam_flow.inference import windows as W  # noqa: E402
from jam_flow.inference.bundle import load_bundle  # noqa: E402
from jam_flow.liveportrait.loading import resolve_weight_files  # noqa: E402

SR = 24000
FPS = 25


def _speech(seconds: float, pauses: list[tuple[float, float]]) -> np.ndarray:
    """A voiced-like signal (harmonics with a syllable envelope) with silent ``pauses`` (start, end) seconds."""
    t = np.arange(int(seconds * SR)) / SR
    wave = 0.2 * np.sin(2 * np.pi * 150 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    wave += 0.05 * np.sin(2 * np.pi * 450 * t)
    for a, b in pauses:
        wave[int(a * SR) : int(b * SR)] = 0.0
    return wave.astype(np.float32)


def _face_frame(i: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.full((size, size, 3), 90, np.uint8)
    c = size / 2
    img[((xx - c) / (0.32 * size)) ** 2 + ((yy - c) / (0.42 * size)) ** 2 < 1] = (220, 180, 150)
    mouth_h = 0.02 * size * (1 + 2 * abs(np.sin(i / 3)))
    img[(abs(xx - c) < 0.12 * size) & (abs(yy - 0.68 * size) < mouth_h)] = (120, 20, 20)
    return img


def make_video(
    path: Path,
    seconds: float,
    pauses=(),
    audio: bool = True,
    size: int = 64,
    codec: str = "libx264",
    blank=False,
) -> Path:
    with av.open(str(path), "w") as c:
        vs = c.add_stream(codec, rate=FPS)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        if audio:
            astream = c.add_stream("aac", rate=SR)
            astream.layout = "mono"
        for i in range(int(round(seconds * FPS))):
            img = np.full((size, size, 3), 128, np.uint8) if blank else _face_frame(i, size)
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in vs.encode(None):
            c.mux(pkt)
        if audio:
            wave = _speech(seconds, list(pauses))
            for k in range(0, len(wave), 1024):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(wave[None, k : k + 1024]), format="fltp", layout="mono"
                )
                frame.sample_rate, frame.pts = SR, k
                for pkt in astream.encode(frame):
                    c.mux(pkt)
            for pkt in astream.encode(None):
                c.mux(pkt)
    return path


def frames_hash(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            h.update(frame.to_ndarray(format="rgb24").tobytes())
            n += 1
    return n, h.hexdigest()


def packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(video=0) if p.size]


def audio_seconds(path: Path) -> float:
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        return sum(f.samples for f in c.decode(a)) / a.rate


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("longform")
    from jam_flow.liveportrait import MotionExtractor

    torch.manual_seed(0)
    torch.save(MotionExtractor(backbone="convnextv2_atto").state_dict(), root / "me_atto.pth")
    return {"ckpt": write_export(root), "vocoder": write_vocos(root), "root": root}


@pytest.fixture
def tiny_lp(monkeypatch):
    def load(weights_dir, device="cpu", half=False):
        resolve_weight_files(weights_dir)
        return tiny_models().to(device)

    monkeypatch.setattr(lp, "load_liveportrait", load)


@pytest.fixture(autouse=True)
def _atto_extractor(monkeypatch):
    """The extractor file holds a toy-width (ConvNeXt-atto) MotionExtractor: build that architecture to load it."""
    import jam_flow.liveportrait.loading as loading
    from jam_flow.liveportrait import MotionExtractor

    monkeypatch.setattr(loading, "MotionExtractor", lambda: MotionExtractor(backbone="convnextv2_atto"))


def _model_args(assets, **extra) -> list[str]:
    args = {
        "ckpt": assets["ckpt"],
        "vocoder": assets["vocoder"],
        "nfe": 2,
        "seed": 0,
        "window_s": 1.0,
        "context_s": 0.3,
        "face_detector": "full-frame",
        "crop_size": 128,
        "device": "cpu",
        **extra,
    }
    out = []
    for k, v in args.items():
        if v is True:
            out.append(f"--{k.replace('_', '-')}")
        elif v is not None:
            out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def _run(capsys, *argv) -> tuple[int, str]:
    rc = cli_main([str(a) for a in argv])
    err = capsys.readouterr().err
    return rc, err


def _dub(capsys, video, text: str, out, *options) -> tuple[int, str]:
    return _run(capsys, "dub-video", "--video", video, "--text", text, "--out", out, *options)


# ---------------------------------------------------------------------------------------------- dub-video
def test_dub_video_keeps_the_video_stream_bit_exact(tmp_path, assets, capsys):
    video = make_video(tmp_path / "talk.mp4", 2.6, pauses=[(0.9, 1.1), (1.8, 2.0)])
    out = tmp_path / "out" / "dubbed.mp4"
    text = "One two three. Four five six. Seven eight nine."
    options = ["--motion-extractor", assets["root"] / "me_atto.pth", *_model_args(assets), "-q"]
    rc, err = _dub(capsys, video, text, out, *options)
    assert rc == 0, err
    assert frames_hash(out) == frames_hash(video)  # decoded frames identical
    assert packets(out) == packets(video)  # and the packets themselves
    assert audio_seconds(out) == pytest.approx(2.6, abs=0.1)
    record = json.loads((out.parent / "dub.json").read_text())
    assert record["format"] == "jam-flow-dub-video" and record["voice"] == "the video's own speech"
    assert len(record["windows"]) == 3
    # windows tile the video; each after the first has context; cuts land in the pauses
    ws = record["windows"]
    assert ws[0]["start"] == 0 and ws[-1]["frames"][1] == record["frames"] == 65
    assert all(a["frames"][1] == b["frames"][0] for a, b in zip(ws, ws[1:], strict=False))
    assert ws[0]["context"] == 0 and all(w["context_frames"] > 0 for w in ws[1:])
    assert 0.85 <= ws[1]["start"] <= 1.15 and 1.75 <= ws[2]["start"] <= 2.05
    assert [w["text"] for w in ws] == ["One two three.", "Four five six.", "Seven eight nine."]
    assert set(record["wall_seconds"]) >= {"extract_motion", "model", "render", "mux", "total"}
    wave, sr = sf.read(out.parent / "audio.wav")
    assert sr == SR and abs(wave.size / SR - 2.6) < 0.05 and np.isfinite(wave).all()
    assert np.load(out.parent / "motion.npy").shape == (65, 21, 3)
    # the house rule: a second run refuses to replace, --overwrite replaces
    rc, err = _dub(capsys, video, text, out, *options)
    assert rc == 2 and "--overwrite" in err and err.count("\n") == 1


def test_dub_video_bad_inputs_are_one_line(tmp_path, assets, capsys):
    me = assets["root"] / "me_atto.pth"
    base = ["--motion-extractor", me, *_model_args(assets), "-q"]
    silent = make_video(tmp_path / "silent.mp4", 1.0, audio=False)
    rc, err = _dub(capsys, silent, "Hi.", tmp_path / "a.mp4", *base)
    assert rc == 2 and "no audio track" in err and err.count("\n") == 1
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).bytes(3000))
    rc, err = _dub(capsys, corrupt, "Hi.", tmp_path / "b.mp4", *base)
    assert rc == 2 and str(corrupt) in err and err.count("\n") == 1
    video = make_video(tmp_path / "v.mp4", 2.6, pauses=[(0.9, 1.1), (1.8, 2.0)])
    rc, err = _dub(capsys, video, "Only one sentence here", tmp_path / "c.mp4", *base)
    assert rc == 2 and "the text is empty for window 2 of 3" in err and err.count("\n") == 1
    blank = make_video(tmp_path / "blank.mp4", 1.0, blank=True, size=96)
    haar = ["--motion-extractor", me, *_model_args(assets, face_detector=None), "-q"]
    rc, err = _dub(capsys, blank, "Hi.", tmp_path / "d.mp4", *haar)
    assert rc == 2 and "no face found" in err and err.count("\n") == 1
    assert not any((tmp_path / f"{name}.mp4").exists() for name in "abcd")
    assert not (tmp_path / "dub.json").exists()


@pytest.mark.slow
def test_dub_video_rerender_pastes_faces_back(tmp_path, assets, capsys, tiny_lp):
    video = make_video(tmp_path / "talk.mp4", 0.8, size=64)
    out = tmp_path / "re.mp4"
    rc, err = _dub(
        capsys,
        video,
        "Hello there.",
        out,
        "--rerender",
        "--liveportrait",
        _weights_dir(tmp_path / "lp"),
        *_model_args(assets, window_s=2.0),
        "-q",
    )
    assert rc == 0, err
    n, _ = frames_hash(out)
    assert n == 20
    record = json.loads((tmp_path / "dub.json").read_text())
    assert record["rerender"] and record["wall_seconds"]["render"] > 0
    assert np.load(tmp_path / "rerender_motion.npy").shape == (20, 21, 3)


# ---------------------------------------------------------------------------------------------- animate
def test_animate_text_on_an_image(tmp_path, assets, capsys, tiny_lp):
    face = tmp_path / "face.png"
    Image.fromarray(_face_frame(0, 72)).save(face)
    out = tmp_path / "talk.mp4"
    rc, err = _run(
        capsys,
        "animate",
        "--source",
        face,
        "--text",
        "Hi there. Bye now.",
        "--out",
        out,
        "--liveportrait",
        _weights_dir(tmp_path / "lp"),
        *_model_args(assets),
    )
    assert rc == 0, err
    record = json.loads((tmp_path / "animate.json").read_text())
    assert record["task"] == "text2av" and len(record["windows"]) == 2
    n, _ = frames_hash(out)
    motion = np.load(tmp_path / "motion.npy")
    assert n == motion.shape[0] == record["frames"]
    assert audio_seconds(out) == pytest.approx(n / FPS, abs=0.1)


@pytest.mark.slow
def test_animate_audio_on_a_short_video_pingpong(tmp_path, assets, capsys, tiny_lp):
    video = make_video(tmp_path / "src.mp4", 0.4, audio=False)
    wav = tmp_path / "speech.wav"
    sf.write(wav, _speech(0.72, []), SR)
    out = tmp_path / "talk.mp4"
    rc, err = _run(
        capsys,
        "animate",
        "--source",
        video,
        "--audio",
        wav,
        "--out",
        out,
        "--liveportrait",
        _weights_dir(tmp_path / "lp"),
        *_model_args(assets, vocoder=None),
        "-q",
    )
    assert rc == 0, err
    assert frames_hash(out)[0] == 18  # the 10-frame source played forward, backward, ...
    assert json.loads((tmp_path / "animate.json").read_text())["task"] == "audio2motion"


# ---------------------------------------------------------------------------------------------- windows
def test_cut_at_pauses_prefers_silence_and_respects_the_window():
    energy = np.zeros(300)
    energy[137:141] = -80.0  # a pause around frame 139
    bounds = W.cut_at_pauses(energy, 300, 200)
    assert bounds[0] == (0, 140) and bounds[-1][1] == 300
    assert all(b - a <= 200 and a % 4 == 0 for a, b in bounds)
    flat = W.cut_at_pauses(None, 300, 100)
    assert flat == [(0, 100), (100, 200), (200, 300)]


def test_text_per_window_and_context_text():
    sentences = W.split_sentences("A b c. D e f g h i j k l! M n?\nO p.")
    assert sentences == ["A b c.", "D e f g h i j k l!", "M n?", "O p."]
    assert W.distribute_text(sentences, [1, 3, 1]) == ["A b c.", "D e f g h i j k l!", "M n? O p."]
    with pytest.raises(Exception, match="empty for window 3 of 3"):
        W.distribute_text(["One.", "Two."], [1, 1, 1])
    assert W.context_text("hello big world", 0.3) == "world"
    assert W.pack_sentences(["aa.", "bb.", "cc."], lambda t: len(t) / 2, 3.5) == ["aa. bb.", "cc."]


def test_smooth_seams_removes_a_jump():
    track = np.concatenate([np.linspace(0, 1, 20), 5 + np.linspace(0, 1, 20)])[:, None].astype(np.float32)
    steps = np.abs(np.diff(W.smooth_seams(track, [20])[:, 0]))
    inner = np.abs(np.diff(track[:20, 0])).max()
    assert np.abs(np.diff(track[:, 0]))[19] > 10 * inner  # the jump is there before
    assert steps[19] <= inner + 1e-6  # and gone after


def _jumps(track: np.ndarray, seams: list[int]) -> tuple[float, float]:
    steps = np.abs(np.diff(track, axis=0)).reshape(track.shape[0] - 1, -1).max(axis=1)
    at_seams = max(steps[s - 1] for s in seams)
    inside = max(steps[i] for i in range(steps.size) if i + 1 not in seams)
    return at_seams, inside


@pytest.mark.parametrize("task", ["text2av", "audio2motion"])
def test_three_windows_have_no_seam_jumps(assets, task):
    bundle = load_bundle(assets["ckpt"])
    settings = SamplerSettings(nfe=4, cfg=0)
    if task == "text2av":
        from jam_flow.data.vocoder import load_vocoder

        result = W.text2av_long(
            bundle,
            "Hello there. This is part two. And part three.",
            window_s=1.6,
            context_s=0.5,
            settings=settings,
            seed=0,
            vocoder=load_vocoder(assets["vocoder"], bundle.mel),
        )
    else:
        result = W.audio2motion_long(
            bundle,
            _speech(3.6, [(1.3, 1.5), (2.6, 2.8)]),
            window_s=1.6,
            context_s=0.5,
            settings=settings,
            seed=0,
        )
    assert len(result.windows) == 3
    seams = [w.start for w in result.windows[1:]]
    mouth = result.motion[:, list(bundle.motion.mouth_indices)]
    at_seams, inside = _jumps(mouth, seams)
    assert at_seams <= inside
    level = W.frame_energy_db(result.wave, SR, FPS, result.motion.shape[0])
    at_seams, inside = _jumps(level[:, None], seams)
    assert at_seams <= inside


def test_dub_long_reference_comes_with_its_motion(assets, monkeypatch):
    """A reference voice without motion gets motion generated from its audio (the trained layout); with ``ref_exp``
    that motion is given under the reference."""
    from jam_flow.data.vocoder import load_vocoder

    bundle = load_bundle(assets["ckpt"])
    voc = load_vocoder(assets["vocoder"], bundle.mel)
    exp = (0.02 * np.random.default_rng(0).normal(size=(30, 21, 3))).astype(np.float32)
    ref = (_speech(0.64, []), SR)  # 0.64 s = 16 motion frames
    seen = []
    layout = W._layout
    monkeypatch.setattr(W, "_layout", lambda *a, **k: seen.append(k) or layout(*a, **k))
    kw = {"window_s": 2.0, "settings": SamplerSettings(nfe=2, cfg=0), "seed": 0, "vocoder": voc}
    generated = W.dub_long(bundle, exp, "Hello there.", ref_audio=ref, **kw)
    assert generated.meta["sources"]["ref_motion"].startswith("generated from the reference audio")
    given = W.dub_long(bundle, exp, "Hello there.", ref_audio=ref, ref_exp=exp[5:21], **kw)
    assert given.meta["sources"]["ref_motion"] == "given with the reference"
    mouth, rest = bundle.normalise_motion(exp)
    timeline = seen[-1]["mouth"]
    assert timeline.shape[0] == 16 + 30 and seen[-1]["motion_span"] is None  # all motion given
    assert torch.equal(timeline[:16], mouth[5:21]) and torch.equal(timeline[16:], mouth)
    assert torch.equal(seen[-1]["rest"][:16], rest[5:21])
    assert generated.wave.shape == given.wave.shape == (30 * 960,)


def test_api_dub_video_and_bad_options(tmp_path, assets):
    """``JamFlow.dub_video`` runs the same pipeline as the command (and refuses what generate refuses)."""
    from jam_flow import JamFlow

    jf = JamFlow.load(assets["ckpt"], vocoder=assets["vocoder"])
    video = make_video(tmp_path / "talk.mp4", 1.0)
    out = tmp_path / "api" / "dubbed.mp4"
    calls = []
    record = jf.dub_video(
        video, "Hello there.", out, motion_extractor=assets["root"] / "me_atto.pth", nfe=2, seed=0,
        window_s=2.0, face_detector="full-frame", crop_size=64, progress=lambda *a: calls.append(a),
    )  # fmt: skip
    assert ("extract motion", 25, 25) in calls and ("windows", 1, 1) in calls  # the progress bar's rows
    assert record["format"] == "jam-flow-dub-video" and record["settings"]["nfe"] == 2
    assert frames_hash(out) == frames_hash(video)
    with pytest.raises(InputError, match="--nfe"):
        jf.dub_video(video, "Hi.", tmp_path / "x.mp4", motion_extractor=assets["root"] / "me_atto.pth", nfe=0)
    with pytest.raises(InputError, match="--motion-extractor / --liveportrait"):
        jf.dub_video(video, "Hi.", tmp_path / "y.mp4")


def test_demo_video_tabs(tmp_path, assets, tiny_lp):
    """The demo's "dub a video" and "animate" tabs run the commands' functions and show bad input as one line."""
    pytest.importorskip("gradio")
    from jam_flow.demo import build_app

    lp_dir = _weights_dir(tmp_path / "lp")
    face = tmp_path / "face.png"
    Image.fromarray(_face_frame(0, 64)).save(face)
    app = build_app(load_bundle(assets["ckpt"]), liveportrait=lp_dir, source=face, out_root=tmp_path / "app",
                    motion_extractor=assets["root"] / "me_atto.pth")  # fmt: skip
    handlers = {fn.api_name: fn.fn for fn in app.fns.values()}
    dub, anim = handlers["dub_video"], handlers["animate"]
    assert app.video_handlers == {"dub-video": dub, "animate": anim}
    app.video_requests.face_detector = "full-frame"  # the generated face is no Haar face
    video = make_video(tmp_path / "talk.mp4", 0.8)
    values = {"video": str(video), "text": "Hello there.", "ref_audio": None, "ref_text": "", "rerender": False,
              "window_s": 2.0, "context_s": 0.5, "nfe": 2, "cfg": 2.0, "seed": "0"}  # fmt: skip
    status, out_video, audio, files, folders = dub(
        *(values[n] for n in dub.names), progress=lambda *a, **k: None
    )
    assert status.startswith("done"), status
    assert frames_hash(Path(out_video)) == frames_hash(video) and Path(audio).is_file() and len(files) == 5
    status, *rest = dub(*({**values, "text": " "}[n] for n in dub.names), progress=lambda *a, **k: None)
    assert status == "error: --text: the text is empty" and rest[:3] == [None, None, None]
    fields = {n: None for n in anim.names}  # the demo's --source, but neither speech nor text
    status, *_ = anim(*(fields[n] for n in anim.names), progress=lambda *a, **k: None)
    assert status == "error: --audio / --text: give exactly one (speech to animate, or text to speak)"
