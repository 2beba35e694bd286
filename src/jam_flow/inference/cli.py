"""The options of ``jam-flow generate`` (one owner): the parser, which task takes which option, and their checks
(:func:`check_options`, shared with the Python API :class:`jam_flow.api.JamFlow`). The command itself is
:mod:`jam_flow.api.generate`, a thin layer over the API. No tensors here (argument handling only).

Usage, outputs and the atomic output folder: :mod:`jam_flow.api.generate`. Bad input raises ``InputError`` (one
line naming the option); the dispatcher prints ``error: ...`` and exits 2.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import torch

from jam_flow.atomic import check_out_dir
from jam_flow.errors import ArgumentParser, InputError
from jam_flow.inference.outputs import outputs_owned

log = logging.getLogger(__name__)

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 64-bit seeds

TASK_HELP = {
    "tts": "--text + --ref-audio [--ref-text] -> speech",
    "text2av": "--text [--ref-audio --ref-text] -> speech + motion (cases 1-2)",
    "audio2motion": "--audio [--motion for e_rest] [--text] -> motion",
    "dub": "--motion + --text [--ref-audio --ref-text] -> speech timed to the motion (case 3)",
    "motion2audio": "--motion [--ref-audio] -> speech, no text (case 4)",
    "edit": "--audio [--motion] [--text] --edit-start --edit-end [--edit-streams] -> the clip with the span regenerated",
}

# every task-specific option, in the order the CLI checks them and the demo page shows them
INPUT_OPTIONS = (
    "text",
    "ref_audio",
    "ref_text",
    "audio",
    "motion",
    "duration",
    "edit_start",
    "edit_end",
    "edit_streams",
)
# the options each task accepts besides the common ones; anything else is refused so a typo is not silently ignored
TASK_OPTIONS = {
    "tts": {"text", "ref_audio", "ref_text", "duration"},
    "text2av": {"text", "ref_audio", "ref_text", "duration"},
    "audio2motion": {"audio", "motion", "text"},
    "dub": {"motion", "text", "ref_audio", "ref_text"},
    "motion2audio": {"motion", "ref_audio", "ref_text"},
    "edit": {"audio", "motion", "text", "edit_start", "edit_end", "edit_streams"},
}
GUIDANCE = ("joint", "f5", "all")
METHODS = ("euler", "midpoint")
EDIT_STREAMS = ("audio", "motion", "both")
REQUIRED_OPTIONS = {
    "tts": ("text", "ref_audio"),
    "text2av": ("text",),
    "audio2motion": ("audio",),
    "dub": ("motion", "text"),
    "motion2audio": ("motion",),
    "edit": ("audio", "edit_start", "edit_end"),
}


def build_parser() -> argparse.ArgumentParser:
    from jam_flow.flow.layouts import TASKS

    p = ArgumentParser(
        prog="jam-flow generate",
        description="Generate speech and/or lip motion with a JAM-Flow model.",
        epilog="tasks:\n" + "\n".join(f"  {k:<13} {v}" for k, v in TASK_HELP.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument(
        "--ckpt",
        required=True,
        type=Path,
        metavar="CKPT_OR_EXPORT_DIR",
        help="Lightning .ckpt from `jam-flow fit` or an export directory",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="output directory: absent or empty, or with --overwrite one that `jam-flow generate` wrote",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the whole output set of an earlier run in --out (no stale file stays)",
    )
    p.add_argument(
        "--text", metavar="STR", help="text to speak (edit: transcript of the whole clip after the edit)"
    )
    p.add_argument("--ref-audio", type=Path, metavar="WAV", help="reference voice (any rate / channel count)")
    p.add_argument("--ref-text", metavar="STR", help="transcript of --ref-audio")
    p.add_argument(
        "--audio", type=Path, metavar="WAV", help="speech to animate (audio2motion) or the clip to edit"
    )
    p.add_argument("--motion", type=Path, metavar="NPY", help="motion .npy [m, 21, 3] or a dataset clip .npz")
    p.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="seconds of generated speech (default: from the text)",
    )
    p.add_argument(
        "--nfe", type=int, default=SAMPLING_DEFAULTS["nfe"], help="network evaluations (midpoint: 2 per step)"
    )
    p.add_argument(
        "--cfg",
        type=float,
        default=SAMPLING_DEFAULTS["cfg"],
        help="classifier-free guidance scale (paper: 2)",
    )
    p.add_argument("--audio-cfg", type=float, help="guidance scale of the speech stream (default: --cfg)")
    p.add_argument("--motion-cfg", type=float, help="guidance scale of the motion stream (default: --cfg)")
    p.add_argument(
        "--guidance",
        choices=GUIDANCE,
        default=SAMPLING_DEFAULTS["guidance"],
        help="what the unconditional prediction drops: joint = joint attention of the generated stream(s) "
        "(paper, default; tts falls back to f5), f5 = reference + text / masked motion + e_rest (F5-TTS), "
        "all = every condition",
    )
    p.add_argument("--method", choices=METHODS, default=SAMPLING_DEFAULTS["method"])
    p.add_argument(
        "--sway",
        type=float,
        default=SAMPLING_DEFAULTS["sway"],
        help="sway sampling coefficient (0: uniform steps)",
    )
    p.add_argument(
        "--seed", type=int, metavar="S", help="random seed (default: drawn and recorded in motion.json)"
    )
    p.add_argument(
        "--vocoder", type=Path, metavar="DIR", help="local Vocos directory (config.yaml + pytorch_model.bin)"
    )
    p.add_argument("--edit-start", type=float, metavar="SECONDS", help="edit: span start in seconds")
    p.add_argument("--edit-end", type=float, metavar="SECONDS", help="edit: span end in seconds")
    p.add_argument(
        "--edit-streams",
        choices=EDIT_STREAMS,
        help="edit: streams to regenerate (default: both when --motion is given, else audio)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument(
        "--source",
        type=Path,
        metavar="IMAGE",
        help="portrait image to animate with LivePortrait (needs --liveportrait)",
    )
    p.add_argument("--liveportrait", type=Path, metavar="LP_DIR", help="LivePortrait weights directory")
    p.add_argument("--no-preview", action="store_true", help="skip preview.mp4")
    return p


SAMPLING_OPTIONS = ("nfe", "cfg", "audio_cfg", "motion_cfg", "guidance", "method", "sway", "seed")
SAMPLING_DEFAULTS = {
    "nfe": 32,
    "cfg": 2.0,
    "audio_cfg": None,
    "motion_cfg": None,
    "guidance": "joint",
    "method": "euler",
    "sway": -1.0,
    "seed": None,
}


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def check_options(task: str, options: dict) -> None:
    """Check the task and sampling options of one ``generate`` call (CLI option names, underscores for dashes;
    missing sampling options take their defaults). Shared by ``jam-flow generate`` and :class:`jam_flow.api.JamFlow`;
    a bad value raises ``InputError`` naming the option."""
    from jam_flow.flow.layouts import TASKS

    if task not in TASKS:
        raise InputError(f"--task: expected one of {', '.join(TASKS)}, got {task!r}")
    unknown = sorted(set(options) - set(INPUT_OPTIONS) - set(SAMPLING_OPTIONS))
    if unknown:
        raise InputError(
            f"{', '.join(map(_flag, unknown))}: not an option of jam-flow generate "
            f"(task options: {', '.join(INPUT_OPTIONS)}; sampling: {', '.join(SAMPLING_OPTIONS)})"
        )
    opts = {**SAMPLING_DEFAULTS, **options}
    for name in REQUIRED_OPTIONS[task]:
        if opts.get(name) is None:
            raise InputError(f"{_flag(name)}: required for --task {task}")
    for name in INPUT_OPTIONS:
        if opts.get(name) is not None and name not in TASK_OPTIONS[task]:
            raise InputError(f"{_flag(name)}: not used by --task {task} ({TASK_HELP[task]})")
    if opts.get("edit_streams") is not None and opts["edit_streams"] not in EDIT_STREAMS:
        raise InputError(
            f"--edit-streams: expected one of {', '.join(EDIT_STREAMS)}, got {opts['edit_streams']!r}"
        )
    check_sampling({k: v for k, v in opts.items() if k in SAMPLING_OPTIONS}, _numbers(opts, TASK_NUMBERS))


TASK_NUMBERS = ("duration", "edit_start", "edit_end")


def _numbers(opts: dict, names: tuple[str, ...]) -> dict:
    return {name: opts.get(name) for name in names}


def check_sampling(options: dict, numbers: dict | None = None) -> None:
    """Check ``generate``'s sampling options (``nfe``, ``cfg``, ``audio_cfg``, ``motion_cfg``, ``guidance``,
    ``method``, ``sway``, ``seed``; missing ones take their defaults) and that ``numbers`` are finite numbers."""
    unknown = sorted(set(options) - set(SAMPLING_OPTIONS))
    if unknown:
        raise InputError(
            f"{', '.join(map(_flag, unknown))}: not a sampling option ({', '.join(SAMPLING_OPTIONS)})"
        )
    opts = {**SAMPLING_DEFAULTS, **options}
    for name, choices in (("guidance", GUIDANCE), ("method", METHODS)):
        if opts[name] not in choices:
            raise InputError(f"{_flag(name)}: expected one of {', '.join(choices)}, got {opts[name]!r}")
    nfe = opts["nfe"]
    if isinstance(nfe, bool) or not isinstance(nfe, int):
        raise InputError(f"--nfe: expected an integer 1-1000, got {nfe!r}")
    if not 1 <= nfe <= 1000:
        raise InputError(f"--nfe: expected 1-1000, got {nfe}")
    if opts["method"] == "midpoint" and nfe % 2:
        raise InputError(f"--nfe: midpoint uses 2 evaluations per step, so --nfe must be even, got {nfe}")
    values = {name: opts[name] for name in ("cfg", "audio_cfg", "motion_cfg", "sway")} | (numbers or {})
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InputError(f"{_flag(name)}: expected a number, got {value!r}")
        if value is not None and not math.isfinite(value):
            raise InputError(f"{_flag(name)}: expected a finite number, got {value}")
    for name in ("cfg", "audio_cfg", "motion_cfg"):
        value = opts[name]
        if value is not None and value < 0:
            raise InputError(f"{_flag(name)}: expected >= 0, got {value}")
    seed = opts["seed"]
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED
    ):
        raise InputError(f"--seed: expected an integer in [0, 2**64 - 1], got {seed}")


def _check_args(args: argparse.Namespace) -> None:
    check_options(args.task, {name: getattr(args, name) for name in (*INPUT_OPTIONS, *SAMPLING_OPTIONS)})
    for name in ("ref_audio", "audio", "motion", "source"):
        path = getattr(args, name)
        if path is not None and not path.is_file():
            raise InputError(f"{_flag(name)}: {path} does not exist")
    if args.vocoder is not None and not args.vocoder.is_dir():
        raise InputError(
            f"--vocoder: {args.vocoder} is not a directory (expected config.yaml + pytorch_model.bin)"
        )
    if (args.source is None) != (args.liveportrait is None):
        raise InputError("--source / --liveportrait: give both to render a talking head, or neither")
    if args.source is not None and (args.task == "tts" or (args.task == "edit" and args.motion is None)):
        raise InputError(f"--source: --task {args.task} produces no motion + audio to render")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device: {args.device} requested but no CUDA device is available")
    check_out_dir(args.out, args.overwrite, outputs_owned)


def render_outputs(args: argparse.Namespace, paths: dict[str, Path], out_dir: Path) -> Path | None:
    """Render a talking head through jam_flow.render when --source/--liveportrait are given."""
    if args.source is None:
        return None
    if "motion" not in paths or "audio" not in paths:
        raise InputError(f"--source: --task {args.task} produces no motion + audio to render")
    from jam_flow.render import render_talking_head

    out_path = out_dir / "talking_head.mp4"
    render_talking_head(
        args.source, paths["motion"], paths["audio"], args.liveportrait, out_path, args.device
    )
    return out_path


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse and check ``jam-flow generate`` arguments; a bad one raises ``InputError`` (one line)."""
    args = build_parser().parse_args(argv)
    _check_args(args)
    return args
