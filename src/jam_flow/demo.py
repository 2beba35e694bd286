"""``jam-flow demo``: a Gradio page with one tab per JAM-Flow task, a thin layer over the Python API
(:class:`jam_flow.api.JamFlow`) through the ``jam-flow generate`` code path, plus "dub a video" and "animate" tabs
(:mod:`jam_flow.video.tabs`, the functions of ``jam-flow dub-video`` / ``jam-flow animate``).

Dimension legend: n mel frames (93.75 / s), c mel channels (100), m motion frames (25 / s), k keypoints (21).
Masks: True = valid (none are built here).

    jam-flow demo --ckpt CKPT_OR_EXPORT [--vocoder DIR] [--liveportrait DIR --source IMG]
        [--motion-extractor PTH_OR_LP_DIR] [--host 127.0.0.1] [--port 7860] [--device cpu|cuda] [--out DIR]

Every request is turned into the argument list of ``jam-flow generate`` and goes through the same parser, checks
and task dispatch (:func:`jam_flow.inference.cli.parse_args` / :func:`jam_flow.api.generate.run_task`, which calls
the API), so a bad input shows the very line the CLI prints (``error: ...``), in the page, and the app keeps
serving. Each tab's endpoint is named after its task (``api_name``: ``/tts``, ``/text2av``, ``/audio2motion``,
``/dub``, ``/motion2audio``, ``/edit``), so a ``gradio_client`` user calls ``client.predict(..., api_name="/dub")``. The model,
vocoder and motion extractor are loaded once; requests run one at a time (one model), and the progress bar counts
the network evaluations of the sampler. Each request writes the files of ``jam-flow generate`` (plus the two plots)
to its own folder under ``--out`` (default: a temporary folder), offered for download in the page.

Clean-up: Gradio copies what a request returns into its own cache, so a request's folders (outputs and copied
uploads) in the temporary folder are removed once the response is sent (an event the page chains to each request;
for API clients, which do not run it, when the next request starts), and the whole folder on exit; folders under a
given ``--out`` are kept. Gradio's cache is bounded: uploads over :data:`MAX_UPLOAD` are
refused, files older than :data:`CACHE_AGE` seconds are deleted every :data:`CACHE_SWEEP` seconds, and ``jam-flow
demo`` points ``GRADIO_TEMP_DIR`` into its own temporary folder (unless set) and removes it on exit. Ctrl-C (or
SIGTERM) stops the server at once: clean-up runs, then the process exits without waiting for a running request.
Error lines in the page show file names, never the server's paths.

Layer: top (beside :mod:`jam_flow.cli`); Gradio is an optional extra (``pip install 'jam-flow[demo]'``).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import itertools
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jam_flow.api.generate import run_task
from jam_flow.api.model import JamFlow
from jam_flow.errors import InputError
from jam_flow.flow.layouts import TASKS
from jam_flow.inference import cli as generate_cli

log = logging.getLogger(__name__)

__all__ = ["TAB_HELP", "build_app", "request_argv", "run_request", "public_message", "main"]

MAX_UPLOAD = "100mb"  # Gradio refuses larger uploads (a 30 s talking-face video fits)
CACHE_SWEEP, CACHE_AGE = 300, 1800  # Gradio's delete_cache: every 5 min, files older than 30 min
# an absolute path (as in an error message): its last component is kept
_PATH = re.compile(r"(?<![\w.~])/(?:[^\s/'\"(),;:\[\]]+/)+([^\s/'\"(),;:\[\]]*)")

TAB_HELP = {
    "tts": "Text + a reference voice → speech (the audio branch alone, F5-TTS inference).",
    "text2av": "Text [+ a reference voice] → speech and lip motion together (paper cases 1-2).",
    "audio2motion": "Speech → lip motion [+ the other keypoints from a motion file, + transcript].",
    "dub": "Given lip motion + new text [+ reference voice] → speech timed to the motion (case 3).",
    "motion2audio": "Lip motion alone [+ reference voice] → plausible speech, no text (case 4).",
    "edit": "Regenerate [start, end) seconds of a clip in its speech, its motion or both.",
}


# ---------------------------------------------------------------------------------------------------- requests
def _motion_file(files: list[str] | str | None, folder: Path) -> Path | None:
    """Copy uploaded motion files into ``folder`` so ``motion.npy`` finds its ``motion.json`` sidecar (fps).

    Accepts one ``.npy`` [m, k, 3] (+ optionally its ``.json``) or one dataset clip ``.npz``."""
    if not files:
        return None
    files = [files] if isinstance(files, (str, Path)) else list(files)
    arrays = [Path(f) for f in files if Path(f).suffix in (".npy", ".npz")]
    sidecars = [Path(f) for f in files if Path(f).suffix == ".json"]
    if len(arrays) != 1 or len(sidecars) > 1 or len(arrays) + len(sidecars) != len(files):
        names = ", ".join(Path(f).name for f in files)
        raise InputError(f"--motion: give one motion .npy (+ its .json) or one clip .npz, got {names}")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"motion{arrays[0].suffix}"
    shutil.copyfile(arrays[0], target)
    if sidecars:
        shutil.copyfile(sidecars[0], target.with_suffix(".json"))
    return target


def _extract_motion(video: str, folder: Path, extractor: Any, device: str) -> Path:
    """Motion of a talking-face video with the ``jam-flow preprocess`` pipeline; returns the clip ``.npz``."""
    from jam_flow.data.preprocess import ClipFailure, PreprocessConfig, process_clip
    from jam_flow.data.sources import SourceClip

    model, detector, weights = extractor
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    src = SourceClip(id="video", path=Path(video), split="test", speaker="demo", text="")
    try:
        record = process_clip(
            src, folder, PreprocessConfig(motion_extractor=weights, device=device), model, detector
        )
    except ClipFailure as err:
        raise InputError(f"--motion: video {Path(video).name}: {err}") from err
    return folder / record.features


def request_argv(task: str, fields: dict[str, Any], out_dir: Path, ckpt: Path, device: str) -> list[str]:
    """The ``jam-flow generate`` arguments of one request. ``fields`` holds option names (``text``, ``ref_audio``,
    ``nfe``, ``cfg``, ``seed``, ...) -> values; empty values (None, "") are left out, as on a command line."""
    argv = ["--task", task, "--ckpt", str(ckpt), "--out", str(out_dir), "--device", device]
    for name, value in fields.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if isinstance(value, float) and value.is_integer() and name in ("nfe", "seed"):
            value = int(value)  # a number box returns floats
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


@contextmanager
def _count_evaluations(model: torch.nn.Module, total: int, report: Callable[[int, int], None] | None):
    """Call ``report(done, total)`` after each forward of ``model`` (one per sampler evaluation)."""
    if report is None:
        yield
        return
    counter = itertools.count(1)

    def hook(*_: Any) -> None:  # returns None: the model's output is left as it is
        report(min(next(counter), total), total)

    handle = model.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _plots(result: Any, out_dir: Path) -> dict[str, Path]:
    """``mel.png`` (the output speech's log-mel) and ``mouth.png`` (mouth keypoints over time), when present."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    paths: dict[str, Path] = {}
    if result.mel is not None:
        mel = result.mel.float().numpy()  # [n, c]
        fig, ax = plt.subplots(figsize=(8, 2.6))
        seconds = mel.shape[0] / (result.sample_rate / 256)
        ax.imshow(
            mel.T, origin="lower", aspect="auto", interpolation="none", extent=(0, seconds, 0, mel.shape[1])
        )
        ax.set_xlabel("seconds")
        ax.set_ylabel("mel bin")
        ax.set_title("log-mel of the output speech")
        fig.tight_layout()
        paths["mel_plot"] = out_dir / "mel.png"
        fig.savefig(paths["mel_plot"], dpi=80)
        plt.close(fig)
    if result.motion is not None:
        exp = np.asarray(result.motion)  # [m, k, 3]
        t = np.arange(exp.shape[0]) / result.fps
        fig, axes = plt.subplots(1, 3, figsize=(8, 2.6), sharex=True)
        for axis, ax in enumerate(axes):
            for kp in result.mouth_indices:
                ax.plot(t, exp[:, kp, axis], linewidth=1.2, label=f"kp {kp}")
            ax.set_title(f"mouth keypoints: {'xyz'[axis]}")
            ax.set_xlabel("seconds")
        axes[0].legend(fontsize=6)
        fig.tight_layout()
        paths["mouth_plot"] = out_dir / "mouth.png"
        fig.savefig(paths["mouth_plot"], dpi=80)
        plt.close(fig)
    return paths


class DemoRunner:
    """What the page needs besides the widgets: the loaded model and the generate code path."""

    def __init__(
        self,
        bundle: Any,
        vocoder: Any = None,
        liveportrait: str | Path | None = None,
        source: str | Path | None = None,
        motion_extractor: str | Path | None = None,
        out_root: str | Path | None = None,
    ) -> None:
        if (liveportrait is None) != (source is None):
            raise InputError("--source / --liveportrait: give both to render a talking head, or neither")
        if vocoder is None:  # Griffin-Lim, loaded (and warned about) once rather than per request
            from jam_flow.data.vocoder import load_vocoder

            vocoder = load_vocoder(None, bundle.mel)
        self.bundle, self.vocoder = bundle, vocoder
        self.jf = JamFlow(bundle, vocoder)
        self.liveportrait = Path(liveportrait) if liveportrait else None
        self.source = Path(source) if source else None
        self.device = str(bundle.device)
        self.owns_out_root = out_root is None  # a temporary folder: cleaned after each request and on exit
        self.out_root = Path(out_root) if out_root else Path(tempfile.mkdtemp(prefix="jam-flow-demo-"))
        self.out_root.mkdir(parents=True, exist_ok=True)
        self._count = itertools.count(1)
        self.last_folders: list[Path] = []  # the folders of the latest request (requests run one at a time)
        extractor_path = motion_extractor or liveportrait
        self.extractor = None
        if extractor_path is not None:
            from jam_flow.liveportrait import load_motion_extractor
            from jam_flow.liveportrait.face import FaceDetector

            model = load_motion_extractor(extractor_path, self.device)
            self.extractor = (model, FaceDetector(None), str(extractor_path))

    @property
    def can_render(self) -> bool:
        return self.liveportrait is not None

    def run(
        self, task: str, fields: dict[str, Any], report: Callable[[int, int], None] | None = None
    ) -> dict[str, Path]:
        """Run one request; returns the written files by name. Bad input raises ``InputError``."""
        if task not in TASKS:
            raise InputError(f"--task: expected one of {', '.join(TASKS)}, got {task!r}")
        fields = dict(fields)
        self.remove(
            self.last_folders
        )  # an API client does not run the page's clean-up event: the previous one
        out_dir = self.out_root / f"{next(self._count):04d}-{task}"  # what `jam-flow generate --out` writes
        inputs = out_dir.with_name(out_dir.name + "-inputs")  # uploads copied beside it
        self.last_folders = [out_dir, inputs]
        video = fields.pop("video", None)
        motion = _motion_file(fields.pop("motion", None), inputs)
        if video and motion is not None:
            raise InputError("--motion: give a motion file or a video, not both")
        if video:
            if self.extractor is None:
                raise InputError(
                    "--motion: a video needs a motion extractor (start the demo with --liveportrait)"
                )
            motion = _extract_motion(video, inputs, self.extractor, self.device)
        fields["motion"] = str(motion) if motion is not None else None
        produces_av = task != "tts" and not (task == "edit" and motion is None)
        if self.can_render and produces_av:
            fields.update(source=str(self.source), liveportrait=str(self.liveportrait))
        args = generate_cli.parse_args(request_argv(task, fields, out_dir, self.bundle.source, self.device))
        with _count_evaluations(self.bundle.model, args.nfe, report):
            result, paths = run_task(args, self.jf, out_dir)
        paths.update(_plots(result, out_dir))
        return paths

    def remove(self, folders: list[str] | None) -> None:
        """Delete the folders of a request whose response was sent (in a temporary ``out_root`` only)."""
        if not self.owns_out_root:
            return
        for folder in folders or []:
            path = Path(folder)
            if path.parent == self.out_root:
                shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        """Delete every request folder: the whole temporary ``out_root`` (a given ``--out`` is kept)."""
        if self.owns_out_root:
            shutil.rmtree(self.out_root, ignore_errors=True)


def public_message(text: str) -> str:
    """``text`` with every absolute path cut to its last component: the page never shows the server's paths
    (uploads land in Gradio's cache, outputs in the request folders)."""
    return _PATH.sub(lambda m: m.group(1) or "/", text)


def run_request(
    runner: DemoRunner, task: str, fields: dict[str, Any], report=None
) -> tuple[str, dict[str, Path]]:
    """``(status line, files)``: the CLI's ``error: ...`` line and no files when the input is bad."""
    t0 = time.perf_counter()
    try:
        paths = runner.run(task, fields, report)
    except InputError as err:
        return public_message(f"error: {err}"), {}
    return f"done in {time.perf_counter() - t0:.1f} s: {', '.join(p.name for p in paths.values())}", paths


# ---------------------------------------------------------------------------------------------------- the page
def _guidance_option() -> tuple[list[str], str | None] | None:
    """``(choices, default)`` of ``jam-flow generate --guidance`` when this version has that option, else None."""
    for action in generate_cli.build_parser()._actions:
        if action.dest == "guidance" and action.choices:
            return [str(c) for c in action.choices], action.default
    return None


def _input_widgets(gr: Any, task: str, runner: DemoRunner) -> dict[str, Any]:
    options = generate_cli.TASK_OPTIONS[task]
    required = set(generate_cli.REQUIRED_OPTIONS[task])

    def label(name: str, text: str) -> str:
        return f"{text} (--{name.replace('_', '-')}{', required' if name in required else ''})"

    w: dict[str, Any] = {}
    for name in generate_cli.INPUT_OPTIONS:
        if name not in options:
            continue
        eid = f"{task}-{name.replace('_', '-')}"
        if name in ("text", "ref_text"):
            what = "transcript of the reference" if name == "ref_text" else "text to speak"
            if task == "edit":
                what = "transcript of the whole clip after the edit"
            w[name] = gr.Textbox(label=label(name, what), lines=2 if name == "text" else 1, elem_id=eid)
        elif name in ("ref_audio", "audio"):
            what = "reference voice" if name == "ref_audio" else "speech"
            w[name] = gr.Audio(
                sources=["upload", "microphone"], type="filepath", label=label(name, what), elem_id=eid
            )
        elif name == "motion":
            what = "motion: one .npy [m, 21, 3] (+ its .json) or a dataset clip .npz"
            w[name] = gr.File(
                file_count="multiple",
                file_types=[".npy", ".npz", ".json"],
                label=label(name, what),
                elem_id=eid,
            )
            if runner.extractor is not None:
                w["video"] = gr.Video(
                    sources=["upload"],
                    label="or a talking-face video to extract the motion from",
                    elem_id=f"{task}-video",
                )
        elif name in ("duration", "edit_start", "edit_end"):
            # text, not a number box: empty means "not given", and the CLI parser reads (and refuses) the value
            hint = "seconds of speech; empty: from the text" if name == "duration" else "seconds"
            w[name] = gr.Textbox(
                label=label(name, hint), placeholder="auto" if name == "duration" else "", elem_id=eid
            )
        elif name == "edit_streams":
            w[name] = gr.Dropdown(
                choices=["audio", "motion", "both"],
                value=None,
                label=label(name, "streams to regenerate"),
                elem_id=eid,
            )
    with gr.Row():
        w["nfe"] = gr.Number(label="NFE (--nfe)", value=32, precision=0, elem_id=f"{task}-nfe")
        w["cfg"] = gr.Number(label="γ, guidance scale (--cfg)", value=2.0, elem_id=f"{task}-cfg")
        guidance = _guidance_option()
        if guidance:
            choices, default = guidance
            w["guidance"] = gr.Dropdown(
                choices=choices, value=default, label="guidance (--guidance)", elem_id=f"{task}-guidance"
            )
        w["seed"] = gr.Textbox(label="seed (--seed; empty: random)", value="0", elem_id=f"{task}-seed")
    return w


def _output_widgets(gr: Any, task: str, runner: DemoRunner) -> dict[str, Any]:
    av = task != "tts"  # every other task can produce speech + motion
    o: dict[str, Any] = {"status": gr.Markdown(elem_id=f"{task}-status")}
    o["audio"] = gr.Audio(
        label="speech (audio.wav)",
        type="filepath",
        interactive=False,
        waveform_options=gr.WaveformOptions(
            show_recording_waveform=False
        ),  # the browser's own <audio> player
        elem_id=f"{task}-out-audio",
    )
    o["preview"] = gr.Video(
        label="preview.mp4 (keypoints + sound)",
        interactive=False,
        visible=av,
        height=360,
        elem_id=f"{task}-out-preview",
    )
    o["talking_head"] = gr.Video(
        label="talking head (LivePortrait)",
        interactive=False,
        height=360,
        visible=av and runner.can_render,
        elem_id=f"{task}-out-talking-head",
    )
    o["mel_plot"] = gr.Image(label="log-mel", type="filepath", interactive=False, elem_id=f"{task}-mel")
    o["mouth_plot"] = gr.Image(
        label="mouth keypoints", type="filepath", interactive=False, visible=av, elem_id=f"{task}-mouth"
    )
    o["files"] = gr.File(
        label="files written (as by jam-flow generate)",
        file_count="multiple",
        interactive=False,
        elem_id=f"{task}-files",
    )
    return o


def build_app(
    bundle: Any,
    vocoder: Any = None,
    liveportrait: str | Path | None = None,
    source: str | Path | None = None,
    motion_extractor: str | Path | None = None,
    out_root: str | Path | None = None,
):
    """The demo page (a ``gradio.Blocks``) for a loaded ``bundle`` (:func:`jam_flow.inference.bundle.load_bundle`).

    ``vocoder``: a loaded Vocos (default: Griffin-Lim); ``liveportrait`` + ``source``: render talking heads;
    ``motion_extractor`` (default: the one in ``liveportrait``): accept videos as motion input; ``out_root``:
    where each request's files go (default: a new temporary folder). ``app.runner`` is the :class:`DemoRunner`."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    runner = DemoRunner(bundle, vocoder, liveportrait, source, motion_extractor, out_root)
    blocks = gr.Blocks(title="JAM-Flow demo", analytics_enabled=False, delete_cache=(CACHE_SWEEP, CACHE_AGE))
    with blocks as app:
        gr.Markdown(
            f"# JAM-Flow\nOne model, every task: speech and lip motion generated jointly. Model: `{bundle.source.name}`"
            f" on {runner.device}; vocoder: {'Vocos' if vocoder is not None else 'Griffin-Lim (no --vocoder)'}."
        )
        for task in TASKS:
            with gr.Tab(task, id=task, elem_id=f"tab-{task}"):
                gr.Markdown(TAB_HELP[task])
                with gr.Row():
                    with gr.Column():
                        widgets = _input_widgets(gr, task, runner)
                        button = gr.Button("Generate", variant="primary", elem_id=f"{task}-run")
                    with gr.Column():
                        outs = _output_widgets(gr, task, runner)
                folders = gr.State()  # the request's folders, removed once its response is sent
                event = button.click(
                    _handler(gr, runner, task, list(widgets)),
                    inputs=list(widgets.values()),
                    outputs=[
                        outs["status"],
                        outs["audio"],
                        outs["preview"],
                        outs["talking_head"],
                        outs["mel_plot"],
                        outs["mouth_plot"],
                        outs["files"],
                        folders,
                    ],
                    concurrency_id="model",
                    api_name=task,
                )
                event.then(
                    runner.remove,
                    inputs=[folders],
                    outputs=None,
                    api_visibility="private",
                    show_progress="hidden",
                )
        from jam_flow.video.tabs import VideoRequests, add_video_tabs

        extractor = runner.extractor[0] if runner.extractor is not None else None
        requests = VideoRequests(
            runner.jf, runner.out_root, runner.liveportrait, extractor, runner.source, remove=runner.remove
        )
        video_handlers = add_video_tabs(
            gr,
            requests,
            runner.can_render,
            extractor is not None,
            remove=runner.remove,
            public=public_message,
        )
    app.runner = runner
    app.video_handlers, app.video_requests = video_handlers, requests  # "dub-video", "animate" (tests)
    return app


def _handler(gr: Any, runner: DemoRunner, task: str, names: list[str]):
    def handle(*values: Any, progress=gr.Progress()):  # noqa: B008 - Gradio's progress injection
        fields = dict(zip(names, values, strict=True))
        status, paths = run_request(
            runner, task, fields, report=lambda i, n: progress((i, n), desc="sampling", unit="evaluations")
        )
        files = [str(path) for name, path in paths.items() if not name.endswith("_plot")]
        folders = [str(f) for f in runner.last_folders]  # one request at a time: these are this request's
        return (
            status,
            *(
                str(paths[k]) if k in paths else None
                for k in ("audio", "preview", "talking_head", "mel_plot", "mouth_plot")
            ),
            files or None,
            folders,
        )

    handle.names = names  # the input order, for tests
    # named parameters (``text``, ``ref_audio``, ...) in the endpoint's API page and for ``gradio_client`` keywords
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    progress = inspect.signature(handle).parameters["progress"]
    handle.__signature__ = inspect.Signature([*params, progress.replace(kind=inspect.Parameter.KEYWORD_ONLY)])
    return handle


def serve_until_stopped(app: Any, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve ``app`` until Ctrl-C or SIGTERM, then stop at once: the request folders are removed and the server is
    closed (given a second at most: open connections and a running request are not waited for)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        launch(app, host, port, block=False)
        while not stop.wait(0.2) and getattr(app, "is_running", True):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        app.runner.close()
        closer = threading.Thread(target=app.close, kwargs={"verbose": False}, daemon=True)
        closer.start()
        closer.join(timeout=1.0)


def launch(app: Any, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve ``app`` (one request at a time: one model); ``block=False`` returns once the server is up."""
    import gradio as gr

    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    app.queue(default_concurrency_limit=1)
    for attempt in range(3):
        try:
            return app.launch(
                server_name=host,
                server_port=port,
                prevent_thread_lock=not block,
                allowed_paths=[str(app.runner.out_root)],
                max_file_size=MAX_UPLOAD,  # a bound on what one upload adds to Gradio's cache
                theme=theme,  # system fonts: the page loads nothing from the network
                ssr_mode=False,
                quiet=True,
                footer_links=[],
            )
        except ValueError as err:
            # Gradio's start-up probe of its own page gives up after 3 s, which a busy machine can exceed
            if "localhost is not accessible" not in str(err) or attempt == 2:
                raise
            log.warning("the page did not answer Gradio's start-up probe in time; starting again")
            app.close()


# ---------------------------------------------------------------------------------------------------- command
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise InputError(f"{message} (see `jam-flow demo --help`)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="jam-flow demo", description="A web page that runs every JAM-Flow task of one model.")
    p.add_argument("--ckpt", required=True, type=Path, metavar="CKPT_OR_EXPORT_DIR")
    p.add_argument("--vocoder", type=Path, metavar="DIR", help="local Vocos directory (default: Griffin-Lim)")
    p.add_argument(
        "--liveportrait", type=Path, metavar="LP_DIR", help="LivePortrait weights: render talking heads"
    )
    p.add_argument("--source", type=Path, metavar="IMAGE", help="portrait to animate (with --liveportrait)")
    p.add_argument(
        "--motion-extractor",
        type=Path,
        metavar="PTH",
        help="accept videos as motion input (default: LP_DIR's)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="where requests write their files (default: a temp dir)"
    )
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if importlib.util.find_spec("gradio") is None:
        raise InputError("jam-flow demo needs Gradio: pip install 'jam-flow[demo]'")
    for name in ("source", "motion_extractor"):
        path = getattr(args, name)
        if path is not None and not path.exists():
            raise InputError(f"--{name.replace('_', '-')}: {path} does not exist")
    if args.vocoder is not None and not args.vocoder.is_dir():
        raise InputError(
            f"--vocoder: {args.vocoder} is not a directory (expected config.yaml + pytorch_model.bin)"
        )
    from jam_flow.data.vocoder import load_vocoder
    from jam_flow.inference.bundle import load_bundle

    bundle = load_bundle(args.ckpt, device=args.device)
    vocoder = load_vocoder(args.vocoder, bundle.mel, device=args.device) if args.vocoder is not None else None
    # Gradio's cache (uploads, copies of the outputs) in a folder of ours, removed on exit, unless the user set one
    cache = None
    if not os.environ.get("GRADIO_TEMP_DIR"):
        cache = Path(tempfile.mkdtemp(prefix="jam-flow-demo-gradio-"))
        os.environ["GRADIO_TEMP_DIR"] = str(cache)
    try:
        app = build_app(bundle, vocoder, args.liveportrait, args.source, args.motion_extractor, args.out)
        print(f"JAM-Flow demo on http://{args.host}:{args.port} (Ctrl+C stops it)", flush=True)
        serve_until_stopped(app, args.host, args.port)
    finally:
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)
    print("JAM-Flow demo stopped", flush=True)
    sys.stderr.flush()
    # everything is cleaned up; a request still running in a worker thread, and the interpreter's finalisation of
    # the server's libraries (measured: 15 s after an idle server had closed), would delay the exit: leave now
    os._exit(0)
