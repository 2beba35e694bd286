"""The two-stage speech recipe (``make synth-recipe-speech``; docs/evaluation.md "Speech in a small world").

Orchestration: ``jam-flow`` subprocesses for the corpora, the judge and the training runs; ``eval.evaluate`` and
``eval.probes.text_use`` in process for the learning curves and the final numbers.

    python -m jam_flow.recipes.speech [--data-dir data/speech_world] [--open-dir data/speech_open]
        [--runs-dir runs/speech] [--out results/synth_recipe_speech.json] [--threads 1] [--no-train]

The paper never trains speech from scratch: its Audio-DiT starts from a pretrained F5-TTS and joint training must
keep what it knows. At CPU scale:

1. corpora: the single-voice (eSpeak NG ``en-us``, fixed rate and pitch), one-sentence-per-clip small-world corpus
   (``configs/speech/small_world_words.txt``: 2-4-word sentences; its val/test clips say only word combinations
   never said in training) and an open-vocabulary one from ``configs/speech/heldout_sentences.txt`` (same voice);
2. the judge (``jam-flow train-judge``) on the small-world train split;
3. stage 1, the F5-TTS pretraining stand-in: ``configs/speech/world_stage1_audio.yaml`` (an Audio-DiT alone, TTS
   objective, characters), and the toy Motion-DiT ``configs/speech/world_stage1_motion.yaml``;
4. stage 2: ``configs/stage2.yaml`` + ``configs/speech/world_stage2.yaml`` (stage2.yaml's masks, dropout and
   guidance at toy size), initialised from both stage-1 models (``init_audio_from`` / ``init_motion_from``);
5. evaluation on the held-out combinations (NFE 32, γ 2, the default guidance): a learning curve every 500 steps
   of both stages (tts judge CER, dub timing for stage 2, the text-use probe per flow-time bin), and the final
   checkpoints: stage 1 tts; stage 2 tts, text2av, dub, motion2audio, audio2motion (pocketsphinx WER on the
   vocoded tts / text2av audio); one open-vocabulary evaluation of the stage-2 model;
6. ``results/synth_recipe_speech.json``: ``stage1.*`` and ``stage2.*`` hold the metrics, each ``*_ground_truth``
   (the same recogniser or sync measure on the real clips) beside it, and ``targets`` says which are met.

Finished steps are reused: an existing corpus, judge or finished run (``train_info.json``) is not redone, and every
evaluation is cached beside its checkpoint, so a rerun (or ``--no-train``) assembles the result from what exists.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jam_flow.errors import ArgumentParser, InputError
from jam_flow.recipes.common import (
    add_speech_eval_options,
    jam_flow_command,
    machine,
    rel,
    run_cli,
    run_env,
    shown,
    spawn,
    write_json,
)
from jam_flow.recipes.synth_audio import _cached, _checkpoints, _heldout_split, _judge

__all__ = ["main", "targets"]

log = logging.getLogger("jam_flow.recipes.speech")

STAGE2_FINAL = ("tts", "text2av", "dub", "motion2audio", "audio2motion")
CURVE_TASKS = {"stage1": ("tts",), "stage2": ("tts", "dub")}
CURVE_KEYS = (
    "cer",
    "cer_ground_truth",
    "wer",
    "wer_ground_truth",
    "envelope_corr",
    "mel_l1",
    "offset_within_one",
    "offset_vs_ground_truth_within_one",
)
SPEECH_TASKS = ("tts", "text2av")  # pocketsphinx runs on these final evaluations
STAGE2_OVERRIDE = "world_stage2.yaml"  # under configs/speech/, on top of configs/stage2.yaml


def world_options(configs: Path) -> list[str]:
    """The ``synth-corpus`` options of the small-world corpus (also the demo's, see the Makefile)."""
    words = rel(configs / "speech" / "small_world_words.txt")
    return [
        "--words",
        words,
        "--voices",
        "en-us",
        "--rate",
        "160",
        "--pitch",
        "50",
        "--sentences-per-clip",
        "1",
    ]


def _corpus(out: Path, n_clips: int, seed: int, options: list[str], threads: int) -> dict[str, Any]:
    from collections import Counter

    from jam_flow.data.format import read_manifest

    cmd = [
        *jam_flow_command(),
        "synth-corpus",
        "--out",
        str(out),
        "--n-clips",
        str(n_clips),
        "--seed",
        str(seed),
    ]
    cmd += options
    if not (out / "manifest.jsonl").is_file():
        log.info("corpus: %s", shown(cmd))
        subprocess.run(cmd, check=True, env=run_env(threads))
    records = read_manifest(out)
    return {
        "dir": rel(out),
        "command": shown(cmd),
        "clips": dict(Counter(r.split for r in records)),
        "hours": round(sum(r.duration for r in records) / 3600, 3),
        "max_clip_s": round(max(r.duration for r in records), 2),
    }


def _fit(
    name: str, cmd: list[str], run: Path, args: argparse.Namespace, max_time: str | None
) -> dict[str, Any]:
    """Run ``jam-flow fit`` once (``train_info.json`` marks a finished run); ``--no-train``: what exists."""
    cmd = [*cmd, "--trainer.default_root_dir", str(run), "--progress_bar.refresh_rate", "0"]
    if max_time:
        cmd += ["--trainer.max_time", max_time]
    info_path = run / "train_info.json"
    if info_path.is_file():
        return json.loads(info_path.read_text())
    if args.no_train:
        ckpts = _checkpoints(run)
        return {"status": "partial (--no-train)", "command": shown(cmd), "steps_done": max(ckpts, default=0)}
    run.mkdir(parents=True, exist_ok=True)
    log.info("%s: %s", name, shown(cmd))
    start = time.perf_counter()
    proc, logf = spawn(cmd, run / "train.log", args.threads)
    proc.wait()
    logf.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); see {run / 'train.log'}")
    ckpts = _checkpoints(run)
    info = {
        "status": "done",
        "command": shown(cmd),
        "train_wall_s": round(time.perf_counter() - start, 1),
        "steps_done": max(ckpts, default=0),
        "threads": args.threads,
        "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(info_path, info)
    return info


def _last(run: Path) -> Path:
    found = sorted(
        run.glob("lightning_logs/version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime
    )
    if not found:
        raise InputError(f"--runs-dir: {run} holds no last.ckpt (the run has not finished a step)")
    return found[-1]


def _evaluate(ckpt: Path, task: str, data: Path, clips: int, args: argparse.Namespace, sphinx: str) -> dict:
    """``jam-flow evaluate`` in process, cached beside the checkpoint."""
    from jam_flow.eval.evaluate import EvalSettings, evaluate

    judge = Path(args.runs_dir) / "judge"
    settings = EvalSettings(
        ckpt=str(ckpt),
        data_dir=str(data),
        task=task,
        split="test",
        max_clips=clips,
        nfe=args.nfe,
        cfg=args.cfg,
        seed=args.seed,
        batch_size=args.eval_batch,
        judge=str(judge) if task != "audio2motion" else None,
        pocketsphinx=sphinx,
    )

    def run() -> dict[str, Any]:
        log.info("evaluate %s on %s (%s, %d clips)", task, rel(ckpt), rel(data), clips)
        result = evaluate(settings)
        result["settings"].update(ckpt=rel(ckpt), data_dir=rel(data), judge=settings.judge and rel(judge))
        return result

    return _cached(ckpt, task, [dataclasses.asdict(settings)], run)


def _text_use(ckpt: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``eval.probes.text_use`` (gain per flow-time bin) on the held-out test clips, cached like ``_evaluate``."""
    from jam_flow.eval.evaluate import EvalSettings, _load_items
    from jam_flow.eval.probes import text_use
    from jam_flow.inference.bundle import load_bundle

    def run() -> dict[str, Any]:
        log.info("text-use probe on %s", rel(ckpt))
        bundle = load_bundle(ckpt)
        settings = EvalSettings(ckpt=str(ckpt), data_dir=str(data), task="text2av", split="test")
        items, _, _ = _load_items(settings, bundle)
        return text_use(bundle, items[: args.probe_clips], seed=args.seed)

    return _cached(ckpt, "text_use_bins", [str(ckpt), str(data), args.seed, args.probe_clips], run)


def flatten(task: str, result: dict[str, Any]) -> dict[str, Any]:
    """``{task}_{metric}`` for every metric, ``{task}_{key}_ground_truth`` for the real clips' sync section and
    ``{task}_{metric}_shuffled`` for the mismatched-pairs baseline."""
    out = {f"{task}_{k}": v for k, v in result["metrics"].items()}
    out.update({f"{task}_{k}_ground_truth": v for k, v in result["ground_truth"].items()})
    out.update({f"{task}_{k}_shuffled": v for k, v in result["shuffled"].items()})
    return out


def _gain(probe: dict[str, Any]) -> dict[str, Any]:
    """The probe's gains (own text vs another clip's), overall and per flow-time bin."""
    out = {k: v for k, v in probe.items() if "gain" in k}
    for name, section in probe.get("bins", {}).items():
        out.update({f"{k}_{name}": v for k, v in section.items() if "gain" in k})
    return out


def _curve(run: Path, stage: str, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    ckpts = _checkpoints(run)
    curve: dict[str, Any] = {}
    for step in sorted(s for s in ckpts if s % args.curve_every == 0):
        point: dict[str, Any] = {"clips": args.curve_clips}
        for task in CURVE_TASKS[stage]:
            res = _evaluate(ckpts[step], task, data, args.curve_clips, args, "off")
            point[task] = {k: v for k, v in res["metrics"].items() if k in CURVE_KEYS}
        point["text_use"] = _gain(_text_use(ckpts[step], data, args))
        curve[str(step)] = point
    return curve


def targets(stage1: dict[str, Any], stage2: dict[str, Any]) -> dict[str, Any]:
    """The recipe's targets (docs/evaluation.md), each ``{"value", "threshold", "met"}`` (None: not measured)."""
    out: dict[str, Any] = {}

    def add(name: str, value: float | None, threshold: float | None, op: str) -> None:
        met = None
        if value is not None and threshold is not None:
            met = value <= threshold if op == "<=" else value >= threshold
        out[name] = {
            "value": value,
            "threshold": None if threshold is None else round(threshold, 4),
            "met": met,
        }

    gt1 = stage1.get("tts_cer_ground_truth")
    cer1 = stage1.get("tts_cer")
    add(
        "stage1.tts_cer <= max(2 x ground truth, ground truth + 0.10)",
        cer1,
        None if gt1 is None else max(2 * gt1, gt1 + 0.10),
        "<=",
    )
    add(
        "stage2.tts_cer <= 1.25 x stage1.tts_cer + 0.02",
        stage2.get("tts_cer"),
        None if cer1 is None else 1.25 * cer1 + 0.02,
        "<=",
    )
    add(
        "stage2.dub_offset_vs_ground_truth_within_one >= 0.8",
        stage2.get("dub_offset_vs_ground_truth_within_one"),
        0.8,
        ">=",
    )
    add("stage2.motion2audio_envelope_corr >= 0.5", stage2.get("motion2audio_envelope_corr"), 0.5, ">=")
    return out


def _train_all(args: argparse.Namespace, configs: Path, data: Path) -> dict[str, Any]:
    """Stage 1 (audio, then motion), then stage 2 from both; every run reused once finished."""
    runs = Path(args.runs_dir)
    base = [*jam_flow_command(), "fit", "--data.data_dir", str(data)]
    audio_cfg = rel(configs / "speech" / "world_stage1_audio.yaml")
    motion_cfg = rel(configs / "speech" / "world_stage1_motion.yaml")
    out = {
        "stage1_audio": _fit(
            "stage 1 audio", [*base, "--config", audio_cfg], runs / "stage1_audio", args, args.stage1_max_time
        ),
        "stage1_motion": _fit(
            "stage 1 motion", [*base, "--config", motion_cfg], runs / "stage1_motion", args, None
        ),
    }
    if (
        args.stage1_continue
    ):  # the evidence run: stage 1 resumed past its cap (stage 2 starts from the capped one)
        cmd = [*base, "--config", audio_cfg, "--ckpt_path", rel(_last(runs / "stage1_audio"))]
        out["stage1_audio_continued"] = _fit(
            "stage 1 audio, continued", cmd, runs / "stage1_audio_more", args, args.stage1_continue
        )
    if args.stage1_only:
        return out
    cmd = [
        *base,
        "--config",
        rel(configs / "stage2.yaml"),
        "--config",
        rel(configs / "speech" / STAGE2_OVERRIDE),
    ]
    cmd += ["--model.init_audio_from", rel(_last(runs / "stage1_audio"))]
    cmd += ["--model.init_motion_from", rel(_last(runs / "stage1_motion"))]
    out["stage2"] = _fit("stage 2", cmd, runs / "stage2", args, args.stage2_max_time)
    return out


def _stage1(args: argparse.Namespace, configs: Path, data: Path, training: dict[str, Any]) -> dict[str, Any]:
    run = Path(args.runs_dir) / "stage1_audio"
    section: dict[str, Any] = {
        "config": rel(configs / "speech" / "world_stage1_audio.yaml"),
        "motion_config": rel(configs / "speech" / "world_stage1_motion.yaml"),
        "training": {k: training[k] for k in ("stage1_audio", "stage1_motion")},
    }
    ckpts = _checkpoints(run)
    if ckpts:
        step = max(ckpts)
        res = _evaluate(ckpts[step], "tts", data, args.eval_clips, args, args.pocketsphinx)
        section.update(step=step, checkpoint=rel(ckpts[step]), clips=res["clips"])
        section.update(flatten("tts", res))
        section["text_gain"] = _gain(_text_use(ckpts[step], data, args))
    section["curve"] = _curve(run, "stage1", data, args)
    more = _checkpoints(Path(args.runs_dir) / "stage1_audio_more")
    if more:  # the continued run's checkpoints on the final evaluation's clips (no pocketsphinx)
        section["continued"] = {"training": training.get("stage1_audio_continued"), "curve": {}}
        for step in sorted(more):
            res = _evaluate(more[step], "tts", data, args.eval_clips, args, "off")
            point = {k: v for k, v in res["metrics"].items() if k in CURVE_KEYS}
            section["continued"]["curve"][str(step)] = {
                "clips": res["clips"],
                "tts": point,
                "text_use": _gain(_text_use(more[step], data, args)),
            }
    return section


def _stage2(
    args: argparse.Namespace, configs: Path, data: Path, open_dir: Path, training: dict[str, Any]
) -> dict[str, Any]:
    run = Path(args.runs_dir) / "stage2"
    section: dict[str, Any] = {
        "config": f"{rel(configs / 'stage2.yaml')} + {rel(configs / 'speech' / STAGE2_OVERRIDE)}",
        "training": training.get("stage2"),
    }
    ckpts = _checkpoints(run)
    if ckpts:
        step = max(ckpts)
        section.update(step=step, checkpoint=rel(ckpts[step]))
        for task in STAGE2_FINAL:
            sphinx = args.pocketsphinx if task in SPEECH_TASKS else "off"
            res = _evaluate(ckpts[step], task, data, args.eval_clips, args, sphinx)
            section.update(flatten(task, res))
            section[f"{task}_clips"] = res["clips"]
        section["text_gain"] = _gain(_text_use(ckpts[step], data, args))
        res = _evaluate(ckpts[step], "text2av", open_dir, args.open_clips, args, args.pocketsphinx)
        section["open_vocabulary"] = {
            "data_dir": rel(open_dir),
            "clips": res["clips"],
            **flatten("text2av", res),
        }
    section["curve"] = _curve(run, "stage2", data, args)
    return section


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m jam_flow.recipes.speech", description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default="data/speech_world", help="small-world corpus (built when missing)")
    p.add_argument("--open-dir", default="data/speech_open", help="open-vocabulary held-out corpus")
    p.add_argument("--n-clips", type=int, default=4000, help="clips of the small-world corpus (default 4000)")
    p.add_argument("--open-clips", type=int, default=16, help="open-vocabulary clips evaluated (default 16)")
    p.add_argument("--configs-dir", default="configs", help="the repository's configs/ (default ./configs)")
    p.add_argument("--runs-dir", default="runs/speech", help="judge/, stage1_audio/, stage1_motion/, stage2/")
    p.add_argument("--out", default="results/synth_recipe_speech.json", help="result JSON")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads per run (default 1: a shared machine)"
    )
    p.add_argument("--stage1-max-time", default=None, help="override stage 1 audio's trainer.max_time")
    p.add_argument("--stage2-max-time", default=None, help="override stage 2's trainer.max_time")
    p.add_argument(
        "--stage1-continue",
        default="00:00:45:00",
        help="resume stage 1 audio into runs-dir/stage1_audio_more until this total trainer.max_time, for the "
        "curve past the cap (stage 2 still starts from the capped run); '' skips it",
    )
    p.add_argument("--no-train", action="store_true", help="start no training: use the checkpoints so far")
    p.add_argument("--stage1-only", action="store_true", help="stop after stage 1 (its section only)")
    p.add_argument("--probe-clips", type=int, default=24, help="held-out clips of the text-use probe")
    add_speech_eval_options(p, judge_minutes=10.0, eval_clips=30)
    return p


def main(argv: list[str] | None = None) -> int:
    import torch

    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    started, t0 = dt.datetime.now(dt.timezone.utc), time.perf_counter()
    configs = Path(args.configs_dir)
    needed = [
        configs / "stage2.yaml",
        *(configs / "speech" / n for n in ("small_world_words.txt", "heldout_sentences.txt")),
        *(configs / "speech" / f"world_{n}.yaml" for n in ("stage1_audio", "stage1_motion", "stage2")),
    ]
    for path in needed:
        if not path.is_file():
            raise InputError(f"--configs-dir: {path} does not exist")
    data, open_dir = Path(args.data_dir), Path(args.open_dir)
    corpus = {"world": _corpus(data, args.n_clips, 0, world_options(configs), args.threads)}
    corpus["world"]["words"] = rel(configs / "speech" / "small_world_words.txt")
    corpus["world"]["rule"] = "val and test clips say only word combinations never said in training (by seed)"
    open_options = ["--sentences", rel(configs / "speech" / "heldout_sentences.txt")]
    open_options += world_options(configs)[2:]  # the same voice, rate, pitch, one sentence a clip
    corpus["open_vocabulary"] = _corpus(open_dir, 40, 1, open_options, args.threads)
    corpus["open_vocabulary"]["test_clips"] = _heldout_split(open_dir, 1e9)
    judge = _judge(argparse.Namespace(**{**vars(args), "data_dir": str(data)}), Path(args.runs_dir) / "judge")
    training = _train_all(args, configs, data)
    stage1 = _stage1(args, configs, data, training)
    stage2 = {} if args.stage1_only else _stage2(args, configs, data, open_dir, training)
    result = {
        "recipe": "two-stage speech in a small world (docs/evaluation.md)",
        "command": shlex.join(["python", "-m", "jam_flow.recipes.speech", *argv]),
        "reproduce": "make synth-recipe-speech  (= python -m jam_flow.recipes.speech)",
        "machine": machine(args.threads),
        "started_utc": started.isoformat(timespec="seconds"),
        "corpus": corpus,
        "judge": judge,
        "eval": {
            "data_dir": rel(data),
            "split": "test (held-out word combinations)",
            "nfe": args.nfe,
            "cfg": args.cfg,
            "guidance": "joint (the paper's; tts falls back to f5: no motion stream)",
            "seed": args.seed,
            "eval_clips": args.eval_clips,
            "curve_clips": args.curve_clips,
            "tts_reference": "another held-out clip's audio and text (a seeded derangement)",
        },
        "stage1": stage1,
        "stage2": stage2,
        "targets": targets(stage1, stage2),
        "wall_time_s": round(time.perf_counter() - t0, 1),
    }
    write_json(Path(args.out), result)
    print(json.dumps(result["targets"], indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
