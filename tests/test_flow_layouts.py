"""Task layouts have one owner (``jam_flow.flow.layouts``): ``jam-flow generate`` (a batch of one) and batched
evaluation hand the sampler identical conditions, a padded batch lays out each row as that row alone, and every
layout is one of the task's trained (audio, motion) states."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from inference_fixtures import write_export, write_inputs

from jam_flow.api import batch as generation
from jam_flow.data.mel import log_mel
from jam_flow.features import FrameClock, MelSettings, MotionSettings
from jam_flow.flow.layouts import TASK_LAYOUTS, TASKS, Given, task_layout
from jam_flow.flow.sampler import JointConditions, SamplerSettings
from jam_flow.inference import tasks
from jam_flow.inference.bundle import load_bundle

FIELDS = (
    "audio_cond",
    "audio_known",
    "text",
    "audio_mask",
    "motion_cond",
    "motion_known",
    "motion_rest",
    "motion_mask",
)


class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    files = write_inputs(root)
    return {"bundle": load_bundle(write_export(root)), **files}


def _captured(monkeypatch, module, call) -> JointConditions:
    seen = []

    def fake_sample(model, cond, settings, seed=None, generator=None):
        seen.append(cond)
        raise _Stop

    monkeypatch.setattr(module, "sample", fake_sample)
    with pytest.raises(_Stop):
        call()
    return seen[0]


def _assert_same(a: JointConditions, b: JointConditions) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), name
    assert (a.drop_text, a.drop_rest) == (b.drop_text, b.drop_rest)


def _batch(bundle, mel=None, exp=None, text=None) -> dict:
    """A ``collate_clips``-style batch of one clip."""
    mel = mel if mel is not None else torch.zeros(75, 100)
    exp = exp if exp is not None else np.zeros((bundle.clock.motion_frames(mel.shape[0]), 21, 3), np.float32)
    ids = bundle.vocab.encode(text) if text is not None else [0]
    return {
        "mel": mel[None],
        "exp": torch.as_tensor(exp)[None],
        "text": torch.tensor([ids]),
        "audio_mask": torch.ones(1, mel.shape[0], dtype=torch.bool),
        "motion_mask": torch.ones(1, exp.shape[0], dtype=torch.bool),
    }


CASES = ["audio2motion", "audio2motion+rest", "dub", "motion2audio", "text2av"]


@pytest.mark.parametrize("case", CASES)
def test_generate_and_evaluation_give_the_sampler_identical_conditions(env, monkeypatch, case):
    bundle, settings = env["bundle"], SamplerSettings(nfe=2)
    task = case.split("+")[0]
    exp = np.load(env["motion"])  # [20, 21, 3]
    if task == "audio2motion":
        wave, _ = sf.read(env["speech"], dtype="float32")
        mel = log_mel(wave, bundle.mel)
        rest = case.endswith("+rest")
        fit = np.asarray(tasks._fit_frames(exp, bundle.clock.motion_frames(mel.shape[0]), "--motion"))
        single = lambda: tasks.audio2motion(  # noqa: E731
            bundle, env["speech"], rest_motion=env["motion"] if rest else None, settings=settings, seed=0
        )
        batch, kw = _batch(bundle, mel=mel, exp=fit), {"use_rest": rest}
    elif task in ("dub", "motion2audio"):
        text = "New words" if task == "dub" else None
        if task == "dub":
            single = lambda: tasks.dub(bundle, env["motion"], text, settings=settings, seed=0)  # noqa: E731
        else:
            single = lambda: tasks.motion2audio(bundle, env["motion"], settings=settings, seed=0)  # noqa: E731
        batch, kw = _batch(bundle, exp=exp, text=text), {}
    else:
        single = lambda: tasks.text2av(bundle, "Hi there.", duration=0.8, settings=settings, seed=0)  # noqa: E731
        batch, kw = _batch(bundle, mel=torch.zeros(75, 100), text="Hi there."), {"duration": "reference"}
    a = _captured(monkeypatch, tasks, single)
    b = _captured(
        monkeypatch,
        generation,
        lambda: generation.generate_batch(bundle, batch, task, settings, torch.Generator(), **kw),
    )
    _assert_same(a, b)


# a padded batch: each row is laid out exactly as that row alone ------------------------------------------------
MEL, MOTION = MelSettings(), MotionSettings()
CLOCK = FrameClock.of(MEL, MOTION)


def _pad(rows: list[torch.Tensor], fill: float = 0) -> tuple[torch.Tensor, torch.Tensor]:
    size = max(r.shape[0] for r in rows)
    out = torch.full((len(rows), size, *rows[0].shape[1:]), fill, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out, torch.tensor([r.shape[0] for r in rows])


def _items(task: str, g: torch.Generator) -> list[dict]:
    """Two clips of different lengths with everything a task may read."""
    items = []
    for n_clip, n_ref, n_gen, nt in ((60, 30, 40, 5), (83, 45, 22, 9)):
        m_clip = CLOCK.motion_frames(n_clip)
        item = {
            "text": torch.randint(0, 30, (nt,), generator=g),
            "gen": n_gen,
            "mouth": torch.randn(m_clip, MOTION.mouth_dim, generator=g),
            "rest": torch.randn(m_clip, MOTION.rest_dim, generator=g),
            "audio_span": (n_clip // 4, n_clip // 2),
            "motion_span": (m_clip // 4, m_clip // 2),
        }
        if task in ("audio2motion", "edit"):
            item["mel"] = torch.randn(n_clip, MEL.n_mels, generator=g)
        elif task != "text2av" or n_ref == 45:  # text2av: one row with a reference, one without
            item["mel"] = torch.randn(n_ref, MEL.n_mels, generator=g)
        items.append(item)
    return items


def _layout(task: str, items: list[dict]):
    given = Given(text=None if task == "motion2audio" else _pad([it["text"] for it in items], fill=-1)[0])
    mels = [it.get("mel") for it in items]
    if any(m is not None for m in mels):
        given.mel, given.mel_lens = _pad([m if m is not None else torch.zeros(0, MEL.n_mels) for m in mels])
    if all("mouth" in it for it in items) and task != "text2av":
        given.mouth, given.motion_lens = _pad([it["mouth"] for it in items])
        given.rest, _ = _pad([it["rest"] for it in items])
    kw = {}
    if task in ("tts", "text2av"):
        kw["gen_frames"] = torch.tensor([it["gen"] for it in items])
    if task == "edit":
        kw["audio_span"] = torch.tensor([it["audio_span"] for it in items])
        kw["motion_span"] = torch.tensor([it["motion_span"] for it in items])
    return task_layout(task, given, MEL, MOTION, **kw)


@pytest.mark.parametrize("task", TASKS)
def test_padded_batch_rows_are_laid_out_as_alone(task):
    items = _items(task, torch.Generator().manual_seed(0))
    batch = _layout(task, items)
    for i, item in enumerate(items):
        alone = _layout(task, [item])
        n, m = int(batch.audio_lens[i]), None if batch.motion_lens is None else int(batch.motion_lens[i])
        assert n == int(alone.audio_lens[0]) and int(batch.ref_frames[i]) == int(alone.ref_frames[0])
        a, b = alone.cond, batch.cond
        for name in ("audio_cond", "audio_known", "audio_mask"):
            assert torch.equal(getattr(b, name)[i, :n], getattr(a, name)[0]), name
            assert not getattr(b, name)[i, n:].any(), f"{name}: padding must be zero / not given"
        nt = item["text"].shape[0] if task != "motion2audio" else 1
        assert torch.equal(b.text[i, :nt], a.text[0]) and (b.text[i, nt:] == -1).all()
        assert (a.motion_cond is None) == (b.motion_cond is None) == (task == "tts")
        if a.motion_cond is not None:
            assert m == int(alone.motion_lens[0])
            for name in ("motion_cond", "motion_known", "motion_rest", "motion_mask"):
                assert torch.equal(getattr(b, name)[i, :m], getattr(a, name)[0]), name
                assert not getattr(b, name)[i, m:].any(), f"{name}: padding must be zero / not given"


def _state(known: torch.Tensor, mask: torch.Tensor) -> str:
    known, mask = known[0], mask[0]
    if bool((known | ~mask).all()):
        return "given"
    return "partial" if bool(known.any()) else "generated"


@pytest.mark.parametrize("task", TASKS)
def test_every_layout_is_a_trained_state_of_its_task(task):
    items = _items(task, torch.Generator().manual_seed(1))
    variants = [items[0], items[1]]
    if task == "edit":  # audio only, motion only, both, and no motion at all
        variants = [
            {**items[0], "motion_span": (0, 0)},
            {**items[0], "audio_span": (0, 0)},
            items[0],
            {k: v for k, v in items[0].items() if k not in ("mouth", "rest")},
        ]
    for item in variants:
        cond = _layout(task, [item]).cond
        audio = _state(cond.audio_known, cond.audio_mask)
        motion = "absent" if cond.motion_cond is None else _state(cond.motion_known, cond.motion_mask)
        assert (audio, motion) in TASK_LAYOUTS[task], (task, audio, motion)


# a reference voice in dub / motion2audio comes with its own motion ---------------------------------------------
def test_reference_motion_is_given_under_the_reference_voice_as_a_trained_layout():
    """With ``ref_mouth`` the motion under the reference is the reference's own (not neutral zeros), the whole motion
    is given and the audio after the reference is generated: the (partial, given) layout."""
    g = torch.Generator().manual_seed(3)
    n_ref, m_gen = 30, 20
    m_ref = int(CLOCK.motion_frames(torch.tensor(n_ref)))
    ref_mouth, ref_rest = torch.randn(1, m_ref, 12, generator=g), torch.randn(1, m_ref, 51, generator=g)
    mouth, rest = torch.randn(1, m_gen, 12, generator=g), torch.randn(1, m_gen, 51, generator=g)
    given = Given(
        text=torch.tensor([[1, 2, 3]]), mel=torch.randn(1, n_ref, 100, generator=g), mouth=mouth, rest=rest
    )
    neutral = task_layout("dub", given, MEL, MOTION).cond
    given.ref_mouth, given.ref_rest = ref_mouth, ref_rest
    own = task_layout("dub", given, MEL, MOTION).cond
    assert not neutral.motion_cond[0, :m_ref].any()  # before: zeros under the reference
    assert torch.equal(own.motion_cond[0, :m_ref], ref_mouth[0]) and torch.equal(
        own.motion_rest[0, :m_ref], ref_rest[0]
    )
    assert torch.equal(own.motion_cond[0, m_ref:], mouth[0]) and torch.equal(
        own.motion_rest[0, m_ref:], rest[0]
    )
    for name in ("audio_cond", "audio_known", "motion_known", "motion_mask"):
        assert torch.equal(getattr(own, name), getattr(neutral, name)), name
    state = (_state(own.audio_known, own.audio_mask), _state(own.motion_known, own.motion_mask))
    assert state == ("partial", "given") and state in TASK_LAYOUTS["dub"]


def test_the_dub_reference_layout_is_drawn_in_training_at_its_stated_rate():
    """(partial, given) - an audio span hidden next to given audio, every motion frame given with its real values -
    is what sample_masks draws in p_audio_only * (1 - p_whole_audio) of stage2.yaml's samples (22.5 %, +-0.5 %)."""
    from pathlib import Path

    import yaml

    from jam_flow.flow.masking import DropoutConfig, MaskConfig, layout_rate, sample_masks

    model = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "stage2.yaml").read_text())[
        "model"
    ]
    masking = MaskConfig(**model["masking"])
    b, n = 100_000, 150
    a_len = torch.randint(60, n + 1, (b,), generator=torch.Generator().manual_seed(4))
    m_len = CLOCK.motion_frames(a_len)
    m = int(m_len.max())
    masks = sample_masks(a_len, n, m_len, m, masking, torch.Generator().manual_seed(5))
    a_valid = torch.arange(n)[None] < a_len[:, None]
    hidden_a = masks.audio_gen.sum(1)
    partial_audio = (hidden_a > 0) & (hidden_a < a_valid.sum(1))
    motion_given = masks.motion_gen.sum(1) == 0
    got = (partial_audio & motion_given).double().mean().item()
    stated = layout_rate(("partial", "given"), masking, DropoutConfig(**model["dropout"]))
    assert stated == pytest.approx(masking.p_audio_only * (1 - masking.p_whole_audio))
    assert abs(got - stated) < 0.005, (got, stated)


def test_dub_with_a_reference_gives_the_references_own_motion(env, monkeypatch):
    """inference.tasks.dub: with ``ref_motion`` (the reference's clip) its first frames lie under the reference;
    without it they are generated from the reference audio by one audio2motion call, whose output is given."""
    bundle, settings = env["bundle"], SamplerSettings(nfe=2)
    clip_exp = np.load(env["clip"])["exp"]
    cond = _captured(
        monkeypatch,
        tasks,
        lambda: tasks.dub(
            bundle, env["motion"], "New words", env["ref"], ref_motion=env["clip"], settings=settings
        ),
    )
    m_ref = int(cond.motion_known.shape[1] - np.load(env["motion"]).shape[0])
    want = bundle.normalise_motion(clip_exp)[0][:m_ref].to(cond.motion_cond.dtype)
    assert m_ref > 0 and torch.equal(cond.motion_cond[0, :m_ref], want) and bool(cond.motion_known.all())

    from jam_flow.flow.sampler import SampleOutput

    seen = []

    def two_calls(model, c, settings, seed=None, generator=None):
        seen.append(c)
        if len(seen) == 1:  # the audio2motion pass over the reference
            assert bool(c.audio_known.all()) and not bool(c.motion_known.any())
            motion = torch.full((1, c.motion_mask.shape[1], 12), 0.5)
            return SampleOutput(c.audio_cond, motion, 2)
        raise _Stop

    monkeypatch.setattr(tasks, "sample", two_calls)
    with pytest.raises(_Stop):
        tasks.dub(bundle, env["motion"], "New words", env["ref"], settings=settings, seed=0)
    assert torch.equal(seen[1].motion_cond[0, :m_ref], torch.full((m_ref, 12), 0.5))
