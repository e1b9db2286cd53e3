"""tokenization.py: each of Google's rules by hand, the fast path against the
reference rules, and both against golden output of Google's own tokenizer."""
import json
import os
import re
import sys
import unicodedata

import pytest

import tokenization
import tokenization_cases
from conftest import ROOT, VOCAB_FILE

sys.path.insert(0, os.path.join(ROOT, "bench"))
import english_corpus  # pylint: disable=g-import-not-at-top,wrong-import-position

GOLDEN_FILE = os.path.join(os.path.dirname(__file__), "data",
                           "tokenization_golden.json")


def write_vocab(tmp_path, tokens):
  path = tmp_path / "vocab.txt"
  path.write_text("".join(token + "\n" for token in tokens), encoding="utf-8")
  return str(path)


@pytest.fixture(scope="module")
def uncased():
  return tokenization.FullTokenizer(VOCAB_FILE, do_lower_case=True)


@pytest.fixture(scope="module")
def cased():
  return tokenization.FullTokenizer(VOCAB_FILE, do_lower_case=False)


@pytest.fixture(scope="module")
def golden():
  with open(GOLDEN_FILE, encoding="utf-8") as f:
    data = json.load(f)
  if data["unidata_version"] != unicodedata.unidata_version:
    pytest.skip(f"golden file made with Unicode {data['unidata_version']}, "
                f"this Python has {unicodedata.unidata_version}")
  return data


# ---------------------------------------------------------------------------
# Vocabulary and conversions.


def test_load_vocab_strips_lines_and_counts_every_line(tmp_path):
  path = tmp_path / "vocab.txt"
  path.write_bytes(b"[PAD]\n  a \n\nb\na\nc")  # blank line, duplicate, no EOL
  vocab = tokenization.load_vocab(str(path))
  assert list(vocab.items()) == [("[PAD]", 0), ("a", 4), ("", 2), ("b", 3),
                                 ("c", 5)]


def test_a_vocab_line_that_is_not_utf8_is_named(tmp_path):
  """Far into the file (past the first read buffer), the error names the
  file and its line, not an offset into some buffer."""
  path = tmp_path / "vocab.txt"
  path.write_bytes(b"".join(b"w%d\n" % i for i in range(30000)) +
                   b"caf\xe9\n")
  with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: line "
                     r"30001: not UTF-8 text \(byte 3 of the line\)"):
    tokenization.load_vocab(str(path))


def test_real_vocab_loads_with_known_ids(uncased):
  assert len(uncased.vocab) == 30522
  assert [uncased.vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                     "[MASK]")] == [0, 100, 101, 102, 103]


def test_convert_to_unicode_decodes_bytes_dropping_bad_ones():
  assert tokenization.convert_to_unicode(b"caf\xc3\xa9\xff!") == "café!"
  assert tokenization.convert_to_unicode("café") == "café"
  assert tokenization.printable_text(b"\xe5\x8c\x97") == "北"
  with pytest.raises(ValueError, match="Unsupported string type"):
    tokenization.convert_to_unicode(3)


def test_bytes_input_is_decoded_as_utf8(uncased):
  text = "Café au lait, 北京!"
  assert uncased.tokenize(text.encode("utf-8") + b"\xff") == uncased.tokenize(
      text) == ["cafe", "au", "lai", "##t", ",", "北", "京", "!"]
  assert uncased.basic_tokenizer.tokenize(text.encode("utf-8")) == [
      "cafe", "au", "lait", ",", "北", "京", "!"]


def test_tokens_and_ids_round_trip(uncased):
  tokens = uncased.tokenize("Hello, World!")
  assert tokens == ["hello", ",", "world", "!"]
  ids = uncased.convert_tokens_to_ids(tokens)
  assert ids == [7592, 1010, 2088, 999]
  assert uncased.convert_ids_to_tokens(ids) == tokens
  assert tokenization.convert_tokens_to_ids(uncased.vocab, tokens) == ids
  assert tokenization.convert_ids_to_tokens(uncased.inv_vocab, ids) == tokens
  with pytest.raises(KeyError):
    uncased.convert_tokens_to_ids(["not-a-token"])


# ---------------------------------------------------------------------------
# The rules, one by one, on hand-computed cases.


def test_cleanup_drops_nul_fffd_control_and_format_chars():
  basic = tokenization.BasicTokenizer(do_lower_case=False)
  text = "a\x00b c\ufffdd e\x1cf g\u200bh i\x7fj k\u00adl m\x0bn o\ufeffp"
  assert basic.tokenize(text) == ["ab", "cd", "ef", "gh", "ij", "kl", "mn",
                                  "op"]


def test_every_whitespace_char_separates_words():
  basic = tokenization.BasicTokenizer(do_lower_case=False)
  text = " a\tb\nc\rd\u00a0e\u3000f\u2003g\u2028h\u2029i  "
  assert basic.tokenize(text) == list("abcdefghi")


def test_cjk_ideographs_are_single_char_words_but_not_hangul_or_kana():
  basic = tokenization.BasicTokenizer(do_lower_case=False)
  assert basic.tokenize("ab北京cd 한국어 ひらがな 𠀀丽") == [
      "ab", "北", "京", "cd", "한국어", "ひらがな", "𠀀", "丽"]


def test_lowercase_strips_accents_only_when_asked():
  assert tokenization.BasicTokenizer(do_lower_case=True).tokenize(
      " \tHeLLo!how  \n Are yoU?  Ünïcödé İstanbul") == [
          "hello", "!", "how", "are", "you", "?", "unicode", "istanbul"]
  assert tokenization.BasicTokenizer(do_lower_case=False).tokenize(
      " \tHäLLo!how  \n Are yoU?  ") == ["HäLLo", "!", "how", "Are", "yoU",
                                         "?"]


def test_ascii_symbols_and_unicode_p_categories_split_but_symbols_do_not():
  basic = tokenization.BasicTokenizer(do_lower_case=False)
  assert basic.tokenize("a$b^c`d~e+f") == list("a$b^c`d~e+f")
  assert basic.tokenize("x¿¡«»—§y") == list("x¿¡«»—§y")
  assert basic.tokenize("don't ©®™") == ["don", "'", "t", "©®™"]
  assert all(tokenization.is_punctuation(chr(cp))
             for cp in range(33, 127) if not chr(cp).isalnum())


@pytest.fixture
def tiny_wordpiece(tmp_path):
  vocab = tokenization.load_vocab(write_vocab(
      tmp_path, ["[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed", "wa",
                 "un", "runn", "##ing", "a", "##a"]))
  return tokenization.WordpieceTokenizer(vocab=vocab)


def test_wordpiece_is_greedy_longest_match_first(tiny_wordpiece):
  assert tiny_wordpiece.tokenize("") == []
  assert tiny_wordpiece.tokenize("unwanted running") == [
      "un", "##want", "##ed", "runn", "##ing"]
  assert tiny_wordpiece.tokenize("wanted") == ["want", "##ed"]


def test_word_with_an_unmatched_part_becomes_one_unk(tiny_wordpiece):
  assert tiny_wordpiece.tokenize("unwantedX running") == [
      "[UNK]", "runn", "##ing"]


def test_words_over_200_chars_become_unk(tiny_wordpiece):
  assert tiny_wordpiece.tokenize("a" * 200) == ["a"] + ["##a"] * 199
  assert tiny_wordpiece.tokenize("a" * 201) == ["[UNK]"]


def test_word_length_counts_after_accent_stripping(tmp_path):
  path = write_vocab(tmp_path, ["[UNK]", "e", "##e", "é", "##é"])
  word = "e\u0301" * 150  # 300 characters, 150 after stripping the accents
  assert tokenization.FullTokenizer(path, True).tokenize(word) == (
      ["e"] + ["##e"] * 149)
  assert tokenization.FullTokenizer(path, False).tokenize(word) == ["[UNK]"]


def test_full_tokenizer_on_real_vocab(uncased, cased):
  assert uncased.tokenize("unaffable UNwant\u00e9d,running") == [
      "una", "##ffa", "##ble", "unwanted", ",", "running"]
  assert cased.tokenize("Hello") == ["[UNK]"]  # no capitals in this vocab
  assert cased.tokenize("hello 北京") == ["hello", "北", "京"]
  # The vocabulary's longest token (18 characters) as a prefix.
  assert uncased.tokenize("Telecommunicationss") == ["telecommunications",
                                                     "##s"]


# ---------------------------------------------------------------------------
# The fast path equals the reference rules.


def assert_fast_equals_reference(tokenizer, texts):
  for text in texts:
    expected = tokenizer.reference_tokenize(text)
    assert tokenizer.tokenize(text) == expected, repr(text)
    assert tokenizer.tokenize(text) == expected, repr(text)  # from the cache


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_fast_path_equals_reference_on_adversarial_text(do_lower_case):
  # A tiny cache: evictions happen all the time.
  tokenizer = tokenization.FullTokenizer(VOCAB_FILE, do_lower_case,
                                         cache_size=64)
  texts = (tokenization_cases.HAND_CASES +
           tokenization_cases.random_texts(seed=7, count=1500))
  assert_fast_equals_reference(tokenizer, texts)
  assert len(tokenizer._chunk_tokens) <= 64  # pylint: disable=protected-access


@pytest.fixture(scope="module")
def english_lines(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("english") / "english.txt")
  english_corpus.build_corpus(path, 400_000)
  with open(path, encoding="utf-8") as f:
    return [line for line in f.read().splitlines() if line]


def test_english_corpus_is_sentences_and_documents(tmp_path):
  path = str(tmp_path / "english.txt")
  written = english_corpus.build_corpus(path, 50_000)
  text = open(path, encoding="utf-8").read()
  assert written == len(text.encode("utf-8")) >= 50_000
  documents = text.split("\n\n")
  assert len(documents) > 1 and all(d.strip() for d in documents)
  assert text.endswith("\n") and not text.endswith("\n\n")


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_fast_path_equals_reference_on_english(english_lines, do_lower_case):
  tokenizer = tokenization.FullTokenizer(VOCAB_FILE, do_lower_case)
  assert_fast_equals_reference(tokenizer, english_lines)


def test_cleanup_table_equals_reference_cleanup_on_every_code_point():
  every_char = "".join(map(chr, range(0x110000)))
  table = tokenization._CleanupTable()  # pylint: disable=protected-access
  assert every_char.translate(table) == tokenization.space_chinese_chars(
      tokenization.clean_text(every_char))


# ---------------------------------------------------------------------------
# Both equal Google's published tokenizer (golden file from
# bench/verify_tokenization.py, which also compares several MB directly).


def test_char_classes_equal_googles_on_every_code_point(golden):
  runs = golden["char_classes"]
  for (start, expected), (end, _) in zip(runs, runs[1:] + [[0x110000, ""]]):
    for cp in range(start, end):
      char = chr(cp)
      if cp == 0 or cp == 0xFFFD or tokenization.is_control(char):
        got = "d"
      elif tokenization.is_whitespace(char):
        got = "s"
      elif tokenization.is_chinese_char(cp):
        got = "c"
      elif tokenization.is_punctuation(char):
        got = "p"
      else:
        got = "o"
      assert got == expected, f"U+{cp:04X}"


def test_tokens_equal_googles_golden_output(golden, uncased, cased):
  assert golden["vocab"] == os.path.basename(VOCAB_FILE)
  for case in golden["cases"]:
    tokenizer = uncased if case["do_lower_case"] else cased
    assert tokenizer.tokenize(case["text"]) == case["tokens"], case
    assert tokenizer.reference_tokenize(case["text"]) == case["tokens"], case
