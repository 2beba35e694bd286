"""Test helpers: random judge weights written in the published formats (no download anywhere).

Dimension legend: b clips, t frames, h, w frame size, f features. Used by the evaluation tests and available to
other areas' tests.

* ``write_random_inception(path)``: a random torch-fidelity ``FeatureExtractorInceptionV3`` state dict saved with
  ``torch.save`` exactly like ``weights-inception-2015-12-05-6726825d.pth``.
* ``write_random_i3d(path)``: a small scripted module with the call signature of StyleGAN-V's
  ``i3d_torchscript.pt`` (``forward(x, rescale, resize, return_features)`` on uint8 ``[b, 3, t, h, w]``), saved with
  ``torch.jit.save``; it is not the I3D architecture (that would cost seconds per clip on a CPU), only its format.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jam_flow.liveportrait.testing import randomize_norm_stats

__all__ = [
    "write_random_inception",
    "write_random_i3d",
    "RandomI3D",
    "write_random_syncnet",
    "write_random_speaker",
    "write_random_ctc_asr",
]


def write_random_inception(path: str | Path, seed: int = 0) -> Path:
    """Random InceptionV3 weights in torch-fidelity's layout (BatchNorm statistics randomised too)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    torch.manual_seed(seed)
    # build the network without its weight loading (which would download): the loader is a no-op here
    with (
        mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}),
        mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None),
    ):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    randomize_norm_stats(net, torch.Generator().manual_seed(seed))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


class RandomI3D(nn.Module):
    """``forward(x uint8 [b, 3, t, h, w], rescale, resize, return_features) -> [b, features]``."""

    def __init__(self, features: int = 400, size: int = 224) -> None:
        super().__init__()
        self.size = size
        self.conv = nn.Conv3d(3, 16, kernel_size=(3, 7, 7), stride=(1, 4, 4), padding=(1, 3, 3))
        self.head = nn.Linear(32, features)

    def forward(self, x: Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False):
        y = x.float()
        if rescale:
            y = y / 127.5 - 1.0
        if resize:
            b, c, t, h, w = y.shape
            y = F.interpolate(
                y.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w),
                size=(self.size, self.size),
                mode="bilinear",
                align_corners=False,
            )
            y = y.reshape(b, t, c, self.size, self.size).permute(0, 2, 1, 3, 4)
        h = torch.relu(self.conv(y))
        pooled = torch.cat([h.mean(dim=(2, 3, 4)), h.amax(dim=(2, 3, 4))], dim=1)  # [b, 32]
        logits = self.head(pooled)
        return logits if return_features else torch.softmax(logits, dim=1)


def write_random_i3d(path: str | Path, seed: int = 0, features: int = 400, size: int = 224) -> Path:
    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(RandomI3D(features, size).eval()), str(path))
    return path


def write_random_syncnet(path: str | Path, seed: int = 0, embed: int = 64) -> Path:
    """Random SyncNet weights (``embed``-d heads; the public model has 1024) with randomised BatchNorm stats."""
    from jam_flow.eval.syncnet import SyncNet

    torch.manual_seed(seed)
    net = randomize_norm_stats(SyncNet(embed_dim=embed), torch.Generator().manual_seed(seed))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


class _RandomSpeaker(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, dim, kernel_size=400, stride=160)

    def forward(self, wave: Tensor) -> Tensor:
        return torch.tanh(self.conv(wave[:, None])).mean(-1)


def write_random_speaker(path: str | Path, seed: int = 0, dim: int = 16) -> Path:
    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(_RandomSpeaker(dim).eval()), str(path))
    return path


def write_random_ctc_asr(path: str | Path, seed: int = 0) -> Path:
    """A tiny random wav2vec2 CTC model + processor (16 kHz, letters, ``|`` = word boundary)."""
    import json

    import transformers as tf

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    letters = list("abcdefghijklmnopqrstuvwxyz'")
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: i + 5 for i, c in enumerate(letters)}}
    (path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = tf.Wav2Vec2CTCTokenizer(str(path / "vocab.json"), word_delimiter_token="|")
    extractor = tf.Wav2Vec2FeatureExtractor(
        sampling_rate=16000, do_normalize=True, return_attention_mask=False
    )
    tf.Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(str(path))
    torch.manual_seed(seed)
    config = tf.Wav2Vec2Config(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        num_feat_extract_layers=2,
        do_stable_layer_norm=False,
        feat_extract_norm="group",
        pad_token_id=0,
    )
    tf.Wav2Vec2ForCTC(config).eval().save_pretrained(str(path))
    return path
