"""Joint attention masks (paper §4.4, docs/CONVENTIONS.md) against matrices written out by hand.

La = 15 audio frames, Lm = 4 motion frames. Audio frame i belongs to motion frame (4 i) // 15:
i = 0..3 -> 0, 4..7 -> 1, 8..11 -> 2, 12..14 -> 3.
"""

from __future__ import annotations

import torch

from jam_flow.nn.masks import joint_attention_masks


def _rows(text: str) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in line.split()[0]] for line in text.strip().splitlines()])


# audio query i -> motion key j: only the motion frame at the same instant
A2M = _rows("""
1000
1000
1000
1000
0100
0100
0100
0100
0010
0010
0010
0010
0001
0001
0001
""")

# motion query j -> motion key j', window 1: |j - j'| <= 1
M2M_W1 = _rows("""
1100
1110
0111
0011
""")

# motion query j -> audio key i, window 1: |frame(i) - j| <= 1
M2A_W1 = _rows("""
111111110000000
111111111111000
000011111111111
000000001111111
""")

# window 0: motion sees only itself and the audio frames of its own instant
M2A_W0 = _rows("""
111100000000000
000011110000000
000000001111000
000000000000111
""")


def test_full_lengths_window_1():
    mask_a, mask_m = joint_attention_masks(torch.tensor([15]), torch.tensor([4]), 15, 4, window=1)
    assert mask_a.shape == (1, 15, 19) and mask_m.shape == (1, 4, 19)
    assert mask_a[0, :, :15].all()  # audio -> audio: global
    assert torch.equal(mask_a[0, :, 15:], A2M)
    assert torch.equal(mask_m[0, :, :4], M2M_W1)
    assert torch.equal(mask_m[0, :, 4:], M2A_W1)


def test_window_0_and_window_none():
    _, mask_m = joint_attention_masks(torch.tensor([15]), torch.tensor([4]), 15, 4, window=0)
    assert torch.equal(mask_m[0, :, :4], torch.eye(4, dtype=torch.bool))
    assert torch.equal(mask_m[0, :, 4:], M2A_W0)
    mask_a, mask_m = joint_attention_masks(torch.tensor([15]), torch.tensor([4]), 15, 4, window=None)
    assert mask_a.all() and mask_m.all()  # "No Masking": every valid key


def test_padding_and_switches():
    # sample 1 has 10 valid audio frames and 3 valid motion frames; its switches are off
    mask_a, mask_m = joint_attention_masks(
        torch.tensor([15, 10]), torch.tensor([4, 3]), 15, 4, window=1,
        audio_sees_motion=torch.tensor([True, False]), motion_sees_audio=torch.tensor([True, False]),
    )  # fmt: skip
    assert torch.equal(mask_a[0, :, 15:], A2M)
    assert torch.equal(mask_m[0, :, 4:], M2A_W1)
    # padded keys get no weight
    assert not mask_a[1, :, 10:15].any() and mask_a[1, :, :10].all()
    assert not mask_m[1, :, 3].any()
    # motion_sees_audio off: no motion window either (Algorithm 2 line 4), every valid motion key
    assert mask_m[1, :3, :3].all()
    # switches off remove exactly the cross-modal blocks
    assert not mask_a[1, :, 15:].any() and not mask_m[1, :, 4:].any()
    # window_with_alpha=False (checkpoints before that rule): the window stays; sample 0 (alpha = 1) unchanged
    old_a, old_m = joint_attention_masks(
        torch.tensor([15, 10]), torch.tensor([4, 3]), 15, 4, window=1,
        audio_sees_motion=torch.tensor([True, False]), motion_sees_audio=torch.tensor([True, False]),
        window_with_alpha=False,
    )  # fmt: skip
    assert torch.equal(old_m[1, :3, :3], M2M_W1[:3, :3])
    assert torch.equal(old_a, mask_a) and torch.equal(old_m[0], mask_m[0])


def test_padded_motion_removes_its_audio_link():
    mask_a, _ = joint_attention_masks(torch.tensor([15]), torch.tensor([3]), 15, 4, window=1)
    want = A2M.clone()
    want[:, 3] = False  # motion frame 3 is padding: audio frames 12..14 see no motion key
    assert torch.equal(mask_a[0, :, 15:], want)
