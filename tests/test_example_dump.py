"""The bundled example dump: reproducible from its generator, and holding the
kinds of page and markup it is meant to hold."""
import bz2
import os
import re
import sys

from conftest import ROOT

EXAMPLE_DIR = os.path.join(ROOT, "data", "example_wiki")
sys.path.insert(0, EXAMPLE_DIR)
import make_example_dump  # pylint: disable=wrong-import-position


def test_generator_reproduces_the_bundled_dump_byte_for_byte():
  flags = make_example_dump.FLAGS
  xml = make_example_dump.dump_xml(flags["seed"].default,
                                   flags["num_generated"].default)
  with bz2.open(os.path.join(
      EXAMPLE_DIR, "enwiki-example-pages-articles.xml.bz2"), "rb") as f:
    assert f.read() == xml


def test_dump_holds_templates_redirects_disambiguation_and_markup():
  xml = make_example_dump.dump_xml(1, 30).decode("utf-8")
  titles = re.findall(r"<title>(.*?)</title>", xml)
  assert len(titles) == len(set(titles))  # Every title once.
  assert "Template:Convert" in titles
  assert xml.count("<redirect title=") == len(
      make_example_dump.handwritten.REDIRECTS)
  assert "may refer to:" in xml
  for markup in ("'''", "[[", "{{Infobox", "&lt;ref", "== ", "\n* ",
                 "\n# ", "{|", "[[Category:", "[[File:"):
    assert markup in xml, markup
  # Another seed, other generated articles; the same seed, the same dump.
  assert make_example_dump.dump_xml(2, 30).decode("utf-8") != xml
  assert make_example_dump.dump_xml(1, 30).decode("utf-8") == xml
