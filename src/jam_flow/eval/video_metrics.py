"""FID and FVD as ``torchmetrics`` classes, from local weights only (paper §5.1, Tables 1 and 4).

Dimension legend: b batch (images or clips), t frames per clip (16), h, w frame size, f feature size (2048 for
Inception pool3, 400 for the I3D logits). Images / frames are uint8 RGB, channels first. Masks: none here.

``FID`` is ``torchmetrics.image.fid.FrechetInceptionDistance`` with torch-fidelity's ``FeatureExtractorInceptionV3``
("inception-v3-compat", the TF-ported Inception of the original FID code) loaded from ``--inception PATH``: the
published ``weights-inception-2015-12-05-6726825d.pth`` (a ``torch.save``d state dict). Preprocessing is
torch-fidelity's: uint8 ``[b, 3, h, w]`` resized to 299 x 299 with the TF1-compatible bilinear interpolation
(``antialias=False``; torchmetrics' default ``True`` would differ from the published FIDs), then ``(x - 128) / 128``.

``FVD`` uses the TorchScript I3D of StyleGAN-V (``src/metrics/frechet_video_distance.py``, the Kinetics-400 I3D
``i3d_torchscript.pt``; the content-debiased-FVD repository ships the same file): it is called as
``detector(videos, rescale=True, resize=True, return_features=True)`` on uint8 ``[b, 3, t, h, w]`` clips of
``t = 16`` consecutive frames, and returns the 400 logits before the softmax. The scripted module rescales
[0, 255] to [-1, 1] and resizes to 224 x 224 itself. Where we differ from StyleGAN-V: it draws one random 16-frame
clip per video, we take every non-overlapping 16-frame window of every clip (``video_windows``), so a run is
deterministic; the Fréchet distance uses torchmetrics' eigenvalue form instead of ``scipy.linalg.sqrtm`` (the
same quantity).

Both metrics keep torchmetrics' sum states (``dist_reduce_fx="sum"``), so DDP / Lightning runs reduce exactly.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance

from jam_flow.errors import InputError

__all__ = ["FID", "FVD", "I3D_FEATURES", "FVD_CLIP_FRAMES", "load_i3d", "video_windows"]

I3D_FEATURES = 400  # Kinetics-400 logits
FVD_CLIP_FRAMES = 16  # StyleGAN-V's FVD_16


def _check_inception_file(path: str | Path, flag: str) -> Path:
    """The weights must be a plain state dict of tensors (read with ``weights_only=True`` before torch-fidelity
    reads the same file; anything else is refused here, naming the flag)."""
    from jam_flow.models.format import read_torch_file

    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"{flag}: {path} does not exist (expected torch-fidelity's "
            f"weights-inception-2015-12-05-6726825d.pth, a torch.save'd state dict)"
        )
    state = read_torch_file(path, flag)
    if not isinstance(state, dict) or "Conv2d_1a_3x3.conv.weight" not in state:
        raise InputError(f"{flag}: {path} is not an InceptionV3 state dict (no 'Conv2d_1a_3x3.conv.weight')")
    return path


class FID(FrechetInceptionDistance):
    """Fréchet Inception Distance (``update(images, real)``, images uint8 ``[b, 3, h, w]`` RGB).

    ``weights``: local InceptionV3 state dict (see the module docstring); ``feature``: 64, 192, 768 or 2048 (the
    standard, pool3). ``compute()`` returns a scalar tensor (needs at least 2 real and 2 generated images).
    """

    higher_is_better = False

    def __init__(self, weights: str | Path, feature: int = 2048, flag: str = "--inception", **kwargs) -> None:
        path = _check_inception_file(weights, flag)
        if feature not in (64, 192, 768, 2048):
            raise InputError(f"--fid-feature: expected 64, 192, 768 or 2048, got {feature}")
        try:
            super().__init__(
                feature=feature, feature_extractor_weights_path=str(path), antialias=False, **kwargs
            )
        except ModuleNotFoundError as err:
            raise InputError(f"{flag}: FID needs the torch-fidelity package ({err})") from err
        except RuntimeError as err:  # load_state_dict: missing / unexpected keys, wrong shapes
            raise InputError(f"{flag}: {path} does not match the InceptionV3 layout: {err}") from err
        self.orig_dtype = torch.float32  # set by update(); a DDP rank with no clips still computes

    def update(self, imgs: Tensor, real: bool) -> None:  # type: ignore[override]
        if imgs.dtype != torch.uint8 or imgs.dim() != 4 or imgs.shape[1] != 3:
            raise InputError(f"FID: expected uint8 images [b, 3, h, w], got {imgs.dtype} {tuple(imgs.shape)}")
        super().update(imgs, real)


class _I3DFeatures(nn.Module):
    """Adapter: uint8 ``[b, 3, t, h, w]`` -> ``[b, 400]`` through the TorchScript I3D (StyleGAN-V's call)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector
        self.num_features = I3D_FEATURES

    def forward(self, videos: Tensor) -> Tensor:
        return self.detector(videos, rescale=True, resize=True, return_features=True)


def load_i3d(path: str | Path, device: str | torch.device = "cpu", flag: str = "--i3d") -> nn.Module:
    """``torch.jit.load`` of ``i3d_torchscript.pt``; a missing or non-TorchScript file is an ``InputError``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{flag}: {path} does not exist (expected StyleGAN-V's i3d_torchscript.pt)")
    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except Exception as err:  # noqa: BLE001 - any load failure means a wrong file
        raise InputError(f"{flag}: {path} is not a TorchScript module ({err})") from err


class FVD(FrechetInceptionDistance):
    """Fréchet Video Distance (``update(videos, real)``, videos uint8 ``[b, t, 3, h, w]`` RGB, ``t`` frames each,
    16 for the standard FVD_16; see ``video_windows``). ``compute()`` needs at least 2 clips on each side."""

    higher_is_better = False

    def __init__(self, i3d: str | Path, flag: str = "--i3d", **kwargs) -> None:
        detector = load_i3d(i3d, flag=flag)
        with torch.no_grad():  # a one-clip probe: the file must have StyleGAN-V's call signature
            try:
                probe = detector(
                    torch.zeros(1, 3, FVD_CLIP_FRAMES, 32, 32, dtype=torch.uint8),
                    rescale=True,
                    resize=True,
                    return_features=True,
                )
            except Exception as err:  # noqa: BLE001
                raise InputError(
                    f"{flag}: {i3d} does not take (videos, rescale=, resize=, return_features=) like "
                    f"StyleGAN-V's i3d_torchscript.pt ({err})"
                ) from err
        if not isinstance(probe, Tensor) or probe.dim() != 2:
            raise InputError(f"{flag}: {i3d} returned {type(probe).__name__}, expected features [b, f]")
        wrapper = _I3DFeatures(detector)
        wrapper.num_features = int(probe.shape[1])
        super().__init__(feature=wrapper, **kwargs)
        self.orig_dtype = torch.float32  # set by update(); a DDP rank with no clips still computes

    def update(self, imgs: Tensor, real: bool) -> None:  # type: ignore[override]
        if imgs.dtype != torch.uint8 or imgs.dim() != 5 or imgs.shape[2] != 3:
            raise InputError(
                f"FVD: expected uint8 videos [b, t, 3, h, w], got {imgs.dtype} {tuple(imgs.shape)}"
            )
        super().update(imgs.permute(0, 2, 1, 3, 4).contiguous(), real)  # -> [b, 3, t, h, w] (StyleGAN-V)


def video_windows(frames: Tensor, length: int = FVD_CLIP_FRAMES) -> Tensor:
    """Every non-overlapping window of ``length`` consecutive frames: ``[t, 3, h, w] -> [t // length, length, 3,
    h, w]`` (a trailing remainder is dropped; fewer than ``length`` frames give no window)."""
    count = frames.shape[0] // length
    return frames[: count * length].reshape(count, length, *frames.shape[1:])
