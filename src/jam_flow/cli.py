"""The ``jam-flow`` command: a thin dispatcher. Each subcommand lives in its own module and is imported lazily,
so ``jam-flow --help`` is instant and a subcommand only pays for what it uses."""

from __future__ import annotations

import importlib
import sys

from jam_flow.errors import InputError

# name -> (module, function, one-line help). Each function takes argv (list[str]) and returns an exit code.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "fit": ("jam_flow.lightning.cli", "fit_main", "train a model (LightningCLI; --config configs/*.yaml)"),
    "validate": ("jam_flow.lightning.cli", "validate_main", "run validation of a model (LightningCLI)"),
    "test": ("jam_flow.lightning.cli", "test_main", "run the test loop of a model (LightningCLI)"),
    "export": ("jam_flow.lightning.export", "main", "write EMA weights as safetensors + config.yaml"),
    "synth-corpus": ("jam_flow.data.synth", "main", "build the offline synthetic speech + lip-motion corpus"),
    "data": ("jam_flow.data.validate", "main", "dataset tools: `jam-flow data validate | pack | stats`"),
    "preprocess": (
        "jam_flow.data.preprocess",
        "main",
        "turn CelebV-Dub / HDTF / a folder of videos into a dataset",
    ),
    "audio-features": (
        "jam_flow.data.audio_features",
        "main",
        "write stage-1 wav2vec2 / HuBERT features (25 fps) beside a dataset's clips",
    ),
    "generate": (
        "jam_flow.api.generate",
        "main",
        "tts | text2av | audio2motion | dub | motion2audio | edit",
    ),
    "evaluate": ("jam_flow.eval.cli", "main", "generate on a held-out split and report sync metrics"),
    "train-judge": (
        "jam_flow.eval.judge",
        "main",
        "train the intelligibility judge (CTC recogniser) for CER / WER in evaluate",
    ),
    "render": (
        "jam_flow.render.cli",
        "main",
        "render a talking head with LivePortrait from generated motion",
    ),
    "dub-video": (
        "jam_flow.video.cli",
        "dub_main",
        "dub a talking video with a new script (speech timed to its lips, original frames kept)",
    ),
    "animate": (
        "jam_flow.video.cli",
        "animate_main",
        "a talking head from a face image / video and speech or text, any length",
    ),
    "demo": ("jam_flow.demo", "main", "a web page (Gradio) with every task of one model"),
}


def _usage() -> str:
    width = max(len(n) for n in SUBCOMMANDS)
    lines = [
        "usage: jam-flow <command> [options]",
        "",
        "JAM-Flow: joint speech + lip-motion generation with flow matching.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {helptext}" for name, (_, _, helptext) in SUBCOMMANDS.items()]
    lines += ["", "Run `jam-flow <command> --help` for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from jam_flow import __version__

        print(f"jam-flow {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        known = ", ".join(SUBCOMMANDS)
        print(f"error: unknown command {name!r} (commands: {known}; see `jam-flow --help`)", file=sys.stderr)
        return 2
    module_name, func_name, _ = SUBCOMMANDS[name]
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        code = func(rest)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
