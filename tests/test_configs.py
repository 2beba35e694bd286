"""Every training config parses through `jam-flow fit --print_config`; stage2.yaml is the paper's setup."""

from __future__ import annotations

import contextlib
import functools
import io
from pathlib import Path

import pytest
import yaml

from jam_flow.lightning.cli import run_cli

ROOT = Path(__file__).resolve().parents[1] / "configs"
# configs/tests/*.yaml are parsed (and run) by tests/test_lightning_train.py
CONFIGS = sorted(ROOT.glob("*.yaml"))


@functools.cache
def _print_config(path: Path) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        run_cli("fit", ["--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(out.getvalue())


def test_the_expected_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {
        "stage1_motion.yaml",
        "stage1_motion_mel.yaml",
        "stage1_audio.yaml",
        "stage2.yaml",
        "tiny.yaml",
    } <= names


def test_stage1_motion_is_the_papers_setup_and_the_mel_variant_differs_only_in_features():
    """stage1_motion.yaml: wav2vec2 features (appendix A) and its dropout stated; stage1_motion_mel.yaml: the same
    run with the mel on the motion grid (offline corpus)."""
    paper, mel = _print_config(ROOT / "stage1_motion.yaml"), _print_config(ROOT / "stage1_motion_mel.yaml")
    assert paper["data"]["audio_features"] == "wav2vec2" and mel["data"]["audio_features"] == "mel"
    assert paper["model"]["net"]["init_args"]["audio_feat_dim"] == 768
    assert mel["model"]["net"]["init_args"]["audio_feat_dim"] == 100
    raw = yaml.safe_load((ROOT / "stage1_motion.yaml").read_text())["model"]["dropout"]
    assert {
        "cond_audio",
        "cond_motion",
        "rest_motion",
        "joint_attention",
        "f5",
        "tts",
        "all",
        "rates",
    } <= set(raw)
    assert paper["model"]["dropout"] == mel["model"]["dropout"]
    for cfg in (paper, mel):
        cfg["data"].pop("audio_features")
        cfg["model"]["net"]["init_args"].pop("audio_feat_dim")
    assert paper["model"] == mel["model"] and paper["data"] == mel["data"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_parses(path):
    cfg = _print_config(path)
    net = cfg["model"]["net"]
    assert net["class_path"].startswith("jam_flow.models.")
    assert net["init_args"]["attention_backend"] == "auto"
    assert cfg["model"]["stage"] in ("stage1_motion", "stage1_audio", "stage2")
    assert cfg["trainer"]["use_distributed_sampler"] is False
    assert cfg["checkpoint"]["save_last"] is True


def test_stage2_is_the_paper_setup():
    cfg = _print_config(ROOT / "stage2.yaml")
    args = cfg["model"]["net"]["init_args"]
    for branch in ("audio", "motion"):
        assert (
            args[branch]["dim"],
            args[branch]["depth"],
            args[branch]["heads"],
            args[branch]["dim_head"],
        ) == (1024, 22, 16, 64)
        assert args[branch]["dropout"] == 0.1
    assert args["joint_layers"] == "half"
    trainer = cfg["trainer"]
    assert (trainer["devices"], trainer["strategy"], trainer["precision"]) == (4, "ddp", "bf16-mixed")
    assert cfg["media"]["nfe"] == 32 and cfg["media"]["cfg"] == 2.0
    assert cfg["data"]["text_units"] == "char"  # the pretrained F5-TTS is character-based
    drop = cfg["model"]["dropout"]
    assert (
        drop["cond_audio"],
        drop["cond_motion"],
        drop["text"],
        drop["rest_motion"],
        drop["joint_attention"],
    ) == (0.1, 0.1, 0.2, 0.8, 0.1)
    assert cfg["model"]["init_audio_from"]  # the F5-TTS path placeholder is there to be overridden
