"""The speech recipe (``make synth-recipe-audio``; docs/evaluation.md "Speech"): does the audio half learn?

Orchestration: subprocesses for the corpora, the judge and training; ``eval.evaluate`` in process for the learning
curves and the final numbers.

    python -m jam_flow.recipes.synth_audio [--data-dir data/synth_audio] [--heldout-dir data/synth_audio_heldout]
        [--runs-dir runs/synth_audio] [--out results/synth_recipe_audio.json] [--threads 2] [--no-train]

1. builds the training corpus from ``configs/speech/train_sentences.txt`` and a held-out corpus (another seed)
   from ``configs/speech/heldout_sentences.txt``: no held-out sentence occurs in training (93 of the 220 held-out
   words never do). Held-out clips up to the training clip length become its ``test`` split;
2. trains the judge (``jam-flow train-judge``) on the training corpus's train split;
3. trains ``configs/speech/synth_audio.yaml`` (2-hour wall-clock cap; a checkpoint every 250 steps);
4. evaluates every curve checkpoint on ``--curve-clips`` held-out clips (text2av judge CER, dub timing; and
   ``eval.probes.text_use`` on all held-out test clips: does the audio flow use the text at all?) and the
   last checkpoint on ``--eval-clips`` (text2av, dub, motion2audio, audio2motion, with shuffled pairs and ground
   truth), NFE 32 and the paper's γ = 2;
5. writes the result JSON: command, machine, wall times, curves, final metrics, targets (met or not) and a
   projection of the steps the CER target needs from the curve.

Finished steps are reused: an existing corpus, judge or finished run (``train_info.json``) is not redone and an
evaluation is cached beside its checkpoint, so ``--no-train`` assembles the result from whatever the run has written.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
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

__all__ = ["main", "project_steps", "TARGETS"]

log = logging.getLogger("jam_flow.recipes.synth_audio")

CURVE_TASKS = ("text2av", "dub")
FINAL_TASKS = ("text2av", "dub", "motion2audio", "audio2motion")
CURVE_KEYS = {
    "text2av": ("cer", "cer_ground_truth", "wer", "wer_ground_truth", "envelope_corr", "mel_l1"),
    "dub": (
        "cer",
        "cer_ground_truth",
        "offset_frames",
        "offset_within_one",
        "offset_vs_ground_truth_within_one",
        "envelope_lag_frames",
        "envelope_corr",
    ),
}
# (task, section, key, comparison, threshold or "2x ground truth"): the recipe's targets (docs/evaluation.md)
TARGETS = (
    ("text2av", "metrics", "cer", "<=", "2x cer_ground_truth"),
    ("dub", "metrics", "offset_within_one", ">=", 0.8),
    ("dub", "metrics", "envelope_corr", ">=", 0.6),
    ("motion2audio", "metrics", "envelope_corr", ">=", 0.5),
    ("motion2audio", "shuffled", "envelope_corr", "abs<", 0.1),
)


def _corpus(out: Path, n_clips: int, seed: int, sentences: Path, threads: int) -> dict[str, Any]:
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
    cmd += ["--sentences", rel(sentences)]
    built = not (out / "manifest.jsonl").is_file()
    if built:
        log.info("corpus: %s", shown(cmd))
        subprocess.run(cmd, check=True, env=run_env(threads))
    records = read_manifest(out)
    return {
        "dir": rel(out),
        "command": shown(cmd),
        "clips": dict(Counter(r.split for r in records)),
        "hours": round(sum(r.duration for r in records) / 3600, 3),
    }


def _heldout_split(out: Path, max_seconds: float) -> int:
    """Every held-out clip up to ``max_seconds`` (the training clip limit) becomes ``test``, the rest ``val``."""
    from jam_flow.data.format import read_manifest, write_manifest

    records = [
        dataclasses.replace(r, split="test" if r.duration <= max_seconds else "val")
        for r in read_manifest(out)
    ]
    write_manifest(out, records)
    return sum(r.split == "test" for r in records)


def _words(path: Path) -> set[str]:
    from jam_flow.models.judge import judge_text

    return set(judge_text(path.read_text(encoding="utf-8")).split())


def _step_of(path: Path) -> int | None:
    found = re.findall(r"\d+", path.stem)
    return int(found[-1]) if found else None


def _checkpoints(run: Path) -> dict[int, Path]:
    """``{step: path}`` of the run's ``step-*.ckpt`` files (newest version directory wins)."""
    out: dict[int, Path] = {}
    for path in sorted(
        run.glob("lightning_logs/version_*/checkpoints/step-*.ckpt"), key=lambda p: p.stat().st_mtime
    ):
        step = _step_of(path)
        if step is not None:
            out[step] = path
    return out


def _train(args: argparse.Namespace, config: Path, run: Path) -> dict[str, Any]:
    cmd = [*jam_flow_command(), "fit", "--config", rel(config), "--data.data_dir", str(args.data_dir)]
    cmd += ["--trainer.default_root_dir", str(run), "--progress_bar.refresh_rate", "0"]
    cmd += [
        "--media.judge_path",
        str(Path(args.runs_dir) / "judge"),
        "--media.judge_clips",
        "4",
        "--media.nfe",
        "16",
    ]
    if args.max_time:
        cmd += ["--trainer.max_time", args.max_time]
    info_path = run / "train_info.json"
    if info_path.is_file():
        return json.loads(info_path.read_text())
    if args.no_train:
        ckpts = _checkpoints(run)
        return {
            "status": "partial (--no-train: the checkpoints written so far)",
            "command": shown(cmd),
            "steps_done": max(ckpts) if ckpts else 0,
        }
    run.mkdir(parents=True, exist_ok=True)
    log.info("train: %s", shown(cmd))
    start = time.perf_counter()
    proc, logf = spawn(cmd, run / "train.log", args.threads)
    proc.wait()
    logf.close()
    if proc.returncode != 0:
        raise RuntimeError(f"training failed (exit {proc.returncode}); see {run / 'train.log'}")
    ckpts = _checkpoints(run)
    info = {
        "status": "done",
        "command": shown(cmd),
        "train_wall_s": round(time.perf_counter() - start, 1),
        "steps_done": max(ckpts) if ckpts else 0,
        "threads": args.threads,
        "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(info_path, info)
    return info


def _judge(args: argparse.Namespace, judge_dir: Path) -> dict[str, Any]:
    cmd = [*jam_flow_command(), "train-judge", "--data.data_dir", str(args.data_dir), "--out", str(judge_dir)]
    cmd += ["--steps", str(args.judge_steps), "--max-minutes", str(args.judge_minutes)]
    if not (judge_dir / "config.json").is_file():
        log.info("judge: %s", shown(cmd))
        subprocess.run(cmd, check=True, env=run_env(args.threads))
    info = json.loads((judge_dir / "config.json").read_text())["info"]
    info["data_dir"] = rel(info.get("data_dir", args.data_dir))
    return {"dir": rel(judge_dir), "command": shown(cmd), **info}


def _evaluate(
    ckpt: Path, task: str, clips: int, args: argparse.Namespace, pocketsphinx: str
) -> dict[str, Any]:
    """``jam-flow evaluate`` in process, cached beside the checkpoint (keyed by the settings and the file)."""
    from jam_flow.eval.evaluate import EvalSettings, evaluate

    settings = EvalSettings(
        ckpt=str(ckpt),
        data_dir=str(args.heldout_dir),
        task=task,
        split="test",
        max_clips=clips,
        nfe=args.nfe,
        cfg=args.cfg,
        seed=args.seed,
        batch_size=args.eval_batch,
        max_lag=args.max_lag,
        judge=str(Path(args.runs_dir) / "judge") if task != "audio2motion" else None,
        pocketsphinx=pocketsphinx,
    )

    def run() -> dict[str, Any]:
        log.info("evaluate %s on %s (%d clips)", task, rel(ckpt), clips)
        result = evaluate(settings)
        result["settings"]["ckpt"] = rel(ckpt)
        result["settings"]["data_dir"] = rel(args.heldout_dir)
        result["settings"]["judge"] = settings.judge and rel(settings.judge)
        return result

    return _cached(ckpt, task, [dataclasses.asdict(settings)], run)


def _cached(ckpt: Path, name: str, parts: list[Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``compute()``'s result, cached beside ``ckpt`` in ``speech_<stem>_<name>_<hash>.json``; the hash covers
    ``parts`` (the settings) and the checkpoint file's size and mtime."""
    stat = ckpt.stat()
    key = json.dumps([*parts, stat.st_size, stat.st_mtime_ns], sort_keys=True)
    cache = ckpt.parent / f"speech_{ckpt.stem}_{name}_{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    result = compute()
    write_json(cache, result)
    return result


def _text_use(ckpt: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``eval.probes.text_use`` on the held-out test clips, cached beside the checkpoint like ``_evaluate``."""
    from jam_flow.eval.evaluate import EvalSettings, _load_items
    from jam_flow.eval.probes import text_use
    from jam_flow.inference.bundle import load_bundle

    def run() -> dict[str, Any]:
        log.info("text-use probe on %s", rel(ckpt))
        bundle = load_bundle(ckpt)
        settings = EvalSettings(ckpt=str(ckpt), data_dir=str(args.heldout_dir), task="text2av", split="test")
        items, _, _ = _load_items(settings, bundle)
        return text_use(bundle, items, seed=args.seed)

    return _cached(ckpt, "text_use", [str(ckpt), str(args.heldout_dir), args.seed], run)


def project_steps(steps: list[int], values: list[float], target: float) -> dict[str, Any]:
    """Fit ``value = a + b * log(step)`` by least squares and solve for ``value == target``. Returns the fit and
    ``steps_needed`` (None when the curve does not fall, or has fewer than 3 points)."""
    pts = [(s, v) for s, v in zip(steps, values, strict=True) if s > 0 and v is not None and math.isfinite(v)]
    if len(pts) < 3:
        return {"steps_needed": None, "reason": f"only {len(pts)} curve point(s)"}
    xs = [math.log(s) for s, _ in pts]
    ys = [v for _, v in pts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    fit = {"fit": "value = a + b ln(step)", "a": round(a, 4), "b": round(b, 4), "target": round(target, 4)}
    if b >= 0:
        return {**fit, "steps_needed": None, "reason": "the curve does not fall over the measured steps"}
    if min(ys) <= target:
        return {**fit, "steps_needed": min(s for s, v in pts if v <= target), "reason": "reached"}
    return {
        **fit,
        "steps_needed": int(round(math.exp((target - a) / b))),
        "reason": "log-linear extrapolation",
    }


def _targets(final: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for task, section, key, op, threshold in TARGETS:
        res = final.get(task)
        if res is None:
            continue
        value = res[section].get(key)
        if threshold == "2x cer_ground_truth":
            gt = res["metrics"].get("cer_ground_truth")
            threshold = None if gt is None else 2 * gt
        met = None
        if value is not None and threshold is not None:
            met = {"<=": value <= threshold, ">=": value >= threshold, "abs<": abs(value) < threshold}[op]
        out[f"{task}.{section}.{key} {op} {threshold if threshold is None else round(threshold, 4)}"] = {
            "value": value,
            "met": met,
        }
    return out


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m jam_flow.recipes.synth_audio", description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default="data/synth_audio", help="training corpus (built when missing)")
    p.add_argument("--heldout-dir", default="data/synth_audio_heldout", help="held-out-sentence corpus")
    p.add_argument("--n-clips", type=int, default=2000, help="clips of the training corpus (default 2000)")
    p.add_argument("--heldout-clips", type=int, default=80, help="clips of the held-out corpus (default 80)")
    p.add_argument("--configs-dir", default="configs", help="the repository's configs/ (default ./configs)")
    p.add_argument("--runs-dir", default="runs/synth_audio", help="judge/ and main/ go here")
    p.add_argument("--out", default="results/synth_recipe_audio.json", help="result JSON")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the two cores)")
    p.add_argument("--max-time", default=None, help="override the config's trainer.max_time (DD:HH:MM:SS)")
    p.add_argument(
        "--no-train", action="store_true", help="start no training: use the checkpoints written so far"
    )
    p.add_argument(
        "--curve-only",
        action="store_true",
        help="evaluate the learning-curve checkpoints only (no final numbers)",
    )
    add_speech_eval_options(p, judge_minutes=30.0, eval_clips=32, max_lag=True)
    p.add_argument(
        "--final-tasks",
        nargs="+",
        choices=FINAL_TASKS,
        default=list(FINAL_TASKS),
        help="tasks of the final evaluation (default: all four)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    import torch
    import yaml

    from jam_flow.flow.sampler import SamplerSettings

    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    started, t0 = dt.datetime.now(dt.timezone.utc), time.perf_counter()
    speech = Path(args.configs_dir) / "speech"
    config, train_s, heldout_s = (
        speech / "synth_audio.yaml",
        speech / "train_sentences.txt",
        speech / "heldout_sentences.txt",
    )
    for path in (config, train_s, heldout_s):
        if not path.is_file():
            raise InputError(f"--configs-dir: {path} does not exist")
    max_seconds = float(yaml.safe_load(config.read_text())["data"]["max_duration"])
    data, heldout, runs = Path(args.data_dir), Path(args.heldout_dir), Path(args.runs_dir)
    corpus = {"train": _corpus(data, args.n_clips, 0, train_s, args.threads)}
    corpus["heldout"] = _corpus(heldout, args.heldout_clips, 1, heldout_s, args.threads)
    corpus["heldout"]["test_clips"] = _heldout_split(heldout, max_seconds)
    corpus["heldout"]["rule"] = f"clips <= {max_seconds} s (the training limit) are the test split"
    heldout_words = _words(heldout_s)
    corpus["sentences"] = {
        "train": rel(train_s),
        "heldout": rel(heldout_s),
        "heldout_words": len(heldout_words),
        "heldout_words_never_in_training": len(heldout_words - _words(train_s)),
    }
    judge = _judge(args, runs / "judge")
    training = _train(args, config, runs / "main")
    guidance = SamplerSettings().guidance
    ckpts = _checkpoints(runs / "main")
    curve: dict[str, Any] = {}
    for step in sorted(s for s in ckpts if s % args.curve_every == 0):
        curve[str(step)] = {
            task: {
                k: v
                for k, v in _evaluate(ckpts[step], task, args.curve_clips, args, "off")["metrics"].items()
                if k in CURVE_KEYS[task]
            }
            for task in CURVE_TASKS
        }
        curve[str(step)]["clips"] = args.curve_clips
        curve[str(step)]["text_use"] = _text_use(ckpts[step], args)
    final: dict[str, Any] = {}
    # the final numbers come from the newest step checkpoint, so that they are the curve's last point
    last = (ckpts[max(ckpts)], max(ckpts)) if ckpts else None
    if last is not None and not args.curve_only:
        for task in args.final_tasks:
            res = _evaluate(
                last[0], task, args.eval_clips, args, args.pocketsphinx if task == "text2av" else "off"
            )
            final[task] = {k: res[k] for k in ("metrics", "shuffled", "ground_truth", "clips", "wall_s")}
        final["step"] = last[1]
        final["ckpt"] = rel(last[0])
        if str(last[1]) not in curve:  # the final point of the curve (on the final evaluation's clips)
            curve[str(last[1])] = {
                task: {k: v for k, v in final[task]["metrics"].items() if k in CURVE_KEYS[task]}
                for task in CURVE_TASKS
            }
            curve[str(last[1])]["clips"] = final["text2av"]["clips"]
            curve[str(last[1])]["text_use"] = _text_use(last[0], args)
    steps = sorted(int(s) for s in curve)
    projection = {}
    if curve and "text2av" in final:
        target = 2 * final["text2av"]["metrics"]["cer_ground_truth"]
        projection["text2av.cer <= 2x ground truth"] = project_steps(
            steps, [curve[str(s)]["text2av"].get("cer") for s in steps], target
        )
        projection["dub.offset_within_one >= 0.8"] = project_steps(
            steps, [-(curve[str(s)]["dub"].get("offset_within_one") or 0.0) for s in steps], -0.8
        )
        projection["note"] = "dub: fitted on -within_one so that lower is better"
    result = {
        "recipe": "speech: does the audio half learn? (docs/evaluation.md)",
        "command": shlex.join(["python", "-m", "jam_flow.recipes.synth_audio", *argv]),
        "reproduce": "make synth-recipe-audio  (= python -m jam_flow.recipes.synth_audio)",
        "config": rel(config),
        "machine": machine(args.threads),
        "started_utc": started.isoformat(timespec="seconds"),
        "corpus": corpus,
        "judge": judge,
        "training": training,
        "eval": {
            "data_dir": rel(heldout),
            "split": "test",
            "nfe": args.nfe,
            "cfg": args.cfg,
            "guidance": guidance,
            "seed": args.seed,
            "eval_clips": args.eval_clips,
            "curve_clips": args.curve_clips,
        },
        "curve": curve,
        "final": final,
        "targets": _targets(final),
        "projection": projection,
        "wall_time_s": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    write_json(out, result)
    print(json.dumps(result["targets"], indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
