"""Speech metrics: CER / WER against hand-computed cases, the judge trained for a few steps and reloaded,
the timing estimator on a known shift, and `jam-flow evaluate --judge` end to end on a tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from jam_flow.cli import main as cli_main
from jam_flow.data.format import ClipRecord, write_clip, write_dataset
from jam_flow.errors import InputError
from jam_flow.eval.judge import error_rates, train_judge
from jam_flow.eval.metrics import AVOffset
from jam_flow.eval.speech import timing_metrics
from jam_flow.features import MelSettings, MotionSettings, num_motion_frames
from jam_flow.models.judge import CHARSET, CTCJudge, JudgeConfig, judge_text, load_judge

WORDS = ["abc", "bad", "cab", "dab", "ace", "bead"]
TINY = JudgeConfig(channels=32, conv_blocks=1, rnn_hidden=32)


# ------------------------------------------------------------------------------------------------ CER / WER
def test_error_rates_match_hand_computed_cases():
    # "the cat sat" vs "the bat sat": 1 substituted character of 11, 1 substituted word of 3
    one = error_rates(["the bat sat"], ["The CAT, sat."])
    assert one["cer"] == pytest.approx(1 / 11)
    assert one["wer"] == pytest.approx(1 / 3)
    # "hello world" vs "hello": 6 deleted characters (" world") of 11, 1 deleted word of 2
    two = error_rates(["hello"], ["hello world"])
    assert two["cer"] == pytest.approx(6 / 11)
    assert two["wer"] == pytest.approx(1 / 2)
    # corpus level: errors and reference lengths are summed over clips
    both = error_rates(["the bat sat", "hello"], ["the cat sat", "hello world"])
    assert both["cer"] == pytest.approx(7 / 22)
    assert both["wer"] == pytest.approx(2 / 5)
    # an inserted word: "a b" -> "a x b": 1 insertion over 2 words; 2 inserted characters over 3
    three = error_rates(["a x b"], ["a b"])
    assert three["wer"] == pytest.approx(1 / 2)
    assert three["cer"] == pytest.approx(2 / 3)
    assert error_rates(["same words"], ["same words"]) == {"cer": 0.0, "wer": 0.0}


def test_error_rates_refuse_mismatched_or_empty_input():
    with pytest.raises(InputError, match="hypotheses"):
        error_rates(["a"], ["a", "b"])
    with pytest.raises(InputError, match="empty"):
        error_rates(["a"], ["?!"])


def test_judge_text_normalises_like_the_scoring():
    assert judge_text("Don't stop, Mr. Smith!  Now.") == "don't stop mr smith now"
    assert set(judge_text("Hello; 42 world?")) <= set(CHARSET)


# ------------------------------------------------------------------------------------------------ the judge
def _toy_mel(text: str, rng: np.random.Generator) -> np.ndarray:
    """Each character is 5 frames of a bump at its own channel, then 2 quiet frames: a decodable toy 'speech'."""
    frames = []
    for ch in text:
        block = np.full((7, 100), -8.0)
        block[:5, 3 * CHARSET.index(ch) % 100] = 2.0
        frames.append(block)
    mel = np.concatenate([np.full((4, 100), -8.0), *frames, np.full((4, 100), -8.0)])
    return mel + 0.05 * rng.standard_normal(mel.shape)


def _write_toy_dataset(root: Path, texts: list[str], splits: list[str], mel_fn=_toy_mel) -> Path:
    rng = np.random.default_rng(0)
    mel_s, motion_s = MelSettings(), MotionSettings()
    records = []
    for i, (text, split) in enumerate(zip(texts, splits, strict=True)):
        mel = mel_fn(text, rng)
        n = mel.shape[0]
        duration = (n - 1) * mel_s.hop_length / mel_s.sample_rate
        m = num_motion_frames(duration)
        opening = np.clip(np.convolve(mel.max(1) > 0, np.ones(4) / 4, "same")[:: max(n // m, 1)][:m], 0, 1)
        exp = 0.01 * rng.standard_normal((m, 21, 3))
        exp[: len(opening), list(motion_s.mouth_indices), 1] += 0.05 * opening[:, None]
        arrays = {
            "mel": mel,
            "exp": exp,
            "pitch": np.zeros(m),
            "yaw": np.zeros(m),
            "roll": np.zeros(m),
            "scale": np.ones((m, 1)),
            "t": np.zeros((m, 3)),
            "kp": np.zeros((m, 21, 3)),
        }
        rec = ClipRecord(f"clip{i:03d}", split, "spk0", duration, n, m, text, "")
        records.append(write_clip(root, rec, arrays))
    write_dataset(root, records, mel_s, motion_s, "test")
    return root


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("judge") / "data"
    texts = [f"{a} {b}" for a in WORDS for b in WORDS[:3]] + ["abc dab", "bead ace"]
    return _write_toy_dataset(root, texts, ["train"] * (len(texts) - 2) + ["val", "test"])


@pytest.fixture(scope="module")
def trained_judge(toy_data, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("judge") / "judge"
    torch.manual_seed(0)
    info = train_judge(toy_data, out, steps=40, frames_per_batch=400, lr=5e-3, config=TINY, log_every=10)
    return out, info


def test_train_judge_saves_safetensors_and_learns(trained_judge, toy_data):
    out, info = trained_judge
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((out / "config.json").read_text())
    assert meta["format"] == "jam-flow-judge" and meta["model"]["channels"] == TINY.channels
    assert info["steps"] == 40 and info["train_clips"] == 18
    assert info["final_ctc_loss"] < 0.7 * info["first_ctc_loss"]  # a few steps already move the CTC loss
    assert {"val_cer", "val_wer"} <= set(meta["info"])
    judge = load_judge(out)
    mel = torch.from_numpy(_toy_mel("abc dab", np.random.default_rng(5))).float()
    assert judge.transcribe([mel]) == judge.transcribe(mel[None])  # list and padded batch agree
    assert all(ch in CHARSET for ch in judge.transcribe([mel])[0])


def test_load_judge_errors_name_the_flag(tmp_path, trained_judge):
    with pytest.raises(InputError, match="--judge"):
        load_judge(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"format": "jam-flow-judge", "version": 1, "model": {}}))
    (bad / "model.safetensors").write_bytes((trained_judge[0] / "model.safetensors").read_bytes())
    with pytest.raises(InputError, match="does not match"):
        load_judge(bad)


def test_train_judge_cli_bad_input_is_one_line(tmp_path, capsys):
    assert cli_main(["train-judge", "--data.data_dir", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: --data.data_dir")


def test_ctc_judge_output_lengths_follow_the_stride():
    judge = CTCJudge(TINY).eval()
    mask = torch.arange(50)[None] < torch.tensor([[50], [31]])
    log_probs, lengths = judge(torch.randn(2, 50, 100), mask)
    assert log_probs.shape == (2, 25, len(CHARSET) + 1)
    assert lengths.tolist() == [25, 16]
    # padding never changes a valid output
    short, _ = judge(torch.randn(1, 31, 100).expand(2, -1, -1)[:1], None)
    assert torch.isfinite(short).all()


# ------------------------------------------------------------------------------------------------ timing
def _signals(m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random 'speech envelope' and a mouth opening that follows it by one frame (like the corpus)."""
    g = torch.Generator().manual_seed(seed)
    env = torch.nn.functional.avg_pool1d(torch.rand(1, 1, m + 8, generator=g), 5, 1)[0, 0, :m] * 10
    opening = torch.cat([env[:1], env[:-1]])  # opening[j] = env[j - 1]
    return opening, env


@pytest.mark.parametrize("shift", [0, 3, -2])
def test_timing_metrics_recover_a_known_shift(shift):
    per_clip = []
    for seed in range(6):
        opening, env = _signals(120, seed)
        gen = torch.roll(env, shift)  # generated speech = the original speech delayed by `shift` frames
        per_clip.append({"ref_open": opening[10:-10], "ref_env": env[10:-10], "gen_env": gen[10:-10]})
    out = timing_metrics(per_clip, max_lag=6)
    assert out["envelope_lag_frames"] == shift
    assert out["offset_vs_ground_truth_within_one"] == (1.0 if abs(shift) <= 1 else 0.0)
    assert out["offset_vs_ground_truth_mean_abs"] == pytest.approx(abs(shift))
    # the A/V offset estimator of evaluate (AVOffset, the audio -> motion one) sees the same shift
    metric = AVOffset(max_lag=6)
    for c in per_clip:
        metric.update(c["ref_open"][None], c["gen_env"][None])
    assert metric.compute()["offset_frames"] == 1 - shift


# ------------------------------------------------------------------------------------------------ evaluate --judge
@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory, toy_data) -> Path:
    from jam_flow.inference.bundle import save_export
    from jam_flow.inference.testing import joint_meta, random_joint_net
    from jam_flow.models import tiny_joint_config

    meta = joint_meta(tiny_joint_config(), json.loads((toy_data / "stats.json").read_text()))
    return save_export(tmp_path_factory.mktemp("export") / "export", random_joint_net(meta), meta)


@pytest.mark.parametrize("task", ["dub", "text2av", "motion2audio"])
def test_evaluate_with_judge_reports_cer_wer_beside_ground_truth(
    tmp_path, toy_data, tiny_export, trained_judge, task
):
    out = tmp_path / "r.json"
    argv = ["evaluate", "--ckpt", str(tiny_export), "--data.data_dir", str(toy_data), "--task", task]
    argv += ["--split", "train", "--max-clips", "3", "--nfe", "2", "--judge", str(trained_judge[0])]
    argv += ["--pocketsphinx", "off", "--max-lag", "3", "--out", str(out)]
    assert cli_main(argv) == 0
    metrics = json.loads(out.read_text())["metrics"]
    for key in ("cer", "wer"):
        assert 0.0 <= metrics[key] and 0.0 <= metrics[f"{key}_ground_truth"]
    assert "wer_pocketsphinx" not in metrics and "cer_vocoded" not in metrics
    if task in ("dub", "motion2audio"):
        assert {"offset_within_one", "envelope_corr", "offset_vs_ground_truth_within_one"} <= set(metrics)


def test_evaluate_judge_refuses_a_task_without_speech(tmp_path, toy_data, tiny_export, trained_judge, capsys):
    argv = [
        "evaluate",
        "--ckpt",
        str(tiny_export),
        "--data.data_dir",
        str(toy_data),
        "--task",
        "audio2motion",
    ]
    argv += ["--judge", str(trained_judge[0]), "--out", str(tmp_path / "r.json")]
    assert cli_main(argv) == 2
    assert "--judge" in capsys.readouterr().err


@pytest.mark.slow  # pocketsphinx decodes at about real time on a busy 2-core CPU
def test_evaluate_with_judge_vocoded_and_pocketsphinx(tmp_path, toy_data, tiny_export, trained_judge):
    pytest.importorskip("pocketsphinx")
    out = tmp_path / "r.json"
    argv = ["evaluate", "--ckpt", str(tiny_export), "--data.data_dir", str(toy_data), "--task", "dub"]
    argv += ["--split", "train", "--max-clips", "2", "--nfe", "2", "--judge", str(trained_judge[0])]
    argv += ["--pocketsphinx", "on", "--out", str(out)]
    assert cli_main(argv) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert {"wer_pocketsphinx", "wer_pocketsphinx_ground_truth"} <= set(metrics)
    assert metrics["wer_pocketsphinx_ground_truth"] >= 0.0


# ------------------------------------------------------------------------------------------------ val/cer
def test_validation_media_logs_val_cer_from_the_judge(tmp_path, trained_judge):
    from types import SimpleNamespace

    from lightning_support import make_dataset

    from jam_flow.lightning.callbacks import ValidationMedia
    from jam_flow.lightning.datamodule import JAMFlowDataModule
    from jam_flow.lightning.module import JAMFlowModule
    from jam_flow.models import JointDiT

    root = make_dataset(tmp_path / "ds", n_train=2, n_val=2, min_s=0.5, max_s=0.7)
    dm = JAMFlowDataModule(str(root), frames_per_batch=400, max_samples=4, num_workers=0)
    dm.setup("fit")
    branch = dict(dim=32, depth=2, heads=2, dim_head=16, ff_mult=2)
    net = JointDiT(
        audio=dict(branch, text_dim=16, conv_layers=1, text_num_embeds=dm.vocab_size), motion=branch, window=4
    )
    module = JAMFlowModule(net, stage="stage2")
    module.set_data_meta(dm.meta())
    module.val_batch = next(iter(dm.val_dataloader()))
    callback = ValidationMedia(num_clips=0, nfe=2, judge_path=str(trained_judge[0]), judge_clips=2)
    tags: dict[str, float] = {}
    writer = SimpleNamespace(
        add_figure=None, add_scalar=lambda tag, value, global_step=None: tags.update({tag: value})
    )
    trainer = SimpleNamespace(
        sanity_checking=False, is_global_zero=True, global_step=5, logger=SimpleNamespace(experiment=writer)
    )
    callback.on_validation_epoch_end(trainer, module)
    assert set(tags) == {"val/cer", "val/cer_ground_truth"}
    assert all(v >= 0.0 for v in tags.values())
    with pytest.raises(InputError, match="--judge"):
        ValidationMedia(judge_path=str(tmp_path / "no_judge"))


# ------------------------------------------------------------------------------------------------ the recipe
def test_speech_recipe_config_parses_and_trains_every_layout(capsys):
    import yaml

    from jam_flow.lightning.cli import fit_main

    config = Path(__file__).resolve().parents[1] / "configs" / "speech" / "synth_audio.yaml"
    with pytest.raises(SystemExit) as exc:
        fit_main(["--config", str(config), "--print_config"])
    assert exc.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    masking, dropout = cfg["model"]["masking"], cfg["model"]["dropout"]
    # every task layout keeps a nonzero rate: text->speech+motion, audio->motion, motion(+text)->speech
    assert min(masking["p_both"], masking["p_motion_only"], masking["p_audio_only"]) > 0
    assert 0 < dropout["text"] < 1  # dub (text given) and motion2audio (text dropped) both occur
    assert cfg["model"]["decay_steps"] == 0 and cfg["trainer"]["max_time"]


def test_sentence_lists_are_disjoint():
    speech = Path(__file__).resolve().parents[1] / "configs" / "speech"
    train = set((speech / "train_sentences.txt").read_text().splitlines()) - {""}
    heldout = set((speech / "heldout_sentences.txt").read_text().splitlines()) - {""}
    assert train and heldout and not train & heldout


def test_project_steps_solves_the_log_linear_fit():
    from jam_flow.recipes.synth_audio import project_steps

    steps = [500, 1000, 2000, 4000]
    values = [1.0 - 0.1 * math.log(s / 500) for s in steps]  # value = a + b ln(step) with b = -0.1
    out = project_steps(steps, values, target=0.5)
    assert out["b"] == pytest.approx(-0.1, abs=1e-4)
    assert out["steps_needed"] == pytest.approx(500 * math.exp(5), rel=1e-3)
    assert (
        project_steps(steps, [0.9, 0.9, 0.95, 1.0], 0.5)["steps_needed"] is None
    )  # not falling: no projection
    assert project_steps(steps[:2], values[:2], 0.5)["steps_needed"] is None
    assert project_steps(steps, values, target=0.95)["steps_needed"] == 1000  # already reached


def test_evaluate_with_judge_and_vocoder_reports_the_vocoded_pair(
    tmp_path, toy_data, tiny_export, trained_judge
):
    from jam_flow.inference.testing import vocos_config, write_random_vocos

    vocos = tmp_path / "vocos"
    write_random_vocos(vocos, vocos_config())
    out = tmp_path / "r.json"
    argv = ["evaluate", "--ckpt", str(tiny_export), "--data.data_dir", str(toy_data), "--task", "text2av"]
    argv += ["--split", "train", "--max-clips", "2", "--nfe", "2", "--judge", str(trained_judge[0])]
    argv += ["--vocoder", str(vocos), "--pocketsphinx", "off", "--out", str(out)]
    assert cli_main(argv) == 0
    metrics = json.loads(out.read_text())["metrics"]
    for key in ("cer", "wer", "cer_vocoded", "wer_vocoded"):
        assert metrics[key] >= 0.0 and metrics[f"{key}_ground_truth"] >= 0.0


# ------------------------------------------------------------------------------------------------ text-use probe
def _probe_items(bundle, data_dir: Path, n: int = 4) -> list[dict]:
    from jam_flow.data.dataset import ClipDataset
    from jam_flow.data.format import read_manifest

    records = read_manifest(data_dir, split="train")[:n]
    ds = ClipDataset(data_dir, records, bundle.vocab, bundle.mel, bundle.motion)
    return [ds[i] for i in range(len(ds))]


def test_text_use_is_reproducible_and_gain_is_the_loss_difference(tiny_export, toy_data):
    from jam_flow.eval.probes import text_use
    from jam_flow.inference.bundle import load_bundle

    bundle = load_bundle(tiny_export)
    items = _probe_items(bundle, toy_data)
    out = text_use(bundle, items, batch_size=3, seed=1)
    assert (
        out["clips"] == 4
        and out["per_bin"] == 2
        and sorted(out["bins"]) == ["t0.0-0.3", "t0.3-0.7", "t0.7-1.0"]
    )
    for key in ("loss_own_text", "loss_no_text", "loss_other_text"):
        assert math.isfinite(out[key]) and out[key] > 0
    assert out["text_gain"] == pytest.approx(out["loss_other_text"] - out["loss_own_text"])
    assert text_use(bundle, items, batch_size=3, seed=1) == out
    with pytest.raises(InputError, match="at least 2 clips"):
        text_use(bundle, items[:1])


def test_text_use_is_zero_for_a_model_that_ignores_the_text(tiny_export, toy_data):
    from jam_flow.eval.probes import text_use
    from jam_flow.inference.bundle import load_bundle

    bundle = load_bundle(tiny_export)
    with torch.no_grad():
        bundle.model.audio.text_embed.text_embed.weight.zero_()  # every token embeds to 0: the text cannot matter
    out = text_use(bundle, _probe_items(bundle, toy_data))
    assert out["text_gain"] == 0.0 and all(b["text_gain"] == 0.0 for b in out["bins"].values())


def test_text_use_gain_is_positive_for_a_model_that_reads_the_text(tiny_export, toy_data):
    """A stand-in network that knows each clip's mel by its text: the exact velocity for the clip's own text, the
    velocity towards the other clip's mel for another clip's text, 0 without text."""
    import dataclasses

    from jam_flow.eval.probes import text_use
    from jam_flow.inference.bundle import load_bundle

    bundle = load_bundle(tiny_export)
    items = _probe_items(bundle, toy_data)
    by_text = {tuple(it["text"].tolist()): bundle.mel_to_model(it["mel"].float()) for it in items}

    class Reader(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, audio_x, text, time, drop_text=False, **_):
            v = torch.zeros_like(audio_x)
            for i, row in enumerate(text):
                x1 = by_text.get(tuple(row[row >= 0].tolist()))
                if not drop_text and x1 is not None and x1.shape[0] <= audio_x.shape[1]:
                    n = x1.shape[0]
                    v[i, :n] = (x1 - audio_x[i, :n]) / (1 - time[i])
            return v, None

    out = text_use(dataclasses.replace(bundle, model=Reader()), items, batch_size=2)
    assert out["loss_own_text"] == pytest.approx(0.0, abs=1e-8)
    assert out["loss_other_text"] > 0.5 and out["text_gain"] == pytest.approx(out["loss_other_text"])
    assert out["loss_no_text"] > 0.5


def test_recipe_text_use_probe_is_cached_beside_the_checkpoint(tmp_path, tiny_export, monkeypatch):
    import jam_flow.eval.probes as probes
    from jam_flow.recipes import synth_audio as recipe_audio

    heldout = _write_toy_dataset(tmp_path / "heldout", ["abc dab", "bead ace", "cab bad"], ["test"] * 3)
    args = recipe_audio._parser().parse_args(["--heldout-dir", str(heldout)])
    first = recipe_audio._text_use(tiny_export, args)
    assert first["clips"] == 3 and math.isfinite(first["text_gain"])
    assert len(list(tiny_export.parent.glob("speech_export_text_use_*.json"))) == 1

    def fail(*_, **__):
        raise AssertionError("the cached probe must not run again")

    monkeypatch.setattr(probes, "text_use", fail)
    assert recipe_audio._text_use(tiny_export, args) == first
