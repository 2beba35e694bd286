"""Evaluation half of the synthetic recipe (:mod:`jam_flow.recipes.synth`): ``jam-flow evaluate`` runs for every
(checkpoint, task, settings), cached beside the checkpoints and run a few at once, the guidance sweep, and the
markdown tables the recipe prints. Orchestration only: subprocesses and JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from jam_flow.recipes.common import jam_flow_command, rel, spawn

__all__ = [
    "KEY_A2M",
    "KEY_M2A",
    "eval_command",
    "evaluate_all",
    "evaluate_jobs",
    "guidance_sweep",
    "sweep_table",
    "pick",
    "ablation_table",
]

log = logging.getLogger("jam_flow.recipes.synth")

KEY_A2M = (
    "mouth_open_corr",
    "offset_frames",
    "offset_mean_abs",
    "offset_within_one",
    "av_peak_corr",
    "mouth_kp_l2",
)
KEY_M2A = ("envelope_corr", "offset_frames", "av_peak_corr", "mel_l1", "lsd_db")


def eval_command(ckpt: str, task: str, out: Path, args: argparse.Namespace) -> list[str]:
    return [
        *jam_flow_command(),
        "evaluate",
        "--ckpt",
        ckpt,
        "--data.data_dir",
        str(args.data_dir),
        "--task",
        task,
        "--split",
        "test",
        "--max-clips",
        str(args.eval_clips),
        "--nfe",
        str(args.nfe),
        "--cfg",
        str(args.cfg),
        # the default mode is left implicit so evaluations cached before guidance modes existed keep their keys
        *(["--guidance", args.guidance] if getattr(args, "guidance", "joint") != "joint" else []),
        "--seed",
        str(args.seed),
        "--batch-size",
        str(args.eval_batch),
        "--max-lag",
        str(args.max_lag),
        "--out",
        str(out),
    ]


def eval_cache(ckpt: str, task: str, args: argparse.Namespace) -> Path:
    """Where ``jam-flow evaluate`` writes this (checkpoint, task, settings): beside the checkpoint, keyed by the
    settings and the checkpoint's size and mtime, so a resumed or re-assembled recipe never generates twice."""
    stat = Path(ckpt).stat()
    settings = eval_command(ckpt, task, Path("-"), args)[2:]
    key = hashlib.sha256(json.dumps([settings, stat.st_size, stat.st_mtime_ns]).encode()).hexdigest()[:12]
    return Path(ckpt).parent / f"eval_{Path(ckpt).stem}_{task}_{key}.json"


def evaluate_all(
    jobs: list[tuple[str, str]], args: argparse.Namespace
) -> dict[tuple[str, str], dict[str, Any]]:
    """Run ``jam-flow evaluate`` for every (checkpoint, task), ``args.parallel`` at once (own sessions, like the
    training runs); cached results are reused."""
    results = evaluate_jobs([(ckpt, task, args) for ckpt, task in jobs], args.parallel)
    return {(ckpt, task): res for (ckpt, task), res in zip(jobs, results, strict=True)}


def evaluate_jobs(jobs: list[tuple[str, str, argparse.Namespace]], parallel: int) -> list[dict[str, Any]]:
    """``jam-flow evaluate`` for every (checkpoint, task, settings), ``parallel`` at once; cached ones reused."""
    todo = [job for job in jobs if not eval_cache(*job).is_file()]
    running: list[tuple[tuple[str, str, argparse.Namespace], subprocess.Popen, Any]] = []
    while todo or running:
        while todo and len(running) < parallel:
            job = todo.pop(0)
            out = eval_cache(*job)
            cmd = eval_command(job[0], job[1], out, job[2])
            log.info("evaluate: %s", shlex.join(cmd))
            proc, logf = spawn(cmd, out.with_suffix(".log"), job[2].threads)
            running.append((job, proc, logf))
        time.sleep(1.0)
        for item in list(running):
            job, proc, logf = item
            if proc.poll() is None:
                continue
            running.remove(item)
            logf.close()
            if proc.returncode != 0:
                raise RuntimeError(
                    f"evaluation of {job[0]} ({job[1]}) failed (exit {proc.returncode}); see "
                    f"{eval_cache(*job).with_suffix('.log')}"
                )
    return [json.loads(eval_cache(*job).read_text()) for job in jobs]


SWEEP_TASKS = ("audio2motion", "text2av")
SWEEP_KEYS = {"audio2motion": KEY_A2M, "text2av": KEY_M2A}


def guidance_sweep(info: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The main run evaluated on audio -> motion and text -> audio + motion at every ``--sweep-cfgs`` scale with
    every ``--sweep-modes`` guidance mode (scale 0 is one unguided evaluation: no mode applies)."""
    ckpt = info["ckpt"]
    settings: list[tuple[float, str]] = []
    for gamma in args.sweep_cfgs:
        for mode in ["none"] if gamma == 0 else args.sweep_modes:
            settings.append((gamma, mode))
    jobs = []
    for task in SWEEP_TASKS:
        for gamma, mode in settings:
            ns = argparse.Namespace(
                **{**vars(args), "cfg": gamma, "guidance": "joint" if mode == "none" else mode},
            )
            ns.eval_clips = args.sweep_clips
            jobs.append((ckpt, task, ns))
    results = evaluate_jobs(jobs, args.parallel)
    table: dict[str, dict[str, dict[str, Any]]] = {task: {} for task in SWEEP_TASKS}
    shuffled: dict[str, dict[str, Any]] = {}
    for (_, task, ns), res in zip(jobs, results, strict=True):
        mode = "none" if ns.cfg == 0 else ns.guidance
        table[task].setdefault(f"{ns.cfg:g}", {})[mode] = {
            **pick(res["metrics"], SWEEP_KEYS[task]),
            "wall_s": res["wall_s"],
        }
        shuffled.setdefault(task, pick(res["shuffled"], SWEEP_KEYS[task]))
    return {
        "what": "main run (new defaults) per guidance mode and scale; task -> gamma -> mode -> metrics",
        "ckpt": rel(ckpt),
        "steps": info["steps_done"],
        "max_steps": info.get("max_steps"),
        "train_wall_s": info["train_wall_s"],
        "eval": {"split": "test", "max_clips": args.sweep_clips, "nfe": args.nfe, "seed": args.seed},
        "table": table,
        "shuffled": shuffled,
    }


def sweep_table(sweep: dict[str, Any]) -> str:
    """Markdown: one row per (gamma, mode), audio -> motion and text -> audio + motion sync columns."""
    a2m, t2av = sweep["table"]["audio2motion"], sweep["table"]["text2av"]
    lines = [
        "| gamma | guidance | a2m mouth corr | a2m offset | a2m within ±1 | t2av envelope corr | t2av offset "
        "| t2av A/V peak corr |",
        "|" + "---|" * 8,
    ]

    def f(x: Any) -> str:
        return "n/a" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))

    for gamma in a2m:
        for mode in a2m[gamma]:
            a, t = a2m[gamma][mode], t2av.get(gamma, {}).get(mode, {})
            lines.append(
                f"| {gamma} | {mode} | {f(a.get('mouth_open_corr'))} | {f(a.get('offset_frames'))} "
                f"| {f(a.get('offset_within_one'))} | {f(t.get('envelope_corr'))} | {f(t.get('offset_frames'))} "
                f"| {f(t.get('av_peak_corr'))} |"
            )
    return "\n".join(lines)


def pick(metrics: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: metrics[k] for k in keys if k in metrics}


def ablation_table(result: dict[str, Any]) -> str:
    head = (
        "| variant | joint blocks | masks | RoPE | Audio-DiT | steps | train s | a2m mouth corr | a2m offset "
        "| a2m within ±1 | m2a envelope corr |"
    )
    lines = [head, "|" + "---|" * 11]
    for name, e in result["ablations"].items():
        a2m, m2a = e.get("audio2motion", {}), e.get("motion2audio", {})

        def f(x: Any) -> str:
            return "n/a" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))

        lines.append(
            f"| {name} | {e['joint_layers']} | {e['masks']} | {e['rope']} | {e['audio_dit']} | {e['steps']} "
            f"| {f(e.get('train_wall_s'))} | {f(a2m.get('mouth_open_corr'))} | {f(a2m.get('offset_frames'))} "
            f"| {f(a2m.get('offset_within_one'))} | {f(m2a.get('envelope_corr'))} |"
        )
    return "\n".join(lines)
