"""The web demo's "dub a video" and "animate" tabs: widgets and handlers over :meth:`jam_flow.api.JamFlow`'s
pipeline (:func:`jam_flow.video.dub_video` / :func:`jam_flow.video.animate`, the functions the commands run).

Dimension legend: none (requests only). No masks.

:func:`add_video_tabs` is called by :func:`jam_flow.demo.build_app` inside its ``gradio.Blocks``; Gradio is passed
in (``gr``), so importing this module needs no Gradio. Each request writes ``OUT.mp4`` and its files into its own
folder under the demo's ``--out``; a bad input shows the command's ``error: ...`` line in the page.
"""

from __future__ import annotations

import inspect
import itertools
import time
from pathlib import Path
from typing import Any

from jam_flow.errors import InputError
from jam_flow.video.pipeline import animate, dub_video, load_liveportrait_parts

__all__ = ["VideoRequests", "add_video_tabs"]

DUB_HELP = (
    "A talking video + a new script → speech timed to the lips the video already has, in the video's own voice "
    "(or a reference voice), muxed onto the original frames (`jam-flow dub-video`). Any length: long videos are "
    "cut at pauses into windows."
)
ANIMATE_HELP = (
    "A face image or video + speech (audio → motion) or text (speech generated too) → a LivePortrait talking head "
    "pasted back into the full frame (`jam-flow animate`)."
)


class VideoRequests:
    """Runs the two video jobs for the demo: one folder per request, networks loaded once."""

    def __init__(
        self,
        jf: Any,
        out_root: Path,
        liveportrait: Path | None,
        motion_extractor: Any,
        source: Any,
        remove=None,
    ):
        self.jf, self.out_root = jf, Path(out_root)
        self.remove = remove  # the demo's clean-up of a request's folders (None: keep them)
        self.last_folders: list[str] = []
        self.liveportrait, self.motion_extractor, self.source = liveportrait, motion_extractor, source
        self._models = None
        self._count = itertools.count(1)
        self.face_detector: str | None = None  # the detector of the extractor path (None: Haar; "full-frame")

    def models(self):
        if self.liveportrait is None:
            raise InputError("--liveportrait: start the demo with LivePortrait weights to render")
        if self._models is None:
            _, self._models = load_liveportrait_parts(
                None, self.liveportrait, self.jf.device, need_models=True
            )
        return self._models

    def extractor(self):
        if self.motion_extractor is not None:
            return self.motion_extractor
        if self.liveportrait is None:
            raise InputError(
                "--motion-extractor / --liveportrait: start the demo with one to extract a video's motion"
            )
        return self.models().M

    def _cfg(self):
        from jam_flow.data.preprocess import PreprocessConfig

        return PreprocessConfig(
            motion_extractor="", face_detector=self.face_detector, device=str(self.jf.device)
        )

    def _out(self, name: str) -> Path:
        if self.remove is not None:  # an API client does not run the page's clean-up event: the previous one
            self.remove(self.last_folders)
        folder = self.out_root / f"{next(self._count):04d}-{name}"
        self.last_folders = [str(folder)]
        return folder / f"{name}.mp4"

    def dub(self, fields: dict[str, Any], progress=None) -> dict[str, Path]:
        video, text = fields.get("video"), (fields.get("text") or "").strip()
        if not video:
            raise InputError("--video: upload a talking-face video")
        if not text:
            raise InputError("--text: the text is empty")
        rerender = bool(fields.get("rerender"))
        out = self._out("dub-video")
        dub_video(
            self.jf.bundle, video, text, out, extractor=self.extractor(),
            models=self.models() if rerender else None, rerender=rerender, vocoder=self.jf.vocoder,
            progress=progress, cfg=self._cfg(), **_common(fields),
        )  # fmt: skip
        return _files(out, "dub.json")

    def animate(self, fields: dict[str, Any], progress=None) -> dict[str, Path]:
        source = fields.get("source") or self.source
        if not source:
            raise InputError("--source: upload a face image or video (or start the demo with --source)")
        audio, text = fields.get("audio") or None, (fields.get("text") or "").strip() or None
        out = self._out("animate")
        animate(
            self.jf.bundle, source, out, models=self.models(), audio=audio, text=text,
            vocoder=self.jf.vocoder if text else None, progress=progress, cfg=self._cfg(), **_common(fields),
        )  # fmt: skip
        return _files(out, "animate.json")


def _number(fields: dict[str, Any], name: str, default: float, kind=float):
    value = fields.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError) as err:
        raise InputError(f"--{name.replace('_', '-')}: expected a number, got {value!r}") from err


def _common(fields: dict[str, Any]) -> dict[str, Any]:
    from jam_flow.flow.sampler import SamplerSettings
    from jam_flow.inference.cli import check_sampling

    nfe, cfg = _number(fields, "nfe", 32, int), _number(fields, "cfg", 2.0)
    seed = fields.get("seed")
    seed = None if seed is None or not str(seed).strip() else _number(fields, "seed", 0, int)
    check_sampling({"nfe": nfe, "cfg": cfg, "seed": seed})
    window_s, context_s = _number(fields, "window_s", 20.0), _number(fields, "context_s", 2.0)
    if not 1.0 <= window_s <= 28.0:
        raise InputError(f"--window-s: expected 1-28 s, got {window_s}")
    if not 0.0 <= context_s <= window_s / 2:
        raise InputError(f"--context-s: expected 0 to half of --window-s, got {context_s}")
    ref_text = (fields.get("ref_text") or "").strip() or None
    return {
        "settings": SamplerSettings(nfe=nfe, cfg=cfg),
        "seed": seed,
        "ref_audio": fields.get("ref_audio") or None,
        "ref_text": ref_text,
        "window_s": window_s,
        "context_s": context_s,
    }


def _files(out: Path, record: str) -> dict[str, Path]:
    names = {"video": out.name, "audio": "audio.wav", "motion": "motion.npy", "motion_json": "motion.json"}
    paths = {k: out.parent / v for k, v in names.items()}
    paths["record"] = out.parent / record
    if (out.parent / "rerender_motion.npy").exists():
        paths["rerender_motion"] = out.parent / "rerender_motion.npy"
    return paths


def add_video_tabs(
    gr: Any, requests: VideoRequests, can_render: bool, can_extract: bool, remove=None, public=None
) -> dict[str, Any]:
    """Add the two tabs to the current ``gr.Blocks``; returns their handlers by endpoint name. ``remove(folders)``
    runs after each response is sent (a private chained event); ``public(text)`` cleans error lines (no server
    paths)."""
    public = public or (lambda text: text)
    handlers = {}
    with gr.Tab("dub a video", id="dub-video", elem_id="tab-dub-video"):
        gr.Markdown(DUB_HELP + ("" if can_extract else " *Start the demo with `--liveportrait` to use it.*"))
        with gr.Row():
            with gr.Column():
                w = {
                    "video": gr.Video(sources=["upload"], label="talking-face video (--video)"),
                    "text": gr.Textbox(label="new script (--text; one or more sentences)", lines=3),
                    "ref_audio": gr.Audio(
                        sources=["upload", "microphone"],
                        type="filepath",
                        label="reference voice (--ref-audio; empty: the video's own speech)",
                    ),  # fmt: skip
                    "ref_text": gr.Textbox(label="transcript of the reference (--ref-text)"),
                    "rerender": gr.Checkbox(
                        label="re-render the mouth (--rerender)", value=False, interactive=can_render
                    ),
                }
                w.update(_model_widgets(gr, "dub-video"))
                button = gr.Button("Dub", variant="primary", elem_id="dub-video-run")
            with gr.Column():
                outs = _outputs(gr, "dub-video", "dubbed video")
        handlers["dub-video"] = _wire(
            gr, button, w, outs, requests, requests.dub, "dub-video", remove, public
        )
    with gr.Tab("animate", id="animate", elem_id="tab-animate"):
        gr.Markdown(
            ANIMATE_HELP + ("" if can_render else " *Start the demo with `--liveportrait` to use it.*")
        )
        with gr.Row():
            with gr.Column():
                w = {
                    "source": gr.File(
                        label="face image or video (--source; empty: the demo's --source)",
                        file_types=["image", "video"],
                    ),
                    "audio": gr.Audio(
                        sources=["upload", "microphone"], type="filepath", label="speech (--audio)"
                    ),
                    "text": gr.Textbox(label="or text to speak (--text)", lines=2),
                    "ref_audio": gr.Audio(
                        sources=["upload", "microphone"],
                        type="filepath",
                        label="voice for --text (--ref-audio)",
                    ),
                    "ref_text": gr.Textbox(label="transcript of the voice (--ref-text)"),
                }
                w.update(_model_widgets(gr, "animate"))
                button = gr.Button("Animate", variant="primary", elem_id="animate-run")
            with gr.Column():
                outs = _outputs(gr, "animate", "talking head")
        handlers["animate"] = _wire(
            gr, button, w, outs, requests, requests.animate, "animate", remove, public
        )
    return handlers


def _model_widgets(gr: Any, tab: str) -> dict[str, Any]:
    with gr.Row():
        return {
            "window_s": gr.Number(label="window, s (--window-s)", value=20.0, elem_id=f"{tab}-window"),
            "context_s": gr.Number(label="context, s (--context-s)", value=2.0, elem_id=f"{tab}-context"),
            "nfe": gr.Number(label="NFE (--nfe)", value=32, precision=0, elem_id=f"{tab}-nfe"),
            "cfg": gr.Number(label="γ (--cfg)", value=2.0, elem_id=f"{tab}-cfg"),
            "seed": gr.Textbox(label="seed (--seed; empty: random)", value="0", elem_id=f"{tab}-seed"),
        }


def _outputs(gr: Any, tab: str, what: str) -> dict[str, Any]:
    return {
        "status": gr.Markdown(elem_id=f"{tab}-status"),
        "video": gr.Video(label=what, interactive=False, height=360, elem_id=f"{tab}-out-video"),
        "audio": gr.Audio(label="speech (audio.wav)", type="filepath", interactive=False),
        "files": gr.File(label="files written", file_count="multiple", interactive=False),
    }


def _wire(gr, button, widgets, outs, requests: VideoRequests, run, name: str, remove, public):
    names = list(widgets)

    def handle(*values: Any, progress=gr.Progress()):  # noqa: B008 - Gradio's progress injection
        fields = dict(zip(names, values, strict=True))
        t0 = time.perf_counter()
        try:
            paths = run(fields, lambda stage, done, total: progress((done, total), desc=stage))
        except InputError as err:
            return public(f"error: {err}"), None, None, None, list(requests.last_folders)
        status = f"done in {time.perf_counter() - t0:.1f} s: {', '.join(p.name for p in paths.values())}"
        files = [str(p) for p in paths.values()]
        return status, str(paths["video"]), str(paths["audio"]), files, list(requests.last_folders)

    handle.names = names
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    progress = inspect.signature(handle).parameters["progress"]
    handle.__signature__ = inspect.Signature([*params, progress.replace(kind=inspect.Parameter.KEYWORD_ONLY)])
    folders = gr.State()  # the request's folder, removed once its response is sent
    event = button.click(
        handle,
        inputs=list(widgets.values()),
        outputs=[outs["status"], outs["video"], outs["audio"], outs["files"], folders],
        concurrency_id="model",
        api_name=name.replace("-", "_"),
    )
    if remove is not None:
        event.then(remove, inputs=[folders], outputs=None, api_visibility="private", show_progress="hidden")
    return handle
