"""Runs the installed WikiExtractor with section headings left out of the text.

  python wikiextractor_without_headings.py [WikiExtractor's own arguments]

WikiExtractor's command line writes a section heading (`== History ==`) into
an article's text as a line of its own, `History.`, which nothing but a guess
tells apart from a one-sentence paragraph ("Returns the current ABC cache
token."). Its Extractor knows better: with keepSections=False it writes no
heading at all, and every line of the text is a paragraph of the article.
The command line has no option for that, so this script runs WikiExtractor's
own main() (every option, the template pass, the worker processes, the
output files as the command line writes them) with keepSections=False added
to the arguments main() hands every Extractor it builds.

The package itself is used, not a copy of it: `wikiextractor>=3.1.0`, whose
process_dump takes the Extractor's arguments (`extractor_kwargs`).
"""

import inspect
import sys

from wikiextractor import WikiExtractor


def without_section_headings(process_dump):
  """process_dump, with keepSections=False for every Extractor it builds."""

  def process_dump_without_headings(*args, extractor_kwargs=None, **kwargs):
    extractor_kwargs = dict(extractor_kwargs or {}, keepSections=False)
    return process_dump(*args, extractor_kwargs=extractor_kwargs, **kwargs)

  return process_dump_without_headings


def main():
  if "extractor_kwargs" not in inspect.signature(
      WikiExtractor.process_dump).parameters:
    print(f"error: wikiextractor {WikiExtractor.__version__} cannot leave "
          f"section headings out of the text: pip install "
          f"'wikiextractor>=3.1.0'", file=sys.stderr)
    sys.exit(1)
  WikiExtractor.process_dump = without_section_headings(
      WikiExtractor.process_dump)
  WikiExtractor.main()


if __name__ == "__main__":
  main()
