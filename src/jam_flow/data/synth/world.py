"""A small world of words (``synth-corpus --words FILE``): 2-4-word sentences with held-out word combinations.

Text only.

A sentence is ``k`` distinct words of the list (``k`` in ``[min_words, max_words]``, drawn in order from the clip's
random generator), the first capitalised, ending in a full stop: "Black hot left old." Its *combination* is the
ordered word tuple. A fixed fraction of all combinations is held out, decided by a hash of ``(seed, combination)``
alone, so the split is deterministic per corpus seed and needs no list: training clips only ever say kept
combinations, validation and test clips only held-out ones. Every word occurs in training; no held-out sentence does.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from jam_flow.errors import InputError

__all__ = ["WordWorld", "load_words"]

MIN_WORDS, MAX_WORDS = 2, 4
HELDOUT_FRACTION = 0.1
_MAX_DRAWS = 10_000


def load_words(path: str | Path) -> list[str]:
    """One word a line (blank lines skipped; lower-cased); letters only, no duplicates, at least ``MAX_WORDS``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--words: {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"--words: {path} is not UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise InputError(f"--words: cannot read {path} ({err.strerror})") from err
    words: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        word = line.strip().lower()
        if not word:
            continue
        if not (word.isascii() and word.isalpha()):
            raise InputError(
                f"--words: {path}:{lineno}: expected one word of ASCII letters, got {line.strip()!r}"
            )
        if word in words:
            raise InputError(f"--words: {path}:{lineno}: {word!r} is listed twice")
        words.append(word)
    if len(words) < MAX_WORDS:
        raise InputError(f"--words: {path} holds {len(words)} word(s); expected at least {MAX_WORDS}")
    return words


class WordWorld:
    """Sentences of a word list with a held-out set of combinations (see the module docstring)."""

    def __init__(self, words: list[str], seed: int, heldout_fraction: float = HELDOUT_FRACTION) -> None:
        if not 0.0 < heldout_fraction < 1.0:
            raise InputError(f"--heldout-fraction: expected a number in (0, 1), got {heldout_fraction}")
        if len(words) < MAX_WORDS:
            raise InputError(f"--words: expected at least {MAX_WORDS} words, got {len(words)}")
        self.words = tuple(words)
        self.seed = seed
        self.heldout_fraction = heldout_fraction

    def is_heldout(self, combination: tuple[str, ...] | str) -> bool:
        """Whether a combination (a word tuple, or a sentence of this world) belongs to the held-out set."""
        if isinstance(combination, str):
            combination = tuple(combination.lower().rstrip(".").split())
        key = f"{self.seed}:{' '.join(combination)}".encode()
        draw = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
        return draw < self.heldout_fraction

    def sentence(self, rng: np.random.Generator, heldout: bool) -> str:
        """A sentence from the held-out (``heldout``) or the training combinations, drawn with ``rng``."""
        for _ in range(_MAX_DRAWS):
            k = int(rng.integers(MIN_WORDS, MAX_WORDS + 1))
            combination = tuple(
                self.words[int(i)] for i in rng.choice(len(self.words), size=k, replace=False)
            )
            if self.is_heldout(combination) == heldout:
                return " ".join(combination).capitalize() + "."
        raise InputError(  # only with a tiny word list (every combination on one side)
            f"--words: no {'held-out' if heldout else 'training'} combination in {_MAX_DRAWS} draws "
            f"({len(self.words)} words); use more words"
        )
