"""The bundled example dump: reproducible from its generator, and holding the
kinds of page and markup it is meant to hold."""
import bz2
import os
import re
import sys

from conftest import ROOT

EXAMPLE_DIR = os.path.join(ROOT, "data", "example_wiki")
sys.path.insert(0, EXAMPLE_DIR)
import example_dump  # pylint: disable=wrong-import-position


def test_generator_reproduces_the_bundled_dump_byte_for_byte():
  xml = example_dump.dump_xml(example_dump.SEED,
                                   example_dump.NUM_GENERATED)
  with bz2.open(os.path.join(
      EXAMPLE_DIR, "enwiki-example-pages-articles.xml.bz2"), "rb") as f:
    assert f.read() == xml


def test_dump_holds_templates_redirects_disambiguation_and_markup():
  xml = example_dump.dump_xml(1, 30).decode("utf-8")
  titles = re.findall(r"<title>(.*?)</title>", xml)
  assert len(titles) == len(set(titles))  # Every title once.
  assert "Template:Convert" in titles
  assert xml.count("<redirect title=") == len(
      example_dump.handwritten.REDIRECTS)
  assert "may refer to:" in xml
  for markup in ("'''", "[[", "{{Infobox", "&lt;ref", "== ", "\n* ",
                 "\n# ", "{|", "[[Category:", "[[File:"):
    assert markup in xml, markup
  # Another seed, other generated articles; the same seed, the same dump.
  assert example_dump.dump_xml(2, 30).decode("utf-8") != xml
  assert example_dump.dump_xml(1, 30).decode("utf-8") == xml


def test_demo_vocab_subset_tokenizes_like_the_full_vocab(tmp_path):
  import tokenization  # pylint: disable=g-import-not-at-top
  from conftest import VOCAB_FILE  # pylint: disable=g-import-not-at-top
  text = ("The Carrow Point Light was automated in 1985 by Dr. Vasquez.\n"
          "Unaffordable ferrocyanide tokenizations, e.g. 3.5 kg!\n")
  full = tokenization.FullTokenizer(VOCAB_FILE)
  tokens = tokenization.subset_vocabulary(text.splitlines(), VOCAB_FILE)
  assert tokens[:5] == list(tokenization.SPECIAL_TOKENS)
  assert len(tokens) == len(set(tokens)) < 60
  order = list(full.vocab)
  assert sorted(tokens[5:], key=order.index) == tokens[5:]  # full's order
  subset_file = tmp_path / "vocab.txt"
  subset_file.write_text("".join(t + "\n" for t in tokens))
  subset = tokenization.FullTokenizer(str(subset_file))
  for line in text.splitlines():
    assert subset.tokenize(line) == full.tokenize(line)
    assert "[UNK]" not in subset.tokenize(line)
  # A word the corpus lacks falls back to pieces or [UNK], never crashes.
  assert subset.tokenize("zebra") != full.tokenize("zebra")
