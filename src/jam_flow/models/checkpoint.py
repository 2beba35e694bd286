"""Strict loading of F5-TTS checkpoints into :class:`~jam_flow.models.AudioDiT` (or a JointDiT's audio branch).

State dicts only. Accepted files (F5-TTS ``model/trainer.py``, ``infer/utils_infer.py``):

- trainer ``.pt``: ``{"model_state_dict": {"transformer.<key>": ...}, "ema_model_state_dict": {"initted",
  "step", "ema_model.transformer.<key>": ...}, "optimizer_state_dict", "scheduler_state_dict", "update"}``;
- pruned ``.pt``: ``{"ema_model_state_dict": {...}}``;
- released ``.safetensors``: the bare EMA state dict (``initted``, ``step``, ``ema_model.transformer.<key>``).

The one key map: strip ``ema_model.transformer.`` (EMA weights) or ``transformer.`` (online weights); the rest is
the :class:`AudioDiT` key, which equals F5-TTS's DiT key. Only the documented non-parameter keys are ignored:
the EMA counters ``initted`` / ``step`` and the two legacy mel-spectrogram buffers of old checkpoints. Every other
difference (unexpected key, missing key, shape mismatch) fails with an :class:`~jam_flow.errors.InputError`
listing all of them. Nothing is downloaded: ``path`` is a local file.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from torch import Tensor, nn

from jam_flow.errors import InputError
from jam_flow.models.audio_dit import AudioDiT
from jam_flow.models.format import read_torch_file, state_dict_problems
from jam_flow.models.joint_dit import JointDiT

__all__ = ["load_f5tts_checkpoint", "F5CheckpointInfo", "map_f5tts_state_dict", "IGNORED_KEYS", "PREFIXES"]

PREFIXES = {"ema": "ema_model.transformer.", "online": "transformer."}
_LEGACY_MEL = ("mel_spec.mel_stft.mel_scale.fb", "mel_spec.mel_stft.spectrogram.window")
IGNORED_KEYS = {
    "ema": frozenset({"initted", "step", *(f"ema_model.{k}" for k in _LEGACY_MEL)}),
    "online": frozenset(_LEGACY_MEL),
}


class F5CheckpointInfo(NamedTuple):
    """What was loaded: ``weights`` ("ema" or "online"), the ignored keys, and the EMA ``step`` if present."""

    weights: str
    ignored: tuple[str, ...]
    step: int | None


def _read(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: F5-TTS checkpoint does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # noqa: BLE001 - any parse failure is a bad file
            raise InputError(f"{path}: not a readable safetensors file ({err})") from err
    obj = read_torch_file(path, "F5-TTS checkpoint")
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def _select(path: Path, obj: dict, use_ema: bool) -> tuple[str, dict]:
    """Pick the state dict and its kind from a file's top level."""
    wanted = "ema_model_state_dict" if use_ema else "model_state_dict"
    if "ema_model_state_dict" in obj or "model_state_dict" in obj:
        if wanted not in obj:
            raise InputError(
                f"{path}: no {wanted!r} in the checkpoint (top-level keys: {sorted(obj)}); "
                f"use use_ema={not use_ema}"
            )
        return ("ema" if use_ema else "online"), obj[wanted]
    # a bare state dict (released .safetensors): its prefix says which weights it holds
    if any(isinstance(k, str) and k.startswith("ema_model.") for k in obj):
        kind = "ema"
    elif any(isinstance(k, str) and k.startswith(PREFIXES["online"]) for k in obj):
        kind = "online"
    else:
        shown = sorted(map(str, obj))[:8]
        raise InputError(
            f"{path}: not an F5-TTS checkpoint (no 'ema_model_state_dict' / 'model_state_dict' and no "
            f"'ema_model.' or 'transformer.' keys; first keys: {shown})"
        )
    if kind == "online" and use_ema:
        raise InputError(f"{path}: holds online weights ('transformer.*' keys), not EMA; use use_ema=False")
    if kind == "ema" and not use_ema:
        raise InputError(f"{path}: holds only EMA weights ('ema_model.*' keys); use use_ema=True")
    return kind, obj


def map_f5tts_state_dict(
    state: dict[str, Tensor], kind: str
) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """Apply the key map: returns ``(mapped, ignored_keys, unmapped_keys)``."""
    prefix, ignored_set = PREFIXES[kind], IGNORED_KEYS[kind]
    mapped: dict[str, Tensor] = {}
    ignored, unmapped = [], []
    for key, value in state.items():
        if key in ignored_set:
            ignored.append(key)
        elif isinstance(key, str) and key.startswith(prefix):
            mapped[key[len(prefix) :]] = value
        else:
            unmapped.append(str(key))
    return mapped, ignored, unmapped


def load_f5tts_checkpoint(model: nn.Module, path: str | Path, use_ema: bool = True) -> F5CheckpointInfo:
    """Load an F5-TTS checkpoint strictly into ``model`` (an ``AudioDiT``, or a ``JointDiT``: its audio branch).

    ``use_ema`` picks the EMA weights (F5-TTS inference default) or the online ``model_state_dict``.
    """
    path = Path(path)
    target = model.audio if isinstance(model, JointDiT) else model
    if not isinstance(target, AudioDiT):
        raise InputError(
            f"load_f5tts_checkpoint: expected an AudioDiT or a JointDiT, got {type(model).__name__}"
        )
    kind, state = _select(path, _read(path), use_ema)
    mapped, ignored, unmapped = map_f5tts_state_dict(state, kind)
    problems = [
        f"unexpected key {k!r} (not under {PREFIXES[kind]!r} and not a known non-parameter key)"
        for k in unmapped
    ]
    problems += state_dict_problems(target.state_dict(), mapped, lambda k: PREFIXES[kind] + k)
    if problems:
        listing = "\n  ".join(problems)
        raise InputError(f"{path}: does not match the model ({len(problems)} problem(s)):\n  {listing}")
    target.load_state_dict(mapped, strict=True)
    step = state.get("step")
    return F5CheckpointInfo(kind, tuple(sorted(ignored)), int(step) if isinstance(step, Tensor) else None)
