"""The two-stage speech recipe's wiring: its configs chain (stage-1 models load strictly into stage 2), the demo
and the recipe build the same corpus, and the targets read as documented."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import yaml

from jam_flow.lightning.cli import run_cli
from jam_flow.recipes.speech import _gain, flatten, targets, world_options

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "configs" / "speech"


def _print_config(*configs: Path) -> dict:
    out = io.StringIO()
    argv = [a for c in configs for a in ("--config", str(c))]
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        run_cli("fit", [*argv, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(out.getvalue())


def test_stage2_branches_are_the_stage1_models():
    audio = _print_config(SPEECH / "world_stage1_audio.yaml")["model"]
    motion = _print_config(SPEECH / "world_stage1_motion.yaml")["model"]
    joint = _print_config(ROOT / "configs" / "stage2.yaml", SPEECH / "world_stage2.yaml")["model"]
    assert (audio["stage"], motion["stage"], joint["stage"]) == ("stage1_audio", "stage1_motion", "stage2")
    a1, a2 = audio["net"]["init_args"], joint["net"]["init_args"]["audio"]
    assert {k: v for k, v in a1.items() if k != "attention_backend"} == a2  # the branch has no backend key
    m1, m2 = motion["net"]["init_args"], joint["net"]["init_args"]["motion"]
    for key in ("dim", "depth", "heads", "dim_head", "ff_mult", "num_keypoints", "mouth_indices"):
        assert m1[key] == m2[key], key
    # stage2.yaml's masks and conditioning dropout are kept as they are
    paper = _print_config(ROOT / "configs" / "stage2.yaml")["model"]
    assert joint["masking"] == paper["masking"] and joint["dropout"] == paper["dropout"]
    assert joint["init_audio_from"] and joint["init_motion_from"]


def test_demo_builds_the_recipe_corpus():
    make = (ROOT / "Makefile").read_text()
    world = re.search(r"^WORLD\s*:=\s*(.+)$", make, re.M).group(1).split()
    assert world == world_options(Path("configs"))
    assert "--config configs/tiny.yaml --data.data_dir $(DEMO_DATA)" in make
    tiny = _print_config(ROOT / "configs" / "tiny.yaml")
    assert tiny["model"]["stage"] == "stage2" and tiny["model"]["net"]["class_path"].endswith("JointDiT")
    assert tiny["data"]["data_dir"] == re.search(r"^DEMO_DATA \?= (\S+)$", make, re.M).group(1)


def test_targets_and_flatten():
    result = {
        "metrics": {"cer": 0.2, "cer_ground_truth": 0.05, "envelope_corr": 0.7},
        "ground_truth": {"offset_within_one": 0.9},
        "shuffled": {"envelope_corr": 0.01},
    }
    flat = flatten("tts", result)
    assert flat == {
        "tts_cer": 0.2,
        "tts_cer_ground_truth": 0.05,
        "tts_envelope_corr": 0.7,
        "tts_offset_within_one_ground_truth": 0.9,
        "tts_envelope_corr_shuffled": 0.01,
    }
    stage2 = {
        "tts_cer": 0.27,
        "dub_offset_vs_ground_truth_within_one": 0.79,
        "motion2audio_envelope_corr": 0.5,
    }
    got = targets(flat, stage2)
    first, keep, dub, m2a = got.values()
    assert first == {"value": 0.2, "threshold": 0.15, "met": False}  # max(2 x 0.05, 0.05 + 0.10)
    assert keep == {"value": 0.27, "threshold": 0.27, "met": True}  # 1.25 x 0.2 + 0.02
    assert dub["met"] is False and m2a["met"] is True
    assert all(t["met"] is None for t in targets({}, {}).values())
    probe = {
        "loss_own_text": 1.0,
        "text_gain": 0.2,
        "bins": {"t0.0-0.3": {"text_gain": 0.6, "loss_no_text": 2}},
    }
    assert _gain(probe) == {"text_gain": 0.2, "text_gain_t0.0-0.3": 0.6}


def test_speech_sample_writes_audio_plot_and_record(tmp_path):
    """docs/audio's sample writer: generated and ground-truth wavs of the same layout, the plot, the record."""
    import json

    import soundfile as sf
    from inference_fixtures import write_export

    from jam_flow.data.synth.corpus import build_corpus
    from jam_flow.data.synth.world import WordWorld
    from jam_flow.recipes import speech_sample

    data = tmp_path / "world"
    words = ["red", "cat", "old", "sun", "big", "dog"]
    build_corpus(data, 3, seed=0, sentences=WordWorld(words, 0), workers=1, log=None)  # clip 2 is a test clip
    export = write_export(tmp_path)
    out = tmp_path / "audio"
    argv = ["--ckpt", str(export), "--data-dir", str(data), "--out", str(out), "--clips", "2", "--nfe", "2"]
    assert speech_sample.main(argv) == 0
    record = json.loads((out / "speech_world.json").read_text())
    assert [c["id"] for c in record["clips"]] == ["synth_000002"]  # the held-out test clip only
    gen, sr = sf.read(str(out / "speech_world_generated.wav"))
    ref, sr_ref = sf.read(str(out / "speech_world_ground_truth.wav"))
    assert sr == sr_ref == 24000 and len(gen) == len(ref) > 0.3 * sr and abs(ref).max() > 0.01
    assert (out / "speech_world.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "configs",
    [
        ("configs/speech/world_stage1_audio.yaml",),
        ("configs/speech/world_stage1_motion.yaml",),
        ("configs/stage2.yaml", "configs/speech/world_stage2.yaml"),
        ("configs/tiny.yaml",),
    ],
    ids=["stage1_audio", "stage1_motion", "stage2", "tiny"],
)
def test_dropout_and_masks_build(configs):
    """The configs' conditioning dropout and masks are valid objects, not only parseable YAML."""
    from jam_flow.flow.masking import DropoutConfig

    model = _print_config(*(ROOT / c for c in configs))["model"]
    DropoutConfig(**model["dropout"])
