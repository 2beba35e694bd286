"""The shared DiT branch base (AudioDiT / MotionDiT), the Stage enum and the joint interface chosen by type."""

from __future__ import annotations

import pytest
import torch

from jam_flow.errors import InputError
from jam_flow.models import AudioDiT, JointDiT, MotionDiT, tiny_joint_config
from jam_flow.models.branch import DiTBranch
from jam_flow.models.stages import AudioOnly, MotionOnly, Stage, joint_interface


def test_branches_share_one_block_loop():
    for cls in (AudioDiT, MotionDiT):
        assert issubclass(cls, DiTBranch)
        for name in ("rope", "run_block", "run_blocks", "initialize_weights"):
            assert name not in vars(cls), f"{cls.__name__} redefines {name}"
    net = MotionDiT(dim=32, depth=2, heads=2, dim_head=16, ff_mult=2, window=1, motion_window_layers="all")
    x = torch.randn(2, 9, net.motion_dim)
    mask = torch.arange(9)[None] < torch.tensor([[9], [6]])
    s = net.embed(x, None, None, torch.tensor([0.3, 0.7]), mask)
    rope = net.rope(torch.arange(9))
    h = s.h
    for i in range(net.depth):  # the loop written out, with the window of motion_window_layers "all"
        block = net.transformer_blocks[i]
        h = block(h, s.t, s.lens, s.mask, rope, 1, net.attention_backend)
    out = net(x, None, None, torch.tensor([0.3, 0.7]), mask)
    assert torch.equal(out, net.head(type(s)(h, s.t, s.mask, s.lens)))


def test_stage_enum_and_joint_interface_by_type():
    assert Stage("stage2") is Stage.stage2 and Stage.stage1_audio == "stage1_audio"
    assert not Stage.stage1_audio.has_motion and Stage.stage1_motion.has_motion
    joint = JointDiT(**tiny_joint_config())
    audio = AudioDiT(**tiny_joint_config()["audio"])
    motion = MotionDiT(dim=32, depth=1, heads=2, dim_head=16, ff_mult=2, audio_feat_dim=100)
    assert joint_interface(joint, Stage.stage2) == joint.__call__
    assert isinstance(joint_interface(audio, "stage1_audio"), AudioOnly)
    assert isinstance(joint_interface(motion, Stage.stage1_motion), MotionOnly)
    with pytest.raises(InputError, match="stage2 needs a JointDiT"):
        joint_interface(audio, Stage.stage2)
    with pytest.raises(InputError, match="stage1_motion needs a MotionDiT"):
        joint_interface(audio, Stage.stage1_motion)
    with pytest.raises(ValueError):
        Stage("stage3")
