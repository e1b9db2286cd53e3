"""Shared Wikipedia test inputs: a small dump (write_dump) and what
extract_wikipedia_for_bert makes of it (EXPECTED_TEXT), and WikiExtractor
JSON-lines files (write_wiki_file). Imported by several test files."""

import bz2
import json
import os


def page(page_id, title, text, ns=0, redirect=None):
  """One <page> of a MediaWiki export, its text XML-escaped."""
  text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
  redirect = f'    <redirect title="{redirect}" />\n' if redirect else ""
  return (f"  <page>\n    <title>{title}</title>\n    <ns>{ns}</ns>\n"
          f"    <id>{page_id}</id>\n{redirect}    <revision>\n"
          f"      <id>{page_id + 1000}</id>\n"
          f"      <timestamp>2024-05-01T12:00:00Z</timestamp>\n"
          f'      <text xml:space="preserve">{text}</text>\n'
          f"    </revision>\n  </page>\n")


SITEINFO = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>enwiki</dbname>
    <base>https://en.wikipedia.org/wiki/Main_Page</base>
    <generator>MediaWiki 1.41.0</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="10" case="first-letter">Template</namespace>
      <namespace key="14" case="first-letter">Category</namespace>
    </namespaces>
  </siteinfo>
"""

LIGHTHOUSE = """{{Short description|Lighthouse on a granite islet}}
{{Infobox lighthouse
| name = Carrow Point Light
| height = {{convert|21.5|m}}
| built = 1871
}}
The '''Carrow Point Light''' is a [[lighthouse]] on a granite islet off the \
[[Isle of Marn|Marn]] coast.<ref>Harland, P. (1998). ''Lights of the North''. \
p. 14.</ref> Its tower is {{convert|21.5|m}} tall. Dr. Ellen Vasquez of the \
U.S. Coast Guard surveyed it in 1962, e.g. the lens and the stairs.{{citation needed}}

== History ==
The light was first lit on 3 March 1871. It burned colza oil until 1903, when \
a paraffin lamp of 3.5 times the brightness replaced it.
* Keepers lived on the islet until 1958.
* The fog bell was removed in 1960.

=== Automation ===
It was automated in 1985.

== See also ==
* [[List of lighthouses]]

== References ==
{{Reflist}}

[[Category:Lighthouses]]
"""

ORCHID = """'''Orchid Bay''' is a small bay with a sandy shore. Orchid Bay \
is home to nesting terns.

== Geography ==
The bay opens to the south-west. Winds from the west bring heavy surf in \
winter.
"""

# A lead paragraph of one short sentence with no pronoun or auxiliary verb,
# then a section: what a guess from the words takes for a heading.
CACHE_TOKEN = """Returns the current ABC cache token.

== History ==
The token was added in version 2.6. Seals eat fish.

== Usage ==
Seals eat fish.

Call it once per request.
"""

MERCURY = """'''Mercury''' may refer to:
* [[Mercury (planet)]], the closest planet to the Sun
* [[Mercury (element)]], a chemical element with symbol Hg
{{disambiguation}}
"""

EXPECTED_TEXT = """\
The Carrow Point Light is a lighthouse on a granite islet off the Marn coast.
Its tower is 21.5 m tall.
Dr. Ellen Vasquez of the U.S. Coast Guard surveyed it in 1962, e.g. the lens and the stairs.
The light was first lit on 3 March 1871.
It burned colza oil until 1903, when a paraffin lamp of 3.5 times the brightness replaced it.
It was automated in 1985.

Orchid Bay is a small bay with a sandy shore.
Orchid Bay is home to nesting terns.
The bay opens to the south-west.
Winds from the west bring heavy surf in winter.

Returns the current ABC cache token.
The token was added in version 2.6.
Seals eat fish.
Seals eat fish.
Call it once per request.

Mercury may refer to:

"""


def write_dump(path):
  """A small enwiki-style dump: templates, an article with every kind of
  markup, one whose first sentence starts with its title, one of short
  sentences that look like headings, a redirect, a disambiguation page and an
  empty stub."""
  pages = [
      page(1, "Template:Convert", "{{{1}}} {{{2}}}", ns=10),
      page(2, "Template:Reflist", "<references />", ns=10),
      page(10, "Carrow Point Light", LIGHTHOUSE),
      page(20, "Orchid Bay", ORCHID),
      page(25, "ABC cache token", CACHE_TOKEN),
      page(30, "Carrow Light", "#REDIRECT [[Carrow Point Light]]",
           redirect="Carrow Point Light"),
      page(40, "Mercury", MERCURY),
      page(50, "Empty stub", "{{stub}}\n[[Category:Stubs]]\n"),
  ]
  with bz2.open(path, "wt", encoding="utf-8") as f:
    f.write(SITEINFO + "".join(pages) + "</mediawiki>\n")


def write_wiki_file(path, articles, compress=False, extra_lines=()):
  """Writes WikiExtractor-style JSON lines (plain or bz2) for (title, text)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  lines = [json.dumps({"id": str(i), "revid": str(i), "url": "", "title": t,
                       "text": x}) for i, (t, x) in enumerate(articles)]
  lines.extend(extra_lines)
  opener = bz2.open if compress else open
  with opener(path, "wt", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
