"""The Python API: :class:`JamFlow` holds a model, its vocoder and device; one method per JAM-Flow task.

Dimension legend: n mel frames (93.75 / s), c mel channels (100), m motion frames (25 / s), k keypoints (21),
s samples (24 kHz), b batch. Masks in a batch are True = valid.

    from jam_flow import JamFlow

    jf = JamFlow.load("runs/export", device="cpu", vocoder=None)     # a .ckpt or an export dir
    r = jf.text2av(text="Hello there.", duration=1.5, nfe=32, seed=0)
    r.audio, r.sample_rate, r.motion                                  # tensor [s], 24000, array [m, 21, 3]
    r.save("out/hello")                                               # what `jam-flow generate` writes, atomically

Each method takes the options of ``jam-flow generate`` as keyword arguments, with the same names (underscores for
dashes: ``ref_audio``, ``ref_text``, ``edit_start``, ...), the same defaults and the same checks
(:func:`jam_flow.inference.cli.check_options`); bad input raises :class:`~jam_flow.errors.InputError` whose message
names the option as the CLI does. Audio may be a path or ``(samples, sample_rate)``. :meth:`JamFlow.generate_batch`
runs a task on a padded dataset batch (what ``jam-flow evaluate`` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from jam_flow.api.batch import Generated, generate_batch
from jam_flow.data.vocoder import Vocoder, load_vocoder
from jam_flow.errors import InputError
from jam_flow.flow.sampler import SamplerSettings
from jam_flow.inference import tasks
from jam_flow.inference.bundle import ModelBundle, load_bundle
from jam_flow.inference.cli import SAMPLING_DEFAULTS, check_options, check_sampling
from jam_flow.inference.result import GenerationResult

__all__ = ["JamFlow", "GenerationResult"]


def sampler_settings(options: dict[str, Any]) -> SamplerSettings:
    """The sampler of ``generate``'s sampling options (``nfe``, ``cfg``, ``audio_cfg``, ``motion_cfg``,
    ``guidance``, ``method``, ``sway``; missing ones take the CLI's defaults)."""
    o = {**SAMPLING_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    return SamplerSettings(
        nfe=o["nfe"],
        method=o["method"],
        sway_coef=o["sway"],
        cfg=o["cfg"],
        audio_cfg=options.get("audio_cfg"),
        motion_cfg=options.get("motion_cfg"),
        guidance=o["guidance"],
    )


_VIDEO_OPTIONS = (
    "ref_audio", "ref_text", "window_s", "context_s", "face_detector", "crop_size", "batch_size", "overwrite",
    "progress",
)  # fmt: skip


def _video_options(options: dict[str, Any]) -> tuple[dict[str, Any], SamplerSettings, int | None]:
    """Split ``dub_video`` / ``animate`` keyword options into the pipeline's, the sampler and the seed."""
    video = {k: v for k, v in options.items() if k in _VIDEO_OPTIONS}
    sampling = {k: v for k, v in options.items() if k not in _VIDEO_OPTIONS}
    check_sampling(sampling)
    if "crop_size" in video or "face_detector" in video:
        from jam_flow.data.preprocess import PreprocessConfig

        video["cfg"] = PreprocessConfig(
            motion_extractor="",
            face_detector=video.pop("face_detector", None),
            crop_size=video.pop("crop_size", 256),
        )
    return video, sampler_settings(sampling), options.get("seed")


class _OnFirstDecode:
    """The Griffin-Lim fallback of a :class:`JamFlow` without a vocoder, loaded (and warned about) only when a task
    first has speech to decode, so a bad input fails first."""

    def __init__(self, jf: JamFlow) -> None:
        self.jf = jf

    def decode(self, mel: torch.Tensor) -> torch.Tensor:
        return self.jf.vocoder.decode(mel)


class JamFlow:
    """A loaded JAM-Flow model with its vocoder: ``tts``, ``text2av``, ``audio2motion``, ``dub``,
    ``motion2audio``, ``edit`` (one sample each) and :meth:`generate_batch` (a padded batch).

    Args:
        bundle: a loaded model (:func:`jam_flow.inference.bundle.load_bundle`); see :meth:`load`.
        vocoder: a loaded :class:`~jam_flow.data.vocoder.Vocoder`; None: Griffin-Lim, loaded (with its warning)
            the first time speech is decoded.
    """

    def __init__(self, bundle: ModelBundle, vocoder: Vocoder | None = None) -> None:
        self.bundle = bundle
        self._vocoder = vocoder

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "cpu", vocoder: str | Path | Vocoder | None = None
    ) -> JamFlow:
        """Load a Lightning ``.ckpt`` or an export directory on ``device``. ``vocoder``: a local Vocos directory
        (``config.yaml`` + ``pytorch_model.bin``), a loaded vocoder, or None (the Griffin-Lim fallback)."""
        device = str(device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"--device: {device} requested but no CUDA device is available")
        bundle = load_bundle(path, device=device)
        if isinstance(vocoder, (str, Path)):
            if not Path(vocoder).is_dir():
                raise InputError(
                    f"--vocoder: {vocoder} is not a directory (expected config.yaml + pytorch_model.bin)"
                )
            vocoder = load_vocoder(vocoder, bundle.mel, device=device)
        return cls(bundle, vocoder)

    @property
    def device(self) -> torch.device:
        return self.bundle.device

    @property
    def sample_rate(self) -> int:
        return self.bundle.mel.sample_rate

    @property
    def vocoder(self) -> Vocoder:
        """The vocoder (the Griffin-Lim fallback is loaded on first use)."""
        if self._vocoder is None:
            self._vocoder = load_vocoder(None, self.bundle.mel)
        return self._vocoder

    # ------------------------------------------------------------------------------------------------- the tasks
    def run(self, task: str, **options: Any) -> GenerationResult:
        """Run ``task`` with ``generate``'s options (what every task method calls)."""
        check_options(task, options)
        o = dict(options)
        common = {"settings": sampler_settings(o), "seed": o.get("seed")}
        b = self.bundle
        vocoder = self._vocoder if self._vocoder is not None else _OnFirstDecode(self)
        if task in ("tts", "text2av"):
            speak = tasks.tts if task == "tts" else tasks.text2av
            return speak(
                b, o["text"], o.get("ref_audio"), o.get("ref_text"), duration=o.get("duration"),
                vocoder=vocoder, **common,
            )  # fmt: skip
        if task == "audio2motion":
            return tasks.audio2motion(
                b, o["audio"], rest_motion=o.get("motion"), text=o.get("text"), **common
            )
        if task == "dub":
            return tasks.dub(
                b, o["motion"], o["text"], o.get("ref_audio"), o.get("ref_text"), vocoder=vocoder, **common
            )
        if task == "motion2audio":
            return tasks.motion2audio(
                b, o["motion"], o.get("ref_audio"), o.get("ref_text"), vocoder=vocoder, **common
            )
        streams = o.get("edit_streams") or ("both" if o.get("motion") is not None else "audio")
        return tasks.edit(
            b, o["audio"], o["edit_start"], o["edit_end"], motion=o.get("motion"), text=o.get("text"),
            streams=streams, vocoder=vocoder, **common,
        )  # fmt: skip

    def tts(self, text: str, ref_audio: Any, ref_text: str | None = None, **options: Any) -> GenerationResult:
        """Text + reference voice -> speech (``duration``; sampling options as ``generate``)."""
        return self.run("tts", text=text, ref_audio=ref_audio, ref_text=ref_text, **options)

    def text2av(
        self, text: str, ref_audio: Any = None, ref_text: str | None = None, **options: Any
    ) -> GenerationResult:
        """Text [+ reference voice] -> speech + lip motion (paper cases 1-2; ``duration``)."""
        return self.run("text2av", text=text, ref_audio=ref_audio, ref_text=ref_text, **options)

    def audio2motion(self, audio: Any, **options: Any) -> GenerationResult:
        """Speech -> lip motion (``motion``: a file whose e_rest track is kept; ``text``: the transcript)."""
        return self.run("audio2motion", audio=audio, **options)

    def dub(self, motion: str | Path, text: str, **options: Any) -> GenerationResult:
        """Lip motion + new text [+ ``ref_audio`` / ``ref_text``] -> speech timed to the motion (case 3)."""
        return self.run("dub", motion=motion, text=text, **options)

    def motion2audio(self, motion: str | Path, **options: Any) -> GenerationResult:
        """Lip motion alone [+ ``ref_audio`` / ``ref_text``] -> speech, no text (case 4)."""
        return self.run("motion2audio", motion=motion, **options)

    def edit(self, audio: Any, edit_start: float, edit_end: float, **options: Any) -> GenerationResult:
        """Regenerate ``[edit_start, edit_end)`` seconds of a clip (``motion``, ``text``, ``edit_streams``)."""
        return self.run("edit", audio=audio, edit_start=edit_start, edit_end=edit_end, **options)

    # ------------------------------------------------------------------------------------------------- videos
    def dub_video(
        self,
        video: str | Path,
        text: str,
        out: str | Path,
        *,
        motion_extractor: Any = None,
        liveportrait: Any = None,
        rerender: bool = False,
        **options: Any,
    ) -> dict[str, Any]:
        """``jam-flow dub-video``: ``text`` spoken in time with ``video``'s lips, muxed onto its original frames
        (``out`` an .mp4; ``audio.wav``, ``motion.npy`` / ``.json`` and ``dub.json`` beside it). Returns the
        ``dub.json`` record. ``motion_extractor``: a ``motion_extractor.pth`` / weights dir or a loaded extractor;
        ``liveportrait``: a weights dir or loaded ``LivePortraitModels`` (``rerender``, or as the extractor).
        Options: ``ref_audio``, ``ref_text``, ``window_s``, ``context_s``, ``face_detector``, ``crop_size``,
        ``batch_size``, ``overwrite``, ``progress`` and the sampling options of ``generate``."""
        from jam_flow.video import dub_video, load_liveportrait_parts

        video_opts, settings, seed = _video_options(options)
        extractor, models = load_liveportrait_parts(
            motion_extractor, liveportrait, self.device, need_models=rerender
        )
        return dub_video(
            self.bundle, video, text, out, extractor=extractor, models=models, rerender=rerender,
            settings=settings, seed=seed, vocoder=self.vocoder, **video_opts,
        )  # fmt: skip

    def animate(
        self,
        source: str | Path,
        out: str | Path,
        *,
        liveportrait: Any,
        audio: Any = None,
        text: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """``jam-flow animate``: ``source`` (image or video) speaking ``audio`` (audio -> motion) or ``text``
        (text -> speech + motion), rendered with LivePortrait into ``out`` (.mp4; ``animate.json`` beside it).
        Options as :meth:`dub_video` (without ``rerender``)."""
        from jam_flow.video import animate, load_liveportrait_parts

        video_opts, settings, seed = _video_options(options)
        _, models = load_liveportrait_parts(None, liveportrait, self.device, need_models=True)
        return animate(
            self.bundle, source, out, models=models, audio=audio, text=text, settings=settings, seed=seed,
            vocoder=self.vocoder if text is not None else None, **video_opts,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------------- batches
    def generate_batch(
        self,
        batch: dict[str, Any],
        task: str,
        generator: torch.Generator | None = None,
        use_rest: bool = False,
        duration: str = "reference",
        **options: Any,
    ) -> Generated:
        """``task`` (one of :data:`jam_flow.api.batch.EVAL_TASKS`) on a padded ``collate_clips``
        batch (``mel``, ``exp``, ``text``, ``audio_mask``, ``motion_mask``) in one sampler call; sampling options
        as ``generate`` (``seed`` seeds ``generator`` when none is given). Returns raw-unit tensors
        (:class:`~jam_flow.api.batch.Generated`)."""
        check_sampling(options)
        if generator is None:
            seed = options.get("seed")
            generator = torch.Generator().manual_seed(int(seed) if seed is not None else 0)
        return generate_batch(
            self.bundle, batch, task, sampler_settings(options), generator, use_rest, duration
        )
