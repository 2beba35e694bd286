"""`jam-flow evaluate` end to end on a tiny random model (export dir) and a tiny hand-written dataset."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from jam_flow.cli import main as cli_main
from jam_flow.data.format import ClipRecord, write_clip, write_dataset
from jam_flow.data.text import Vocab
from jam_flow.errors import InputError
from jam_flow.eval.cli import main as evaluate_main
from jam_flow.features import MelSettings, MotionSettings, num_motion_frames
from jam_flow.inference.bundle import save_export
from jam_flow.models import JointDiT, tiny_joint_config

TEXTS = ["hello there", "a tiny clip", "lips and sound", "four of them", "one more line"]


def _write_dataset(root, source: str = "synth") -> None:
    rng = np.random.default_rng(0)
    mel_s, motion_s = MelSettings(), MotionSettings()
    records = []
    for i, text in enumerate(TEXTS):
        n = 60 + 7 * i
        duration = (n - 1) * mel_s.hop_length / mel_s.sample_rate
        m = num_motion_frames(duration)
        rec = ClipRecord(
            id=f"clip{i}",
            split="test" if i else "train",
            speaker=f"spk{i % 2}",
            duration=duration,
            n_mel=n,
            n_motion=m,
            text=text,
            features="",
        )
        arrays = {
            "mel": rng.normal(-4, 2, (n, 100)),
            "exp": rng.normal(0, 0.02, (m, 21, 3)),
            "pitch": np.zeros(m),
            "yaw": np.zeros(m),
            "roll": np.zeros(m),
            "scale": np.ones((m, 1)),
            "t": np.zeros((m, 3)),
            "kp": rng.normal(0, 0.1, (m, 21, 3)),
        }
        records.append(write_clip(root, rec, arrays))
    write_dataset(root, records, mel_s, motion_s, source)


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    data = root / "data"
    _write_dataset(data)
    vocab = Vocab.default()
    torch.manual_seed(0)
    model = JointDiT(**tiny_joint_config(len(vocab))).eval()
    stats = json.loads((data / "stats.json").read_text())
    meta = {
        "format_version": 1,
        "model": {"class_path": "jam_flow.models.JointDiT", "init_args": model.init_args},
        "mel": MelSettings().to_dict(),
        "motion": MotionSettings().to_dict(),
        "stats": stats,
        "vocab": vocab.to_list(),
        "normalize_mel": False,
    }
    export = save_export(root / "export", model, meta)
    return data, export, root


MOTION_KEYS = {
    "mouth_kp_l2",
    "mouth_open_corr",
    "offset_frames",
    "offset_mean_abs",
    "offset_within_one",
    "av_peak_corr",
    "av_corr_at_zero",
}
AUDIO_KEYS = {"envelope_corr", "mel_l1", "lsd_db", "duration_abs_s", "duration_rel", "duration_signed_s"}


@pytest.mark.parametrize(
    ("task", "metric_keys", "shuffled_keys"),
    [
        ("audio2motion", MOTION_KEYS, {"mouth_open_corr", "offset_frames", "av_peak_corr"}),
        ("motion2audio", AUDIO_KEYS | {"offset_frames", "av_peak_corr"}, {"envelope_corr", "offset_frames"}),
        ("text2av", MOTION_KEYS | AUDIO_KEYS, {"mouth_open_corr", "envelope_corr"}),
    ],
)
def test_evaluate_writes_metrics_json(tiny_setup, task, metric_keys, shuffled_keys):
    data, export, root = tiny_setup
    out = root / f"{task}.json"
    tb = root / f"tb_{task}"
    code = cli_main(
        [
            "evaluate",
            "--ckpt",
            str(export),
            "--data.data_dir",
            str(data),
            "--task",
            task,
            "--out",
            str(out),
            "--nfe",
            "2",
            "--cfg",
            "1.5",
            "--seed",
            "3",
            "--max-clips",
            "3",
            "--batch-size",
            "2",
            "--max-lag",
            "3",
            "--tb-dir",
            str(tb),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["task"] == task and result["clips"] == 3 and result["mouth_opening"] == "synth"
    assert metric_keys <= set(result["metrics"]), set(result["metrics"])
    assert shuffled_keys <= set(result["shuffled"])
    assert {"offset_frames", "av_peak_corr"} <= set(result["ground_truth"])
    assert result["settings"]["seed"] == 3 and result["settings"]["nfe"] == 2
    for section in ("metrics", "shuffled"):
        for key, value in result[section].items():
            assert value is None or math.isfinite(value), (section, key)
    assert -3 <= result["metrics"]["offset_frames"] <= 3
    assert any(p.name.startswith("events.out.tfevents") for p in tb.iterdir())


def test_evaluate_is_reproducible_and_pca_mode(tiny_setup):
    data, export, root = tiny_setup
    args = [
        "--ckpt",
        str(export),
        "--data.data_dir",
        str(data),
        "--task",
        "audio2motion",
        "--nfe",
        "2",
        "--max-clips",
        "3",
        "--seed",
        "5",
        "--mouth-opening",
        "pca",
    ]
    evaluate_main([*args, "--out", str(root / "a.json")])
    evaluate_main([*args, "--out", str(root / "b.json")])
    a, b = json.loads((root / "a.json").read_text()), json.loads((root / "b.json").read_text())
    assert a["mouth_opening"] == "pca"
    assert a["metrics"] == b["metrics"] and a["shuffled"] == b["shuffled"]


def test_evaluate_bad_input(tiny_setup, capsys):
    data, export, root = tiny_setup
    base = ["--ckpt", str(export), "--data.data_dir", str(data), "--out", str(root / "x.json")]
    with pytest.raises(InputError, match="--max-clips"):
        evaluate_main([*base, "--task", "audio2motion", "--max-clips", "1"])
    with pytest.raises(InputError, match="no clips in split 'val'"):
        evaluate_main([*base, "--task", "audio2motion", "--split", "val"])
    with pytest.raises(InputError, match="--syncnet"):
        evaluate_main([*base, "--task", "audio2motion", "--videos", str(root)])
    assert cli_main(["evaluate", *base, "--task", "audio2motion", "--ckpt", str(root / "missing")]) == 2
    assert "error: --ckpt" in capsys.readouterr().err
    with pytest.raises(InputError, match="--task"):
        evaluate_main([*base, "--task", "edit"])


@pytest.mark.parametrize("audio_only", [False, True], ids=["joint", "stage1-audio"])
def test_evaluate_tts_speaks_after_another_clips_voice(tiny_setup, audio_only, monkeypatch):
    """tts: another clip is the voice prompt; exactly the clip's own frames are generated and scored."""
    from jam_flow.api import batch as generation
    from jam_flow.models import AudioDiT

    data, export, root = tiny_setup
    if audio_only:
        vocab = Vocab.default()
        torch.manual_seed(0)
        net = AudioDiT(**tiny_joint_config(len(vocab))["audio"]).eval()
        meta = {
            "format_version": 1,
            "model": {"class_path": "jam_flow.models.AudioDiT", "init_args": net.init_args},
            "mel": MelSettings().to_dict(),
            "motion": MotionSettings().to_dict(),
            "stats": json.loads((data / "stats.json").read_text()),
            "vocab": vocab.to_list(),
            "normalize_mel": False,
        }
        export = save_export(root / "export_audio", net, meta)
    seen = []
    real = generation.task_layout

    def spy(task, given, *args, **kw):
        seen.append(
            (task, given.mel_lens.tolist(), kw["gen_frames"].tolist(), (given.text >= 0).sum(1).tolist())
        )
        return real(task, given, *args, **kw)

    monkeypatch.setattr(generation, "task_layout", spy)
    out = root / f"tts_{audio_only}.json"
    argv = ["--ckpt", str(export), "--data.data_dir", str(data), "--task", "tts", "--out", str(out)]
    argv += ["--nfe", "2", "--max-clips", "3", "--batch-size", "3", "--pocketsphinx", "off"]
    assert cli_main(["evaluate", *argv]) == 0
    result = json.loads(out.read_text())
    assert result["clips"] == 3 and result["metrics"]["duration_abs_s"] == 0.0  # the clip's own length
    assert {"envelope_corr", "mel_l1"} <= set(result["metrics"])
    ((task, ref_lens, gen_lens, text_lens),) = seen
    assert (
        task == "tts" and sorted(ref_lens) == sorted(gen_lens) and ref_lens != gen_lens
    )  # other clips' voices
    assert all(t > 0 for t in text_lens)
