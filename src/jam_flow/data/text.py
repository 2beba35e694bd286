"""Text vocabulary in F5-TTS ``vocab.txt`` format (one token per line; line number = index) and its text units.

Dimension legend: nt text tokens. Batches pad ids with -1 (F5 convention; the model shifts ids by +1 so that
embedding row 0 is the filler). Unlike F5-TTS, which maps unknown characters silently to index 0, ``encode``
refuses text with tokens outside the vocabulary and names them, so that data problems surface early.

Text units (``data.text_units``, :data:`TEXT_UNITS`): ``char`` (one token per character, F5-TTS's ASCII path; the
bundled ``assets/vocab.txt``) or ``phoneme`` (one token per IPA phoneme from eSpeak NG,
:func:`jam_flow.data.synth.espeak.phonemize`, ``" "`` between words; the bundled ``assets/phonemes.txt``). A
:class:`Vocab` carries its units, so every ``encode`` (dataset clips, ``generate --text``, the demo) turns plain text
into tokens the same way; the units travel with the vocabulary in checkpoints and exports (``text_units``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from jam_flow.errors import InputError

__all__ = ["Vocab", "TEXT_UNITS", "default_vocab_path", "load_vocab", "check_text_units"]

TEXT_UNITS = ("char", "phoneme")
_BUNDLED = {"char": "vocab.txt", "phoneme": "phonemes.txt"}


def check_text_units(units: object, where: str = "--data.text_units") -> str:
    """``units`` if it is one of :data:`TEXT_UNITS`, else ``InputError``."""
    if units not in TEXT_UNITS:
        raise InputError(f"{where}: expected one of {list(TEXT_UNITS)}, got {units!r}")
    return str(units)


def default_vocab_path(units: str = "char") -> Path:
    """Path of the bundled vocabulary of ``units``: ``jam_flow/assets/vocab.txt`` (characters) or
    ``jam_flow/assets/phonemes.txt`` (every phoneme the phonemizer gives on 42 848 English words)."""
    return Path(str(resources.files("jam_flow") / "assets" / _BUNDLED[check_text_units(units)]))


def load_vocab(vocab_path: str | Path | None = None, units: str = "char") -> Vocab:
    """The vocabulary of a run: ``vocab_path`` (a vocab.txt of ``units``) or the bundled one of ``units``."""
    units = check_text_units(units)
    return Vocab.from_file(vocab_path or default_vocab_path(units), units=units)


class Vocab:
    """An ordered token list with a token -> index map. ``len(vocab)`` is the model's ``text_num_embeds``."""

    def __init__(self, tokens: list[str], source: str = "<tokens>", units: str = "char") -> None:
        self.units = check_text_units(units, f"{source}: text units")
        seen: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            if not isinstance(tok, str) or tok == "":
                raise InputError(f"{source}: token {i} must be a non-empty string, got {tok!r}")
            if tok in seen:
                raise InputError(f"{source}: token {tok!r} appears twice (index {seen[tok]} and {i})")
            seen[tok] = i
        if not tokens:
            raise InputError(f"{source}: the vocabulary is empty")
        self.tokens: list[str] = list(tokens)
        self.index: dict[str, int] = seen
        self.source = source

    # construction -------------------------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, units: str = "char") -> Vocab:
        """Read an F5-TTS vocab.txt: each line minus its trailing newline is one token."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: vocabulary file does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{path}: vocabulary file is not UTF-8 ({err})") from err
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines = lines[:-1]  # final newline
        for i, line in enumerate(lines):
            if line == "":
                raise InputError(f"{path}:{i + 1}: empty line (every line must hold one token)")
        return cls(lines, source=str(path), units=units)

    @classmethod
    def default(cls, units: str = "char") -> Vocab:
        """The bundled vocabulary of ``units``; characters: space at index 0, printable ASCII, a few typographic
        marks; phonemes: the word break ``" "`` at index 0, then the IPA phonemes."""
        return cls.from_file(default_vocab_path(units), units=units)

    @classmethod
    def from_list(cls, tokens: list[str], units: str = "char") -> Vocab:
        """Rebuild a vocabulary stored as a list (e.g. ``ckpt["jam_flow"]["vocab"]`` and ``["text_units"]``)."""
        if not isinstance(tokens, (list, tuple)):
            raise InputError(f"vocab: expected a list of token strings, got {type(tokens).__name__}")
        return cls(list(tokens), source="vocab list", units=units)

    # use ---------------------------------------------------------------------------------------------------------
    def to_list(self) -> list[str]:
        return list(self.tokens)

    def save(self, path: str | Path) -> Path:
        """Write in vocab.txt format (readable by F5-TTS's "custom" tokenizer)."""
        path = Path(path)
        path.write_text("".join(tok + "\n" for tok in self.tokens), encoding="utf-8")
        return path

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and other.tokens == self.tokens and other.units == self.units

    def __repr__(self) -> str:
        return f"Vocab({len(self)} {self.units} tokens from {self.source})"

    def tokenize(self, text: str) -> list[str]:
        """Plain text -> its tokens in these units (characters, or the phonemizer's phonemes)."""
        if self.units == "phoneme":
            from jam_flow.data.synth.espeak import phonemize

            return list(phonemize(text))
        return list(text)

    def unknown_chars(self, text: str) -> list[str]:
        """Tokens of ``text`` (characters or phonemes) not in the vocabulary, in first-seen order."""
        out: list[str] = []
        for tok in self.tokenize(text):
            if tok not in self.index and tok not in out:
                out.append(tok)
        return out

    def encode(self, text: str, where: str = "text") -> list[int]:
        """Per-token ids of plain ``text`` (F5's ASCII path per character, or one id per phoneme). Raises
        ``InputError`` naming every unknown character / phoneme."""
        if not isinstance(text, str):
            raise InputError(f"{where}: expected a string, got {type(text).__name__}")
        tokens = self.tokenize(text)
        unknown = [t for t in dict.fromkeys(tokens) if t not in self.index]
        if unknown:
            shown = ", ".join(f"{t!r} ({' '.join(f'U+{ord(c):04X}' for c in t)})" for t in unknown)
            what = "phonemes" if self.units == "phoneme" else "characters"
            raise InputError(f"{where}: {what} not in the vocabulary ({self.source}): {shown}")
        return [self.index[t] for t in tokens]

    def decode(self, ids: list[int]) -> str:
        """Inverse of ``encode`` for characters (phonemes are joined the same way); negative ids are skipped."""
        return "".join(self.tokens[i] for i in ids if i >= 0)
