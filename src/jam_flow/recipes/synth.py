"""The synthetic-corpus recipe and ablations (``make synth-recipe``; steps and result fields: docs/evaluation.md).

Orchestration only: subprocesses for the corpus, training and ``jam-flow evaluate``.

    python -m jam_flow.recipes.synth [--data-dir data/synth_recipe] [--runs-dir runs/synth_recipe]
                                   [--out results/synth_recipe.json] [--only main rope_off ...] [--configs-dir configs]

Builds the corpus when missing, trains the main model and each ablation (``<configs-dir>/experiments/
synth_main.yaml``, then for an ablation its override ``synth_<name>.yaml`` as a second ``--config``; finished runs
with the same config bytes are reused), evaluates them on the test split and
writes the result JSON. Run it from the repository root: every path it records is relative to the working directory.

``--guidance-sweep`` (with ``--only main --no-train``) evaluates only the finished main run on ``audio2motion`` and
``text2av`` at every guidance scale of ``--sweep-cfgs`` with every mode of ``--sweep-modes`` (the paper's
"remains robust even without CFG") and stores the table as ``guidance_sweep`` in ``--out``, keeping the rest.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jam_flow.errors import InputError
from jam_flow.recipes.common import jam_flow_command, machine, rel, run_cli, run_env, shown, spawn, write_json
from jam_flow.recipes.synth_eval import (
    KEY_A2M,
    KEY_M2A,
    ablation_table,
    evaluate_all,
    guidance_sweep,
    pick,
    sweep_table,
)

__all__ = ["VARIANTS", "Variant", "main"]

log = logging.getLogger("jam_flow.recipes.synth")


@dataclass(frozen=True)
class Variant:
    name: str
    axis: str  # what the ablation changes (Table 4 / §4.3)
    joint_layers: str
    masks: str
    rope: str
    audio_dit: str

    def config(self, configs_dir: str | Path) -> Path:
        """This variant's experiment YAML under ``configs_dir`` (the repository's ``configs/``)."""
        return Path(configs_dir) / "experiments" / f"synth_{self.name}.yaml"

    def configs(self, configs_dir: str | Path) -> list[Path]:
        """The ``--config`` files of its run, in order: ``synth_main.yaml``, then the ablation's override of it."""
        main = Path(configs_dir) / "experiments" / "synth_main.yaml"
        own = self.config(configs_dir)
        return [main] if own == main else [main, own]


# training order = priority order (the paper's strongest claims first: masks, RoPE, Audio-DiT fine-tuning)
VARIANTS: tuple[Variant, ...] = (
    Variant("main", "reference (paper default)", "half", "on", "length", "trained"),
    Variant("masks_off", "attention masks", "half", "off", "length", "trained"),
    Variant("rope_off", "RoPE alignment", "half", "on", "off", "trained"),
    Variant("audio_frozen", "Audio-DiT fine-tuning", "half", "on", "length", "frozen"),
    Variant("joint_full", "joint blocks", "full", "on", "length", "trained"),
    Variant("joint_none", "joint blocks", "none", "on", "length", "trained"),
)


def _sha(paths: list[Path]) -> str:
    """The key of a run's config files (one file: its bytes' SHA-256, as before overrides existed)."""
    digest = hashlib.sha256(paths[0].read_bytes())
    for path in paths[1:]:
        digest.update(b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _ensure_corpus(args: argparse.Namespace) -> dict[str, Any]:
    from collections import Counter

    from jam_flow.data.format import read_manifest

    data = Path(args.data_dir)
    cmd = [
        *jam_flow_command(),
        "synth-corpus",
        "--out",
        str(data),
        "--n-clips",
        str(args.n_clips),
        "--seed",
        str(args.corpus_seed),
    ]
    if (data / "manifest.jsonl").is_file() and (data / "stats.json").is_file():
        log.info("corpus: reusing %s", data)
        records = read_manifest(data)
        return {
            "dir": rel(data),
            "built": False,
            "clips": dict(Counter(r.split for r in records)),
            "hours": round(sum(r.duration for r in records) / 3600, 3),
            "build_command": shown(cmd),
        }
    log.info("corpus: %s", shlex.join(cmd))
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=run_env(args.threads))
    return {
        "dir": rel(data),
        "built": True,
        "build_s": round(time.perf_counter() - start, 1),
        "command": shown(cmd),
    }


def _last_ckpt(root: Path) -> Path | None:
    found = sorted(
        root.glob("lightning_logs/version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime
    )
    return found[-1] if found else None


def _train_command(variant: Variant, args: argparse.Namespace, root: Path) -> list[str]:
    return [
        *jam_flow_command(),
        "fit",
        *(arg for path in variant.configs(args.configs_dir) for arg in ("--config", rel(path))),
        "--data.data_dir",
        str(args.data_dir),
        "--trainer.default_root_dir",
        str(root),
        "--progress_bar.refresh_rate",
        "0",
        *(["--trainer.max_time", args.max_time] if args.max_time else []),
    ]


def _train_all(variants: list[Variant], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Train (or reuse) every variant, ``args.parallel`` at a time; returns each run's ``train_info``. With
    ``--no-train`` only finished runs are returned."""
    infos: dict[str, dict[str, Any]] = {}
    pending: list[Variant] = []
    for v in variants:
        root = Path(args.runs_dir) / v.name
        info_path = root / "train_info.json"
        if info_path.is_file() and not args.retrain:
            info = json.loads(info_path.read_text())
            ckpt = Path(info.get("ckpt", ""))
            config_sha = _sha(v.configs(args.configs_dir))
            if info.get("status") == "done" and info.get("config_sha") == config_sha and ckpt.is_file():
                log.info("train %s: reusing %s", v.name, ckpt)
                infos[v.name] = info
                continue
        if args.no_train:
            log.info("train %s: no finished run, left out (--no-train)", v.name)
            continue
        pending.append(v)
    running: list[tuple[Variant, subprocess.Popen, float, Path, Any]] = []
    while pending or running:
        while pending and len(running) < args.parallel:
            v = pending.pop(0)
            root = Path(args.runs_dir) / v.name
            root.mkdir(parents=True, exist_ok=True)
            cmd = _train_command(v, args, root)
            log.info("train %s: %s", v.name, shlex.join(cmd))
            proc, logf = spawn(cmd, root / "train.log", args.threads)
            running.append((v, proc, time.perf_counter(), root, logf))
        time.sleep(2.0)
        for item in list(running):
            v, proc, start, root, logf = item
            if proc.poll() is None:
                continue
            running.remove(item)
            logf.close()
            wall = round(time.perf_counter() - start, 1)
            if proc.returncode != 0:
                raise RuntimeError(
                    f"training {v.name} failed (exit {proc.returncode}); see {root / 'train.log'}"
                )
            ckpt = _last_ckpt(root)
            if ckpt is None:
                raise RuntimeError(f"training {v.name} wrote no last.ckpt under {root}")
            info = {
                "status": "done",
                "config": rel(v.config(args.configs_dir)),
                "config_sha": _sha(v.configs(args.configs_dir)),
                "command": shown(_train_command(v, args, root)),
                "train_wall_s": wall,
                "ckpt": rel(ckpt),
                "steps_done": _global_step(ckpt),
                "max_steps": _max_steps(v.configs(args.configs_dir)),
                "threads": args.threads,
                "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            }
            write_json(root / "train_info.json", info)
            log.info("train %s: done in %.0f s", v.name, wall)
            infos[v.name] = info
    return infos


def _global_step(ckpt: Path) -> int:
    from jam_flow.models.format import read_torch_file

    return int(read_torch_file(ckpt, "checkpoint")["global_step"])


def _ckpt_at_step(root: Path, step: int) -> tuple[Path, int] | None:
    """The newest ``step-N.ckpt`` of a run with ``N <= step`` (the main run keeps one every few steps)."""
    best: tuple[Path, int] | None = None
    for path in root.glob("lightning_logs/version_*/checkpoints/step-*.ckpt"):
        try:
            n = int(path.stem.split("-", 1)[1])
        except ValueError:
            continue
        if n <= step and (best is None or n > best[1]):
            best = (path, n)
    return best


def _max_steps(configs: list[Path]) -> int:
    """``trainer.max_steps`` of the composed ``--config`` files (the last one that sets it)."""
    import yaml

    steps = [(yaml.safe_load(p.read_text()) or {}).get("trainer", {}).get("max_steps") for p in configs]
    return int([s for s in steps if s is not None][-1])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jam_flow.recipes.synth", description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default="data/synth_recipe", help="synthetic corpus (built when missing)")
    p.add_argument("--n-clips", type=int, default=640, help="clips of a newly built corpus (default 640)")
    p.add_argument("--corpus-seed", type=int, default=0, help="synth-corpus --seed (default 0)")
    p.add_argument("--runs-dir", default="runs/synth_recipe", help="training runs (one folder per variant)")
    p.add_argument("--out", default="results/synth_recipe.json", help="result JSON")
    p.add_argument(
        "--configs-dir",
        default="configs",
        help="the repository's configs/ (default: ./configs; experiments/synth_<name>.yaml are read)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=[v.name for v in VARIANTS],
        default=None,
        help="train / evaluate only these variants (default: all)",
    )
    p.add_argument("--retrain", action="store_true", help="train again even when a finished run exists")
    p.add_argument(
        "--no-train",
        action="store_true",
        help="start no training: evaluate the variants whose runs have finished and assemble the result",
    )
    p.add_argument(
        "--max-time",
        default=None,
        help="override every trained config's trainer.max_time (DD:HH:MM:SS; recorded in the train command)",
    )
    p.add_argument("--parallel", type=int, default=3, help="training runs at once (default 3)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads per run (default 1: best on a busy CPU)"
    )
    p.add_argument("--eval-clips", type=int, default=40, help="held-out clips evaluated (default 40)")
    p.add_argument("--eval-batch", type=int, default=8, help="clips generated together (default 8)")
    p.add_argument("--nfe", type=int, default=12, help="sampler NFE for evaluation (default 12)")
    p.add_argument("--cfg", type=float, default=2.0, help="guidance scale for evaluation (paper: 2)")
    p.add_argument("--max-lag", type=int, default=10, help="A/V offset search range in motion frames")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (noise + shuffled pairs)")
    p.add_argument(
        "--curve-steps",
        type=int,
        nargs="*",
        default=[200, 400, 800, 1200, 2400],
        help="main-run checkpoints also evaluated on audio2motion (learning curve)",
    )
    p.add_argument(
        "--guidance-sweep",
        action="store_true",
        help="evaluate only the main run at every --sweep-cfgs x --sweep-modes (audio2motion, text2av) and write "
        "the table as 'guidance_sweep' into --out, keeping the file's other entries",
    )
    p.add_argument("--sweep-cfgs", type=float, nargs="+", default=[0.0, 1.0, 2.0], help="guidance scales")
    p.add_argument("--sweep-modes", nargs="+", choices=("joint", "f5", "all"), default=["joint", "f5", "all"])
    p.add_argument("--sweep-clips", type=int, default=32, help="held-out clips per sweep evaluation")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.parallel < 1 or args.threads < 1:
        raise InputError("--parallel / --threads: expected positive integers")
    started, t0 = dt.datetime.now(dt.timezone.utc), time.perf_counter()
    variants = [v for v in VARIANTS if args.only is None or v.name in args.only]
    if not (Path(args.configs_dir) / "experiments").is_dir():
        raise InputError(
            f"--configs-dir: {args.configs_dir}/experiments is not a directory (run from the repository root or "
            "pass --configs-dir PATH/TO/configs)"
        )
    for v in variants:
        for path in v.configs(args.configs_dir):
            if not path.is_file():
                raise InputError(f"--configs-dir: missing experiment config {path}")
    corpus = _ensure_corpus(args)
    infos = _train_all(variants, args)
    if args.guidance_sweep:
        if "main" not in infos:
            raise InputError("--guidance-sweep: the main run has not finished (train it first)")
        sweep = guidance_sweep(infos["main"], args)
        sweep["command"] = shlex.join(["python", "-m", "jam_flow.recipes.synth", *argv])
        sweep["machine"] = machine(args.threads)
        out = Path(args.out)
        kept = json.loads(out.read_text()) if out.is_file() else {}
        kept["guidance_sweep"] = sweep
        write_json(out, kept)
        print(sweep_table(sweep))
        print(f"wrote {out} (guidance_sweep)")
        return 0
    result: dict[str, Any] = {
        "recipe": "synthetic corpus, main model + ablations (docs/evaluation.md)",
        "command": shlex.join(["python", "-m", "jam_flow.recipes.synth", *argv]),
        "reproduce": "make synth-recipe  (= python -m jam_flow.recipes.synth; reuses finished runs in --runs-dir)",
        "seed": args.seed,
        "machine": machine(args.threads),
        "started_utc": started.isoformat(timespec="seconds"),
        "corpus": corpus,
        "eval": {
            "split": "test",
            "max_clips": args.eval_clips,
            "nfe": args.nfe,
            "cfg": args.cfg,
            "max_lag": args.max_lag,
            "seed": args.seed,
        },
        "ablations": {},
    }
    variants = [v for v in variants if v.name in infos]
    jobs: list[tuple[str, Variant, str, dict[str, Any]]] = []
    for v in variants:
        info = infos[v.name]
        jobs.append(
            (v.name, v, info["ckpt"], {"steps": info["steps_done"], "train_wall_s": info["train_wall_s"]})
        )
    if "main" in infos:  # the main run at each ablation's step count: the same-budget reference for the table
        main_root = Path(infos["main"]["ckpt"]).parents[3]
        for step in sorted({infos[v.name]["steps_done"] for v in variants if v.name != "main"}):
            found = _ckpt_at_step(main_root, step)
            if found is not None and found[1] < infos["main"]["steps_done"]:
                jobs.append(
                    (
                        f"main@{found[1]}",
                        VARIANTS[0],
                        rel(found[0]),
                        {"steps": found[1], "train_wall_s": None, "note": "checkpoint of the main run"},
                    )
                )

    def tasks_of(name: str) -> tuple[str, ...]:
        return (
            ("audio2motion", "motion2audio", "text2av")
            if name == "main"
            else ("audio2motion", "motion2audio")
        )

    curve: list[tuple[int, str]] = []  # the main run's audio2motion learning curve
    if "main" in infos:
        main_root = Path(infos["main"]["ckpt"]).parents[3]
        for step in sorted(set(args.curve_steps)):
            found = _ckpt_at_step(main_root, step)
            if found is not None and found[1] == step and step < infos["main"]["steps_done"]:
                curve.append((step, rel(found[0])))
    evals = evaluate_all(
        [(ckpt, task) for name, _, ckpt, _ in jobs for task in tasks_of(name)]
        + [(ckpt, "audio2motion") for _, ckpt in curve],
        args,
    )
    if curve:
        result["audio2motion_curve"] = {
            str(step): pick(evals[(ckpt, "audio2motion")]["metrics"], KEY_A2M) for step, ckpt in curve
        }
        result["audio2motion_curve"][str(infos["main"]["steps_done"])] = "see audio2motion"
    for name, v, ckpt, extra in jobs:
        entry: dict[str, Any] = {
            "axis": v.axis,
            "joint_layers": v.joint_layers,
            "masks": v.masks,
            "rope": v.rope,
            "audio_dit": v.audio_dit,
            "config": rel(v.config(args.configs_dir)),
            "max_steps": _max_steps(v.configs(args.configs_dir)),
            "ckpt": ckpt,
            **extra,
        }
        if name in infos:
            entry["train_command"] = infos[name]["command"]
        for task in tasks_of(name):
            res = evals[(ckpt, task)]
            keys = KEY_A2M if task == "audio2motion" else KEY_M2A
            entry[task] = pick(res["metrics"], keys)
            entry[f"{task}_eval_wall_s"] = res["wall_s"]
            entry[f"{task}_shuffled"] = pick(res["shuffled"], keys)
            if name == "main":
                result[task] = res["metrics"]
                result.setdefault("shuffled", {})
                if task == "audio2motion":
                    result["shuffled"].update(
                        {
                            k: res["shuffled"][k]
                            for k in ("mouth_open_corr", "offset_frames", "av_peak_corr")
                            if k in res["shuffled"]
                        }
                    )
                    result["ground_truth"] = res["ground_truth"]
                elif task == "motion2audio":
                    result["shuffled"]["envelope_corr"] = res["shuffled"].get("envelope_corr")
                result.setdefault("clips_evaluated", res["clips"])
        result["ablations"][name] = entry
    if "main" in result["ablations"]:
        a2m = result["audio2motion"]
        result["targets"] = {
            "audio2motion.mouth_open_corr >= 0.8": bool(
                a2m["mouth_open_corr"] is not None and a2m["mouth_open_corr"] >= 0.8
            ),
            "|audio2motion.offset_frames| <= 1": bool(
                a2m["offset_frames"] is not None and abs(a2m["offset_frames"]) <= 1
            ),
            "|shuffled.mouth_open_corr| < 0.1": bool(abs(result["shuffled"]["mouth_open_corr"] or 0.0) < 0.1),
        }
    result["wall_time_s"] = round(
        time.perf_counter() - t0, 1
    )  # this invocation (reused runs / evaluations are free)
    if infos:
        ends = [dt.datetime.fromisoformat(i["finished_utc"]) for i in infos.values()]
        starts = [
            e - dt.timedelta(seconds=i["train_wall_s"]) for e, i in zip(ends, infos.values(), strict=True)
        ]
        result["training_phase_wall_s"] = round((max(ends) - min(starts)).total_seconds(), 1)
    result["eval_wall_s_sum"] = round(
        sum(e[k] for e in result["ablations"].values() for k in e if k.endswith("_eval_wall_s")), 1
    )  # evaluations ran 2-3 at once
    result["train_wall_time_s"] = round(
        sum(e["train_wall_s"] or 0.0 for e in result["ablations"].values()), 1
    )
    out = Path(args.out)
    write_json(out, result)
    print(ablation_table(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
