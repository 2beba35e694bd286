"""JAM-Flow networks (plain ``nn.Module``s; no Lightning): the F5-TTS-compatible Audio-DiT, the Motion-DiT, the
joint model and the F5-TTS checkpoint loader.

Dimension legend: b batch, n mel frames, m motion frames, c width. Masks mean True = valid.
"""

from jam_flow.models.audio_dit import AudioDiT
from jam_flow.models.checkpoint import load_f5tts_checkpoint
from jam_flow.models.configs import AudioDiTConfig, MotionDiTConfig, paper_joint_config, tiny_joint_config
from jam_flow.models.joint_dit import JointDiT
from jam_flow.models.motion_dit import MotionDiT

__all__ = [
    "AudioDiT",
    "MotionDiT",
    "JointDiT",
    "AudioDiTConfig",
    "MotionDiTConfig",
    "load_f5tts_checkpoint",
    "tiny_joint_config",
    "paper_joint_config",
]
