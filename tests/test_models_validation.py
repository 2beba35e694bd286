"""Network input checks: bad masks are named on the host, and nothing reads accelerator tensors (no device sync).

Tensors on the ``meta`` device have shapes but no values: any check that reads values fails on them, so a check that
passes on ``meta`` inputs cannot synchronise a GPU either.
"""

from __future__ import annotations

import pytest
import torch

from jam_flow.errors import InputError
from jam_flow.models import validation
from jam_flow.models.validation import as_time, check_flag, check_frames, check_mask


def test_checks_read_no_tensor_values_on_a_device(monkeypatch):
    monkeypatch.setattr(validation, "DEBUG_CHECKS", False)
    meta = torch.device("meta")
    mask = torch.ones(2, 7, dtype=torch.bool, device=meta)
    lens = check_mask("mask", mask, 2, 7)
    assert lens.device == meta and tuple(lens.shape) == (2,)
    check_frames("x", torch.zeros(2, 7, 100, device=meta), 2, 7, 100)
    check_flag("drop_text", torch.zeros(2, dtype=torch.bool, device=meta), 2)
    assert as_time("time", torch.zeros(2, device=meta), 2, torch.zeros(1, device=meta)).device == meta
    with pytest.raises(InputError, match=r"mask: expected a bool tensor of shape \(2, 7\)"):
        check_mask("mask", mask[:, :5], 2, 7)  # shapes are host metadata: still checked


def test_prefix_check_on_the_host_and_under_the_debug_flag(monkeypatch):
    bad = torch.tensor([[True, False, True], [True, True, False]])
    with pytest.raises(InputError, match="audio_mask: must be a prefix mask"):
        check_mask("audio_mask", bad, 2, 3)
    assert check_mask("audio_mask", bad.sort(dim=1, descending=True).values, 2, 3).tolist() == [2, 2]
    monkeypatch.setattr(
        validation, "DEBUG_CHECKS", True
    )  # JAM_FLOW_DEBUG_CHECKS=1: values read on any device
    with pytest.raises((NotImplementedError, RuntimeError)):
        check_mask("mask", torch.ones(2, 7, dtype=torch.bool, device="meta"), 2, 7)
