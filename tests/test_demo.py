"""The web demo without a browser: requests go through the `jam-flow generate` code path, bad input gives the CLI's
line, the Gradio page has one tab per task and its handlers keep serving after an error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from inference_fixtures import write_export, write_inputs

from jam_flow import cli
from jam_flow.errors import InputError
from jam_flow.flow.layouts import TASKS
from jam_flow.inference.bundle import load_bundle


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from jam_flow.demo import DemoRunner

    root = tmp_path_factory.mktemp("demo")
    export = write_export(root)
    inputs = write_inputs(root)
    runner = DemoRunner(load_bundle(export), out_root=root / "out")
    return root, export, inputs, runner


def test_request_argv_leaves_out_empty_fields(tmp_path):
    from jam_flow.demo import request_argv

    argv = request_argv(
        "text2av",
        {"text": "Hi.", "ref_audio": None, "duration": "", "nfe": 8.0, "cfg": 2.5, "seed": " "},
        tmp_path,
        Path("m"),
        "cpu",
    )
    assert argv == ["--task", "text2av", "--ckpt", "m", "--out", str(tmp_path), "--device", "cpu"] + [
        "--text",
        "Hi.",
        "--nfe",
        "8",
        "--cfg",
        "2.5",
    ]


def test_requests_write_the_generate_files_and_plots(setup):
    from jam_flow.demo import run_request

    root, _, inputs, runner = setup
    calls = []
    status, paths = run_request(
        runner,
        "text2av",
        {"text": "Hello.", "duration": "1.0", "nfe": 3, "cfg": 2.0, "seed": "0"},
        report=lambda i, n: calls.append((i, n)),
    )
    assert status.startswith("done"), status
    assert {"audio", "motion", "motion_json", "preview", "mel_plot", "mouth_plot"} <= set(paths)
    assert calls == [(1, 3), (2, 3), (3, 3)]  # one report per network evaluation
    wave, sr = sf.read(paths["audio"])
    assert abs(len(wave) / sr - 1.0) < 0.02
    assert np.load(paths["motion"]).shape[1:] == (21, 3)

    status, paths = run_request(
        runner, "dub", {"text": "Hi.", "motion": [str(inputs["motion"])], "nfe": 2, "cfg": 2.0, "seed": "1"}
    )
    assert status.startswith("done"), status
    assert np.array_equal(np.load(paths["motion"]), np.load(inputs["motion"]))  # given motion comes back


@pytest.mark.parametrize(
    ("task", "fields", "flags"),
    [
        ("text2av", {"text": "Hi.", "nfe": 0, "cfg": 2.0}, ["--text", "Hi.", "--nfe", "0"]),
        ("tts", {"text": "Hi.", "nfe": 2, "cfg": 2.0}, ["--text", "Hi.", "--nfe", "2"]),
        (
            "text2av",
            {"text": "Hi.", "duration": "soon", "nfe": 2, "cfg": 2.0},
            ["--text", "Hi.", "--duration", "soon"],
        ),
        (
            "text2av",
            {"text": "Hi.", "duration": "99", "nfe": 2, "cfg": 2.0},
            ["--text", "Hi.", "--duration", "99"],
        ),
    ],
)
def test_bad_input_shows_the_cli_line(setup, capsys, task, fields, flags):
    from jam_flow.demo import run_request

    root, export, _, runner = setup
    status, paths = run_request(runner, task, fields)
    assert paths == {}
    code = cli.main(["generate", "--task", task, "--ckpt", str(export), "--out", str(root / "cli"), *flags])
    assert code == 2
    assert status == capsys.readouterr().err.strip()


def test_motion_upload_is_checked(setup):
    from jam_flow.demo import run_request

    root, _, inputs, runner = setup
    status, _ = run_request(
        runner,
        "dub",
        {"text": "Hi.", "motion": [str(inputs["motion"]), str(inputs["clip"])], "nfe": 2, "cfg": 2.0},
    )
    assert status.startswith("error: --motion: give one motion .npy (+ its .json) or one clip .npz"), status
    # a sidecar with another frame rate travels with the .npy and is refused as on the command line
    side = root / "motion.json"
    side.write_text('{"fps": 30}')
    status, _ = run_request(
        runner, "motion2audio", {"motion": [str(inputs["motion"]), str(side)], "nfe": 2, "cfg": 2.0}
    )
    assert "fps 30" in status and status.startswith("error: --motion:"), status


def test_demo_command_refuses_bad_arguments(tmp_path):
    from jam_flow.demo import main

    with pytest.raises(InputError, match="--ckpt"):
        main(["--ckpt", str(tmp_path / "missing.ckpt")])
    with pytest.raises(InputError, match="jam-flow demo --help"):
        main(["--port", "x"])
    assert "demo" in cli.SUBCOMMANDS


def test_build_app_has_a_tab_per_task_and_survives_bad_input(setup):
    pytest.importorskip("gradio", reason="the demo extra (gradio) is not installed")
    from jam_flow.demo import build_app

    root, export, inputs, _ = setup
    app = build_app(load_bundle(export), out_root=root / "app")
    config = app.get_config_file()
    tabs = [c["props"].get("label") for c in config["components"] if c["type"] == "tabitem"]
    assert tabs == [*TASKS, "dub a video", "animate"]  # + the video tabs (tests/test_video_dub_animate.py)
    ids = {c["props"].get("elem_id") for c in config["components"]}
    for task in TASKS:
        assert {f"{task}-run", f"{task}-status", f"{task}-out-audio", f"{task}-files"} <= ids
    # each tab's endpoint is named after its task (a gradio_client user calls api_name="/dub", not "/handle_3")
    public = [d for d in config["dependencies"] if d.get("api_visibility", "public") == "public"]
    endpoints = [d.get("api_name") for d in public if d.get("api_name")]  # the clean-up events are private
    assert endpoints == [*TASKS, "dub_video", "animate"]  # + the video tabs (tests/test_video_dub_animate.py)
    info = app.get_api_info()["named_endpoints"]
    assert set(info) == {f"/{task}" for task in (*TASKS, "dub_video", "animate")}
    handlers = {fn.api_name: fn.fn for fn in app.fns.values()}
    for task in TASKS:  # the endpoint's parameters carry the option names (gradio_client keywords)
        assert [p["parameter_name"] for p in info[f"/{task}"]["parameters"]] == handlers[task].names
    assert {"motion", "text", "ref_audio", "nfe", "seed"} <= set(handlers["dub"].names)
    handler = handlers["tts"]
    fields = {
        "text": "Hi.",
        "ref_audio": str(inputs["ref"]),
        "ref_text": "",
        "duration": "",
        "nfe": 0,
        "cfg": 2.0,
    }
    fields.update(seed="0", guidance="joint")

    def call(**changes):
        values = {**fields, **changes}
        return handler(*(values[name] for name in handler.names))

    out = call()
    assert out[0] == "error: --nfe: expected 1-1000, got 0" and out[1:-1] == (None,) * 6
    out = call(nfe=2, duration="0.5")  # the next request still runs
    assert out[0].startswith("done"), out[0]
    assert Path(out[1]).name == "audio.wav" and Path(out[4]).name == "mel.png"
    names = [Path(f).name for f in out[6]]  # the downloads: what generate wrote, not the plots
    assert names[0] == "audio.wav" and "mel.png" not in names and all(Path(f).is_file() for f in out[6])
