"""A trained model ready for inference: network (EMA weights, eval mode) + feature settings + stats + vocabulary.

Dimension legend: m motion frames, k keypoints (21), n mel frames, c mel channels (100), dm mouth dims (12),
dr rest dims (51).

Two on-disk forms are read (docs/CONVENTIONS.md "Checkpoints and exported models"):

* a Lightning ``.ckpt`` whose ``ckpt["jam_flow"]`` holds ``format_version``, ``model`` (``class_path`` +
  ``init_args``), ``mel``, ``motion``, ``stats``, ``vocab``, ``normalize_mel`` and ``ema_state_dict``;
* an export directory: ``model.safetensors`` (the EMA state dict) + ``config.yaml`` (every field above except the
  weights), written by :func:`save_export`.

The weights load strictly: missing or unexpected keys, wrong shapes or an unknown ``format_version`` raise
``InputError`` naming the file and the mismatch.

Motion normalisation: the network sees ``(exp - exp_mean) / exp_std`` (train-split stats, per keypoint coordinate;
identity when the model has no stats), split into the mouth keypoints ``[m, 4*3]`` and the rest ``[m, 17*3]``,
flattened keypoint-major. The neutral expression is the dataset mean (zeros when no stats).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from jam_flow.data.text import Vocab
from jam_flow.errors import InputError
from jam_flow.features import MelSettings, MotionSettings
from jam_flow.models.configs import with_legacy_defaults
from jam_flow.models.format import plain

__all__ = ["FORMAT_VERSION", "AudioOnly", "ModelBundle", "load_bundle", "save_export", "check_state_dict"]

FORMAT_VERSION = 1
# std floor for motion and mel standardisation, the same as training (jam_flow.lightning.module)
STD_FLOOR = 1e-5
_META_FIELDS = ("format_version", "model", "mel", "motion", "stats", "vocab", "normalize_mel")


class AudioOnly:
    """An F5-style ``AudioDiT`` behind ``JointDiT.forward``'s keyword interface: returns ``(audio velocity, None)``
    and ignores the motion arguments. Used by :meth:`ModelBundle.joint_net` and for stage 1 audio training
    (:func:`jam_flow.lightning.adapters.joint_interface`)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def __call__(
        self,
        audio_x,
        audio_cond,
        text,
        time,
        audio_mask=None,
        drop_audio_cond=False,
        drop_text=False,
        **_: Any,
    ) -> tuple[Tensor, None]:
        v = self.net(
            audio_x,
            audio_cond,
            text,
            time,
            mask=audio_mask,
            drop_audio_cond=drop_audio_cond,
            drop_text=drop_text,
        )
        return v, None


@dataclass
class ModelBundle:
    """An inference-ready model. ``model`` is in eval mode on ``device``."""

    model: nn.Module
    mel: MelSettings
    motion: MotionSettings
    stats: dict | None
    vocab: Vocab
    normalize_mel: bool
    source: Path
    config: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def has_motion(self) -> bool:
        """False for a stage-1 audio checkpoint (``AudioDiT``): only ``tts`` can run on it."""
        from jam_flow.models import AudioDiT

        return not isinstance(self.model, AudioDiT)

    def joint_net(self, task: str) -> Callable[..., tuple[Tensor, Tensor | None]]:
        """The network behind the ``JointDiT.forward`` interface the sampler calls; an ``AudioDiT`` is adapted
        (audio only). ``task`` names what needs it, for the error when a motion task meets an audio checkpoint."""
        if self.has_motion:
            return self.model
        net = AudioOnly(self.model)

        def audio_only(audio_x, audio_cond, text, time, motion_x=None, **kw: Any) -> tuple[Tensor, None]:
            if motion_x is not None:
                raise InputError(
                    f"--task {task}: {self.source} is an audio-only (stage-1) model; use --task tts"
                )
            return net(audio_x, audio_cond, text, time, **kw)

        return audio_only

    # motion ------------------------------------------------------------------------------------------------------
    def _exp_stats(self) -> tuple[Tensor, Tensor]:
        k = self.motion.num_kp
        if self.stats is None or "motion" not in self.stats:
            return torch.zeros(k, 3), torch.ones(k, 3)
        mean = torch.as_tensor(self.stats["motion"]["exp_mean"], dtype=torch.float32).reshape(k, 3)
        std = torch.as_tensor(self.stats["motion"]["exp_std"], dtype=torch.float32).reshape(k, 3)
        return mean, std.clamp_min(STD_FLOOR)

    def neutral_exp(self) -> np.ndarray:
        """The neutral expression ``[k, 3]``: the training-set mean (zeros without stats)."""
        return self._exp_stats()[0].numpy().copy()

    def normalise_motion(self, exp: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """``exp [..., m, k, 3]`` (raw LivePortrait) -> ``(mouth [..., m, dm], rest [..., m, dr])`` in model space."""
        exp = torch.as_tensor(
            np.asarray(exp, dtype=np.float32) if isinstance(exp, np.ndarray) else exp
        ).float()
        mean, std = self._exp_stats()
        z = (exp - mean.to(exp.device)) / std.to(exp.device)
        mouth = z[..., list(self.motion.mouth_indices), :].flatten(-2)
        rest = z[..., list(self.motion.rest_indices), :].flatten(-2)
        return mouth, rest

    def denormalise_motion(self, mouth: Tensor, rest: Tensor | None = None) -> Tensor:
        """``(mouth [..., m, dm], rest [..., m, dr] or None)`` in model space -> raw ``exp [..., m, k, 3]``.

        Without ``rest`` the non-mouth keypoints are the neutral expression (dataset mean)."""
        mean, std = self._exp_stats()
        mean, std = mean.to(mouth.device), std.to(mouth.device)
        lead = mouth.shape[:-1]
        z = torch.zeros(*lead, self.motion.num_kp, 3, device=mouth.device, dtype=torch.float32)
        z[..., list(self.motion.mouth_indices), :] = mouth.float().reshape(*lead, -1, 3)
        if rest is not None:
            z[..., list(self.motion.rest_indices), :] = rest.float().reshape(*lead, -1, 3)
        return z * std + mean

    # mel ---------------------------------------------------------------------------------------------------------
    def _mel_stats(self) -> tuple[Tensor, Tensor] | None:
        if not self.normalize_mel:
            return None
        if self.stats is None or "mel" not in self.stats:
            raise InputError(f"{self.source}: normalize_mel is true but the model has no mel stats")
        mean = torch.as_tensor(self.stats["mel"]["mean"], dtype=torch.float32)
        std = torch.as_tensor(self.stats["mel"]["std"], dtype=torch.float32).clamp_min(STD_FLOOR)
        return mean, std

    def mel_to_model(self, mel: Tensor) -> Tensor:
        """Natural-log mel ``[..., n, c]`` -> the network's mel space (standardised when ``normalize_mel``)."""
        st = self._mel_stats()
        return mel if st is None else (mel - st[0].to(mel.device)) / st[1].to(mel.device)

    def mel_from_model(self, x: Tensor) -> Tensor:
        """Inverse of :meth:`mel_to_model`."""
        st = self._mel_stats()
        return x if st is None else x * st[1].to(x.device) + st[0].to(x.device)


# ------------------------------------------------------------------------------------------------------------------
def check_state_dict(model: nn.Module, state: dict[str, Tensor], where: str) -> None:
    """Raise ``InputError`` (naming ``where``) unless ``state`` matches ``model.state_dict()`` key for key and shape
    for shape."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
        if items:
            shown = ", ".join(items[:5]) + (f", ... ({len(items)} in all)" if len(items) > 5 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise InputError(f"{where}: weights do not match the model config ({'; '.join(problems)})")


def _build_model(spec: Any, where: str) -> nn.Module:
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise InputError(f"{where}: field 'model' must hold 'class_path' and 'init_args'")
    class_path = str(spec["class_path"])
    init_args = spec.get("init_args") or {}
    if not class_path.startswith("jam_flow.models") or "." not in class_path:
        raise InputError(
            f"{where}: model.class_path must name a class in jam_flow.models, got {class_path!r}"
        )
    module_name, cls_name = class_path.rsplit(".", 1)
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as err:
        raise InputError(f"{where}: cannot import model.class_path {class_path!r} ({err})") from err
    from jam_flow.models import AudioDiT, JointDiT

    if not (isinstance(cls, type) and issubclass(cls, (JointDiT, AudioDiT))):
        raise InputError(
            f"{where}: model.class_path is {class_path}; generation needs a JointDiT (stage 2), or an "
            f"AudioDiT for --task tts (a stage-1 Motion-DiT needs audio features it cannot get here)"
        )
    try:
        return cls(**init_args)
    except TypeError as err:
        raise InputError(f"{where}: model.init_args do not fit {cls_name} ({err})") from err


def _text_num_embeds(spec: Any) -> int | None:
    """``model.init_args.audio.text_num_embeds`` when the config states it."""
    try:
        return int(spec["init_args"]["audio"]["text_num_embeds"])
    except (KeyError, TypeError, ValueError):
        return None


def _bundle_from_meta(meta: dict, state: dict[str, Tensor], where: str, source: Path, device) -> ModelBundle:
    if not isinstance(meta, dict):
        raise InputError(f"{where}: expected a mapping of jam-flow metadata, got {type(meta).__name__}")
    missing = [f for f in _META_FIELDS if f not in meta]
    if missing:
        raise InputError(f"{where}: missing fields {missing} (expected {list(_META_FIELDS)})")
    if meta["format_version"] != FORMAT_VERSION:
        raise InputError(
            f"{where}: unknown format_version {meta['format_version']!r} (this jam-flow reads {FORMAT_VERSION})"
        )
    try:
        mel = MelSettings(**meta["mel"])
        motion = MotionSettings(**meta["motion"])
    except (TypeError, ValueError) as err:
        raise InputError(f"{where}: bad 'mel' / 'motion' settings ({err})") from err
    vocab = Vocab.from_list(meta["vocab"])
    embeds = _text_num_embeds(meta["model"])
    if embeds is not None and len(vocab) > embeds:
        raise InputError(
            f"{where}: the vocabulary has {len(vocab)} tokens but the model embeds only {embeds} "
            f"(model.init_args.audio.text_num_embeds)"
        )
    # keys the checkpoint predates take their old behaviour, and the config (what an export writes) records them
    spec = with_legacy_defaults(meta["model"]) if isinstance(meta["model"], dict) else meta["model"]
    model = _build_model(spec, where)
    check_state_dict(model, state, where)
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    config = {k: meta[k] for k in _META_FIELDS}
    config["model"] = spec
    return ModelBundle(
        model=model,
        mel=mel,
        motion=motion,
        stats=meta["stats"],
        vocab=vocab,
        normalize_mel=bool(meta["normalize_mel"]),
        source=source,
        config=config,
    )


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> ModelBundle:
    """Read a Lightning ``.ckpt`` (its ``ckpt["jam_flow"]`` block, EMA weights) or an export directory."""
    path = Path(path)
    if path.is_dir():
        cfg_path, weights_path = path / "config.yaml", path / "model.safetensors"
        for p in (cfg_path, weights_path):
            if not p.is_file():
                raise InputError(f"--ckpt: export directory {path} has no {p.name}")
        try:
            meta = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(f"{cfg_path}: not valid YAML text ({first})") from err
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(weights_path))
        except (SafetensorError, OSError) as err:
            raise InputError(f"{weights_path}: cannot read safetensors ({err})") from err
        return _bundle_from_meta(meta, state, str(cfg_path), path, device)
    if not path.is_file():
        raise InputError(f"--ckpt: {path} does not exist (expected a .ckpt file or an export directory)")
    from jam_flow.models.format import read_torch_file

    ckpt = read_torch_file(path, "--ckpt")
    if not isinstance(ckpt, dict) or "jam_flow" not in ckpt:
        raise InputError(
            f"{path}: not a jam-flow checkpoint (no 'jam_flow' entry; was it written by `jam-flow fit`?)"
        )
    meta = ckpt["jam_flow"]
    if not isinstance(meta, dict) or "ema_state_dict" not in meta:
        raise InputError(f"{path}: ckpt['jam_flow'] has no 'ema_state_dict'")
    return _bundle_from_meta(meta, meta["ema_state_dict"], f"{path} [jam_flow]", path, device)


def save_export(out_dir: str | Path, model: nn.Module, meta: dict) -> Path:
    """Write ``out_dir/model.safetensors`` (``model``'s state dict, meant to be the EMA weights) and
    ``out_dir/config.yaml`` (the ``ckpt["jam_flow"]`` fields except ``ema_state_dict``). Returns ``out_dir``."""
    from safetensors.torch import save_file

    missing = [f for f in _META_FIELDS if f not in meta]
    if missing:
        raise InputError(f"save_export: meta is missing fields {missing} (expected {list(_META_FIELDS)})")
    if meta["format_version"] != FORMAT_VERSION:
        raise InputError(
            f"save_export: meta format_version must be {FORMAT_VERSION}, got {meta['format_version']!r}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # clone: safetensors refuses tensors that share storage (tied weights)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_file(
        state, str(out_dir / "model.safetensors"), metadata={"format": "jam-flow", "format_version": "1"}
    )
    config = {k: plain(meta[k]) for k in _META_FIELDS}
    (out_dir / "config.yaml").write_text(
        yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    return out_dir
