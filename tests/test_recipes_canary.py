"""The learnability canary: its toy corpus (default suite) and the whole run through ``fit`` (slow: ``make canary``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jam_flow.data.format import load_clip, read_manifest, validate_dataset
from jam_flow.data.synth.canary import TOKENS, build_canary_corpus, token_table
from jam_flow.data.text import Vocab
from jam_flow.errors import InputError


def test_canary_corpus_is_valid_and_its_text_determines_the_mel(tmp_path):
    records = build_canary_corpus(tmp_path / "a", n_train=12, n_val=4, seed=3, noise=0.0)
    assert validate_dataset(tmp_path / "a", check_audio=False) == []
    assert len(read_manifest(tmp_path / "a", split="val")) == 4
    templates, durations = token_table()
    assert len(TOKENS) == 24 and len(set(durations.tolist())) > 4
    vocab = Vocab.default()
    for rec in records:
        vocab.encode(rec.text)  # every token is in the bundled character vocabulary
        mel = load_clip(tmp_path / "a", rec)["mel"]
        want = np.concatenate(
            [np.repeat(templates[TOKENS.index(c)][None], durations[TOKENS.index(c)], 0) for c in rec.text]
        )
        np.testing.assert_allclose(mel, want, atol=1e-6)
    # the same seed writes the same corpus; another seed other texts
    again = build_canary_corpus(tmp_path / "b", n_train=12, n_val=4, seed=3, noise=0.0)
    assert [r.text for r in again] == [r.text for r in records]
    other = build_canary_corpus(tmp_path / "c", n_train=12, n_val=4, seed=4, noise=0.0)
    assert [r.text for r in other] != [r.text for r in records]


def test_canary_refuses_bad_arguments(tmp_path):
    from jam_flow.recipes.canary import main

    with pytest.raises(InputError, match="--steps"):
        main(["--out", str(tmp_path), "--steps", "0"])
    with pytest.raises(InputError, match="--config"):
        main(["--out", str(tmp_path), "--config", str(tmp_path / "missing.yaml")])


@pytest.mark.slow
def test_canary_text_use_reaches_the_threshold(tmp_path):
    """``make canary``: a few minutes on 2 cores (docs/training.md "The learnability canary")."""
    from jam_flow.recipes.canary import THRESHOLD, main

    assert main(["--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "canary.json").read_text())
    assert res["passed"] and res["text_gain"] >= THRESHOLD and res["steps"] == 300
    assert res["text_gain_bins"]["t0.0-0.3"] > 0
