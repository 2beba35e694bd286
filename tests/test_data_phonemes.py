"""Phoneme text units (``data.text_units: phoneme``): the eSpeak NG phonemizer, the bundled phoneme vocabulary, the
units travelling with checkpoints and exports (old ones load as characters), and a tiny fit + generate round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from lightning_support import make_dataset

from jam_flow.cli import main as jam_flow_main
from jam_flow.data.meta import DataMeta
from jam_flow.data.synth.espeak import phonemize
from jam_flow.data.text import TEXT_UNITS, Vocab, default_vocab_path, load_vocab
from jam_flow.errors import InputError
from jam_flow.inference.bundle import load_bundle
from jam_flow.lightning.cli import run_cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tests"


def test_phonemizer_gives_one_symbol_per_phoneme_and_word_breaks():
    got = phonemize("The quick brown fox.")
    assert got == ("ð", "ə", " ", "k", "w", "ˈɪ", "k", " ", "b", "ɹ", "ˈaʊ", "n", " ", "f", "ˈɑː", "k", "s")
    assert phonemize("black, hot!") == phonemize("black hot")  # punctuation is a word break
    assert phonemize("") == () and phonemize(" ,. ") == ()
    # deterministic, whatever was phonemized before (and a fresh call, not the cache)
    phonemize.cache_clear()
    assert phonemize("The quick brown fox.") == got


def test_bundled_phoneme_vocabulary_covers_the_bundled_sentences():
    vocab = Vocab.default("phoneme")
    assert vocab.units == "phoneme" and vocab.tokens[0] == " " and len(vocab) == 118
    assert load_vocab(None, "phoneme") == vocab and load_vocab(None, "char") == Vocab.default()
    assert vocab != Vocab(vocab.tokens, units="char")
    sentences = Path(str(default_vocab_path("char").parent / "sentences.txt")).read_text().splitlines()
    for line in sentences:
        ids = vocab.encode(line)
        assert [vocab.tokens[i] for i in ids] == list(phonemize(line))
    assert vocab.encode("hello") == [vocab.index[p] for p in ("h", "ə", "l", "ˈoʊ")]
    char = Vocab.default()
    assert char.encode("hello") == [char.index[c] for c in "hello"]


def test_unknown_phonemes_and_units_are_refused_with_one_line():
    small = Vocab([" ", "h", "ə", "l"], units="phoneme")
    with pytest.raises(
        InputError, match=r"--text: phonemes not in the vocabulary .*'ˈoʊ' \(U\+02C8 U\+006F U\+028A\)"
    ):
        small.encode("hello", where="--text")
    with pytest.raises(InputError, match="expected one of"):
        load_vocab(None, "syllable")
    assert TEXT_UNITS == ("char", "phoneme")


def test_old_metadata_without_text_units_loads_as_characters():
    meta = {
        "mel": {},
        "motion": {"mouth_indices": [14, 17, 19, 20]},
        "stats": None,
        "vocab": Vocab.default().to_list(),
    }
    data = DataMeta.from_dict(meta, "old")
    assert data.vocab.units == "char" and data.to_dict()["text_units"] == "char"
    new = DataMeta.from_dict(
        {**meta, "vocab": Vocab.default("phoneme").to_list(), "text_units": "phoneme"}, "n"
    )
    assert new.vocab == Vocab.default("phoneme")
    with pytest.raises(InputError, match="text_units"):
        DataMeta.from_dict({**meta, "text_units": "bytes"}, "bad")


def test_phoneme_fit_export_generate_round_trip_and_old_exports(tmp_path):
    data = make_dataset(tmp_path / "ds", n_train=4, n_val=2, min_s=0.5, max_s=0.7)
    cli = run_cli(
        "fit",
        [
            "--config",
            str(CONFIGS / "tiny_stage2.yaml"),
            "--data.data_dir",
            str(data),
            "--data.text_units",
            "phoneme",
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
            "--trainer.max_steps",
            "1",
            "--media.num_clips",
            "0",
        ],
    )
    assert cli.model.net.audio.text_embed.text_embed.num_embeddings == len(Vocab.default("phoneme")) + 1
    ckpt = next((tmp_path / "run").glob("**/checkpoints/last.ckpt"))
    meta = torch.load(ckpt, map_location="cpu", weights_only=True)["jam_flow"]
    assert meta["text_units"] == "phoneme" and meta["vocab"] == Vocab.default("phoneme").to_list()
    bundle = load_bundle(ckpt)
    assert bundle.vocab == Vocab.default("phoneme")
    export = tmp_path / "export"
    assert jam_flow_main(["export", "--ckpt", str(ckpt), "--out", str(export)]) == 0
    config = yaml.safe_load((export / "config.yaml").read_text(encoding="utf-8"))
    assert config["text_units"] == "phoneme"
    assert load_bundle(export).vocab == bundle.vocab
    # generate phonemizes --text (plain text) the same way: a word of the corpus works, an unknown phoneme is named
    out = tmp_path / "gen"
    argv = [
        "generate",
        "--task",
        "text2av",
        "--ckpt",
        str(export),
        "--out",
        str(out),
        "--text",
        "hello there",
    ]
    assert jam_flow_main([*argv, "--nfe", "2", "--seed", "0"]) == 0
    assert any(out.iterdir())
    # batched generation (evaluate) works from the plain transcripts: tts joins reference + own text, text2av
    # estimates its duration from the plain text, as generate does
    from jam_flow.api.batch import _plain_texts, generate_batch
    from jam_flow.data.dataset import ClipDataset, collate_clips
    from jam_flow.data.format import read_manifest
    from jam_flow.flow.sampler import SamplerSettings

    gen_bundle = load_bundle(export)
    records = read_manifest(data, split="train")
    ds = ClipDataset(data, records, gen_bundle.vocab, gen_bundle.mel, gen_bundle.motion)
    own, ref = collate_clips([ds[0], ds[1]]), collate_clips([ds[2], ds[3]])
    assert _plain_texts(gen_bundle, own) == [records[0].text, records[1].text]
    settings = SamplerSettings(nfe=2, cfg=0.0)
    for task, kwargs in (("tts", {"reference": ref}), ("text2av", {"duration": "text"})):
        res = generate_batch(gen_bundle, own, task, settings, torch.Generator().manual_seed(0), **kwargs)
        assert torch.isfinite(res.mel).all() and res.mel.shape[0] == 2, task
    # an export written before text units existed (no field) loads as a character model
    del config["text_units"], config["weights_sha256"]
    config["vocab"] = Vocab.default().to_list()[: len(Vocab.default("phoneme"))]
    (export / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    old = load_bundle(export)
    assert old.vocab.units == "char" and old.vocab.encode("hello") == [old.vocab.index[c] for c in "hello"]
