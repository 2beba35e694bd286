"""Optional evaluation models, loaded from local paths only (nothing is ever downloaded): an ASR model for WER and a
speaker-embedding model for speaker similarity.

Dimension legend: b batch, s samples, d embedding size.

ASR (``--asr DIR``): a Hugging Face ``transformers`` model directory saved with ``save_pretrained`` (``config.json``,
weights, and the processor / tokenizer files). ``model_type == "whisper"`` runs Whisper generation (English,
transcribe); any other model type is loaded with ``AutoModelForCTC`` (wav2vec2 / HuBERT CTC) and greedy-decoded.
Needs the ``transformers`` package; without it, or without the directory, an ``InputError`` says so.

Speaker embeddings (``--speaker-model PATH``):

* a ``torch.export.save`` program (``.pt2``, export with a dynamic sample dimension) or a TorchScript file
  (``torch.jit.save``, any other suffix) whose ``forward(wave)`` maps a float waveform ``[b, s]`` in [-1, 1] at
  ``--speaker-sr`` Hz (default 16000) to embeddings ``[b, d]`` (e.g. an exported ECAPA-TDNN / WavLM-SV), or
* a ``transformers`` audio x-vector directory (``AutoModelForAudioXVector``, e.g. WavLM-base-plus-sv), whose
  feature extractor fixes the sample rate.

WER text normalisation (both sides): lower case, every character that is not a letter, digit, apostrophe or space
removed, whitespace collapsed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from jam_flow.errors import InputError

__all__ = ["normalise_text", "AsrModel", "SpeakerEmbedder", "load_asr", "load_speaker_model"]

_NON_WORD = re.compile(r"[^\w' ]+", flags=re.UNICODE)


def normalise_text(text: str) -> str:
    text = _NON_WORD.sub(" ", text.lower().replace("_", " "))
    return " ".join(text.split())


def _resample(wave: np.ndarray, rate: int, target: int) -> Tensor:
    import torchaudio.functional as AF

    x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    return AF.resample(x, rate, target) if rate != target else x


def _transformers(flag: str):
    try:
        import transformers
    except ImportError as err:
        raise InputError(
            f"{flag}: needs the `transformers` package (pip install transformers), which is not installed"
        ) from err
    return transformers


def _model_dir(path: str | Path, flag: str) -> Path:
    path = Path(path)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise InputError(
            f"{flag}: {path} is not a local transformers model directory (expected config.json, weights "
            f"and processor files written by save_pretrained)"
        )
    return path


class AsrModel:
    """Transcribe waveforms with a local Whisper or CTC model."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        tf = _transformers("--asr")
        path = _model_dir(path, "--asr")
        model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type", "")
        self.whisper = model_type == "whisper"
        self.processor = tf.AutoProcessor.from_pretrained(str(path), local_files_only=True)
        cls = tf.WhisperForConditionalGeneration if self.whisper else tf.AutoModelForCTC
        self.model = cls.from_pretrained(str(path), local_files_only=True).to(device).eval()
        self.device = device
        self.sample_rate = int(self.processor.feature_extractor.sampling_rate)

    @torch.no_grad()
    def transcribe(self, wave: np.ndarray, sample_rate: int) -> str:
        x = _resample(wave, sample_rate, self.sample_rate).numpy()
        inputs = self.processor(x, sampling_rate=self.sample_rate, return_tensors="pt").to(self.device)
        if self.whisper:
            ids = self.model.generate(inputs.input_features, language="en", task="transcribe")
            return self.processor.batch_decode(ids, skip_special_tokens=True)[0]
        logits = self.model(inputs.input_values).logits
        return self.processor.batch_decode(logits.argmax(-1))[0]


def load_asr(path: str | Path | None, device: str = "cpu") -> AsrModel | None:
    return None if path is None else AsrModel(path, device)


class SpeakerEmbedder:
    """Speaker embeddings ``[d]`` of one waveform, from a TorchScript file or a transformers x-vector directory."""

    def __init__(self, path: str | Path, sample_rate: int = 16000, device: str = "cpu") -> None:
        path = Path(path)
        self.device = device
        self.hf = path.is_dir()
        if self.hf:
            tf = _transformers("--speaker-model")
            path = _model_dir(path, "--speaker-model")
            self.extractor = tf.AutoFeatureExtractor.from_pretrained(str(path), local_files_only=True)
            self.model = (
                tf.AutoModelForAudioXVector.from_pretrained(str(path), local_files_only=True)
                .to(device)
                .eval()
            )
            self.sample_rate = int(self.extractor.sampling_rate)
        elif path.is_file():
            try:
                if path.suffix == ".pt2":  # torch.export.save
                    self.model = torch.export.load(str(path)).module().to(device)
                else:  # TorchScript (torch.jit.save)
                    self.model = torch.jit.load(str(path), map_location=device).eval()
            except Exception as err:  # noqa: BLE001 - any load failure means a wrong file
                raise InputError(
                    f"--speaker-model: {path} is neither a torch.export (.pt2) program nor a TorchScript "
                    f"module ({err})"
                ) from err
            self.sample_rate = int(sample_rate)
        else:
            raise InputError(
                f"--speaker-model: {path} does not exist (expected a TorchScript file or a transformers "
                f"x-vector directory)"
            )

    @torch.no_grad()
    def embed(self, wave: np.ndarray, sample_rate: int) -> Tensor:
        x = _resample(wave, sample_rate, self.sample_rate)
        if self.hf:
            inputs = self.extractor(x.numpy(), sampling_rate=self.sample_rate, return_tensors="pt").to(
                self.device
            )
            emb = self.model(**inputs).embeddings
        else:
            emb = self.model(x[None].to(self.device))
        if not isinstance(emb, Tensor) or emb.dim() != 2 or emb.shape[0] != 1:
            raise InputError(
                f"--speaker-model: expected embeddings [1, d] for one waveform, got "
                f"{getattr(emb, 'shape', type(emb).__name__)}"
            )
        return emb[0].float().cpu()


def load_speaker_model(
    path: str | Path | None, sample_rate: int = 16000, device: str = "cpu"
) -> SpeakerEmbedder | None:
    return None if path is None else SpeakerEmbedder(path, sample_rate, device)
