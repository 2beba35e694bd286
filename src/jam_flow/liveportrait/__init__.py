"""LivePortrait networks, keypoint math and strict local loading (plain torch; layer 2).

Dimension legend: b batch, k keypoints (21). See docs/liveportrait.md for the full API.

- networks: ``AppearanceFeatureExtractor`` (F), ``MotionExtractor`` (M), ``WarpingNetwork`` (W),
  ``SPADEDecoder`` (G), ``StitchingRetargetingNetwork`` (one stitching / retargeting MLP);
- loading: ``load_motion_extractor(path)``, ``load_liveportrait(weights_dir) -> LivePortraitModels``;
- keypoint formulas: ``jam_flow.liveportrait.keypoints``; rendering core: ``jam_flow.liveportrait.pipeline``.
"""

from jam_flow.liveportrait.appearance import AppearanceFeatureExtractor
from jam_flow.liveportrait.loading import load_liveportrait, load_motion_extractor
from jam_flow.liveportrait.motion_extractor import MotionExtractor
from jam_flow.liveportrait.spade import SPADEDecoder
from jam_flow.liveportrait.stitching import StitchingRetargetingNetwork
from jam_flow.liveportrait.warping import WarpingNetwork

__all__ = [
    "AppearanceFeatureExtractor",
    "MotionExtractor",
    "SPADEDecoder",
    "StitchingRetargetingNetwork",
    "WarpingNetwork",
    "load_liveportrait",
    "load_motion_extractor",
]
