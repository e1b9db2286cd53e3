"""The example Wikipedia dump bundled for `make demo` and the tests:
dump_xml(SEED, NUM_GENERATED) (make_example_dump.py writes it).

The dump is a MediaWiki export (the format of enwiki-*-pages-articles.xml.bz2)
holding: template pages; the hand-written articles of handwritten.py; a few
hundred articles generated here from sentence patterns about fictional towns,
rivers, species, people, ships, minor planets and albums, in the style of
Wikipedia's shorter articles; redirects and disambiguation pages. All prose is
original to this project. The wiki markup covers what WikiExtractor has to
clean: bold and italics, internal and external links, templates (some defined
in the dump, some not), infoboxes, headings, bulleted and numbered lists,
references, tables, files and categories.

The output is a pure function of the seed and the number of generated
articles: the same arguments give the same bytes. Defines no flags.
"""

import os
import random
import sys
from xml.sax.saxutils import escape

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import handwritten  # pylint: disable=wrong-import-position

# The bundled dump is dump_xml(SEED, NUM_GENERATED).
SEED = 20261124
NUM_GENERATED = 600


SITEINFO = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.11/ \
http://www.mediawiki.org/xml/export-0.11.xsd" version="0.11" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>enwiki</dbname>
    <base>https://en.wikipedia.org/wiki/Main_Page</base>
    <generator>MediaWiki 1.42.0-wmf.1</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="-2" case="first-letter">Media</namespace>
      <namespace key="-1" case="first-letter">Special</namespace>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">Talk</namespace>
      <namespace key="6" case="first-letter">File</namespace>
      <namespace key="10" case="first-letter">Template</namespace>
      <namespace key="14" case="first-letter">Category</namespace>
      <namespace key="828" case="first-letter">Module</namespace>
    </namespaces>
  </siteinfo>
"""

# ---------------------------------------------------------------------------
# Word pools for the generated articles.

SYLLABLES_A = ["Ald", "Bram", "Cor", "Dun", "El", "Fen", "Gar", "Hal", "Ing",
               "Kes", "Lon", "Mar", "Nor", "Ock", "Pen", "Quar", "Ros", "Sel",
               "Tar", "Ul", "Ven", "Wex", "Yar", "Brin", "Cal", "Drum", "Hest",
               "Lind", "Mor", "Stan"]
SYLLABLES_B = ["mere", "ford", "ton", "by", "wick", "ley", "stead", "holm",
               "bridge", "field", "worth", "haven", "thorpe", "dale", "mouth",
               "well", "combe", "ness", "brook", "stow"]
FIRST_NAMES = ["Anna", "Bertil", "Clara", "Daniel", "Edith", "Felix", "Greta",
               "Hugo", "Ines", "Jonas", "Karin", "Leon", "Maja", "Niklas",
               "Olga", "Pavel", "Rosa", "Simon", "Tilde", "Viktor", "Agnes",
               "Emil", "Helena", "Oskar", "Lydia", "Tomas", "Vera", "Arvid",
               "Nora", "Ruben"]
SURNAME_PARTS = ["Hart", "Lund", "Berg", "Mell", "Sand", "Kroll", "Fenn",
                 "Dahl", "Wren", "Vos", "Asp", "Holt", "Ek", "Stro", "Tam"]
SURNAME_ENDS = ["ing", "er", "ström", "quist", "by", "ley", "man", "sen",
                "ford", "ell", "wick", "ton"]
REGIONS = ["Northmark", "Vessland", "the Eastern Uplands", "Ostria",
           "the Southern Lowlands", "Calder Province", "the Western Fells",
           "Marrow County", "Harlund", "the Lake District of Vessland"]
COUNTRIES = ["Vessland", "Ostria", "Norland", "Calderia", "Harlund"]
LATIN_A = ["Carab", "Lepid", "Helic", "Pter", "Silph", "Chrys", "Agr", "Bomb",
           "Cten", "Dendr", "Geom", "Noct", "Phyll", "Stenob", "Xyl", "Amph"]
LATIN_B = ["us", "ia", "opsis", "ella", "ites", "odes", "ina", "ocera",
           "ura", "ides"]
LATIN_EPITHETS = ["borealis", "montana", "minor", "maculata", "ferruginea",
                  "palustris", "silvatica", "obscura", "rufipes", "variabilis",
                  "nitida", "alpina", "occidentalis", "striata", "pallida"]
ORGANISMS = [
    ("beetle", "Coleoptera", "ground beetles", "mm", (6, 24)),
    ("moth", "Lepidoptera", "owlet moths", "mm", (22, 48)),
    ("land snail", "Gastropoda", "door snails", "mm", (8, 19)),
    ("fern", "Polypodiales", "wood ferns", "cm", (15, 90)),
    ("freshwater fish", "Cypriniformes", "minnows", "cm", (5, 30)),
    ("orchid", "Asparagales", "orchids", "cm", (10, 45)),
]
HABITATS = ["damp deciduous woodland", "upland heath", "the margins of slow "
            "rivers", "limestone grassland", "coastal dunes", "peat bogs",
            "old beech forest", "alpine meadows above the tree line",
            "reed beds", "shaded rocky ravines"]
INDUSTRIES = ["wool", "timber", "fishing", "slate quarrying", "brewing",
              "paper making", "boat building", "dairy farming", "tourism",
              "glass making", "salt production", "tanning"]
PROFESSIONS = ["painter", "composer", "footballer", "politician", "chemist",
               "architect", "novelist", "engineer"]
INSTRUMENTS = ["violin", "cello", "piano", "organ", "clarinet", "guitar"]
SHIP_TYPES = ["steamship", "sailing barque", "cargo ship", "ferry",
              "research vessel", "paddle steamer"]
GENRES = ["folk", "jazz", "post-punk", "chamber pop", "blues rock",
          "ambient", "progressive rock", "country"]
ALBUM_WORDS_A = ["Northern", "Quiet", "Silver", "Long", "Winter", "Open",
                 "Distant", "Paper", "Hollow", "Bright", "Lower", "Salt"]
ALBUM_WORDS_B = ["Roads", "Rooms", "Tides", "Fields", "Hours", "Lights",
                 "Rivers", "Windows", "Summers", "Harbours", "Stations"]
POSITIONS = ["goalkeeper", "defender", "midfielder", "forward"]
MINISTRIES = ["transport", "education", "health", "finance"]
BIRTH_ORDER = ["eldest", "second", "youngest"]
PARENT_JOBS = ["farmer", "teacher", "baker", "ship pilot", "doctor"]
GROUP_KINDS = ["Band", "Quartet", "Singers", "Collective"]
SONG_WORDS_A = ["Harbour", "Evening", "Glass", "Paper", "Cold"]
SONG_WORDS_B = ["Song", "Light", "Road", "Bell", "Wind"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July",
          "August", "September", "October", "November", "December"]


class Writer:
  """The generated articles' shared state: a seeded generator, used titles."""

  def __init__(self, seed):
    self.rng = random.Random(seed)
    self.titles = set()

  def pick(self, options):
    return self.rng.choice(options)

  def place(self):
    return self.pick(SYLLABLES_A) + self.pick(SYLLABLES_B)

  def person(self):
    return (f"{self.pick(FIRST_NAMES)} "
            f"{self.pick(SURNAME_PARTS)}{self.pick(SURNAME_ENDS)}")

  def date(self, first_year, last_year):
    year = self.rng.randint(first_year, last_year)
    return f"{self.rng.randint(1, 28)} {self.pick(MONTHS)} {year}", year

  def unique(self, make_title):
    """Calls make_title() until it returns a title not used yet."""
    for _ in range(1000):
      title = make_title()
      if title not in self.titles:
        self.titles.add(title)
        return title
    raise ValueError("ran out of titles: enlarge the word pools")

  def ref(self):
    """A <ref> with a made-up source, as articles cite books and journals."""
    author = self.person().split()[1]
    year = self.rng.randint(1950, 2022)
    if self.rng.random() < 0.5:
      return (f"<ref>{{{{cite book |last={author} |title=A History of "
              f"{self.place()} |year={year} |page={self.rng.randint(3, 400)}"
              f"}}}}</ref>")
    return (f"<ref>{author}, {self.pick('ABCDEFGHJKLMNPRST')}. ({year}). "
            f"\"Notes on the {self.pick(['region', 'survey', 'collection'])}\"."
            f" ''Regional Studies'' '''{self.rng.randint(2, 60)}''': "
            f"{self.rng.randint(10, 90)}–{self.rng.randint(91, 200)}.</ref>")


def settlement(w):
  """A town or village: infobox, lead, history, geography, economy, table."""
  name = w.unique(w.place)
  kind = w.pick(["town", "village", "market town", "small town"])
  region = w.pick(REGIONS)
  river = w.place()
  pop = w.rng.randint(400, 48000)
  old_pop = int(pop * w.rng.uniform(0.6, 1.3))
  founded = w.rng.randint(900, 1700)
  industry, industry2 = w.rng.sample(INDUSTRIES, 2)
  area = round(w.rng.uniform(2, 80), 1)
  founder = w.person()
  lead = w.pick([
      f"'''{name}''' is a {kind} in {region}, on the banks of the River "
      f"[[River {river}|{river}]].",
      f"'''{name}''' is a {kind} and civil parish in [[{region}]], lying in "
      f"the valley of the River {river}.",
      f"'''{name}''' is a {kind} in the north of {region}, about "
      f"{{{{convert|{w.rng.randint(5, 60)}|km}}}} from the regional capital.",
  ])
  lead += " " + w.pick([
      f"At the 2021 census it had a population of {pop:,}.",
      f"Its population was {pop:,} at the census of 2021, up from "
      f"{old_pop:,} ten years earlier.",
      f"It had {pop:,} inhabitants in 2021.",
  ]) + w.ref()
  lead += " " + w.pick([
      f"The {kind} grew up around a crossing of the river and later became "
      f"known for its {industry}.",
      f"It is best known for its {industry}, which has been carried on there "
      f"since the Middle Ages.",
      f"Its economy was long based on {industry} and {industry2}.",
  ])
  history = w.pick([
      f"The first record of {name} dates from {founded}, when the "
      f"settlement is mentioned in a charter granting land to a monastery.",
      f"A settlement existed here by {founded}, when a wooden church was "
      f"built beside the ford.",
      f"According to local tradition the {kind} was founded in {founded} by "
      f"{founder}, a merchant who built a mill on the river.",
  ]) + " " + w.pick([
      f"It received the right to hold a weekly market in "
      f"{founded + w.rng.randint(40, 200)}.",
      f"A great fire destroyed much of the centre in "
      f"{founded + w.rng.randint(100, 300)}, and the streets were rebuilt in "
      f"stone.",
      f"The {kind} suffered badly from plague in the fourteenth century, and "
      f"several outlying farms were abandoned.",
  ]) + " " + w.pick([
      f"The arrival of the railway in {w.rng.randint(1845, 1905)} brought "
      f"new trade, and the population doubled within thirty years.",
      f"In the nineteenth century the {industry} industry expanded, and rows "
      f"of workers' cottages were built along the river.",
      f"Dr. {w.person().split()[1]}, the local physician, founded a school "
      f"and a reading room in {w.rng.randint(1850, 1910)}.",
  ])
  geography = w.pick([
      f"The parish covers {area} square kilometres of farmland and woodland.",
      f"{name} lies at a height of about {{{{convert|{w.rng.randint(20, 600)}"
      f"|m}}}} above sea level.",
  ]) + " " + w.pick([
      f"The River {river} flows through the centre of the {kind} and is "
      f"crossed by {w.pick(['two', 'three', 'four'])} bridges, the oldest of "
      f"which dates from the sixteenth century.",
      f"The surrounding hills rise to over {w.rng.randint(300, 900)} metres "
      f"and are popular with walkers.",
      f"The climate is mild and wet, with an average of "
      f"{w.rng.randint(700, 1600)} millimetres of rain a year.",
  ])
  economy = w.pick([
      f"Today the largest employers are the regional hospital and a factory "
      f"that makes parts for farm machinery.",
      f"Tourism has become important since the 1970s, and several old mills "
      f"have been converted into holiday homes.",
      f"Although the {industry} trade has declined, a few small firms still "
      f"carry it on, e.g. for specialist markets abroad.",
  ]) + " " + w.pick([
      f"A market is held on {w.pick(['Tuesdays', 'Thursdays', 'Saturdays'])}"
      f" in the square in front of the town hall.",
      f"Many residents commute to larger towns nearby.",
      f"Unemployment is below the regional average.",
  ])
  table = ("{| class=\"wikitable\"\n|+ Population\n! Year !! Inhabitants\n"
           f"|-\n| 2011 || {old_pop:,}\n|-\n| 2021 || {pop:,}\n|}}")
  landmarks = "\n".join(f"* {x}" for x in w.rng.sample([
      f"The Church of St. {w.pick(FIRST_NAMES)}", "The old corn exchange",
      f"{w.place()} House, a manor of the seventeenth century",
      "The war memorial", "The packhorse bridge", "A museum of local history",
  ], 3))
  text = (f"{{{{Infobox settlement\n| name = {name}\n| population = {pop}\n"
          f"| region = {region}\n}}}}\n{lead}\n\n== History ==\n{history}\n\n"
          f"== Geography ==\n{geography}\n\n== Economy ==\n{economy}\n\n"
          f"== Demographics ==\n{table}\n\n== Landmarks ==\n{landmarks}\n\n"
          f"== References ==\n{{{{Reflist}}}}\n\n"
          f"[[Category:Populated places in {region}]]\n")
  return name, text


def river(w):
  """A river: course, tributaries (a list), ecology, history."""
  name = w.unique(lambda: "River " + w.place())
  short = name.split()[1]
  length = round(w.rng.uniform(8, 180), 1)
  source = w.place()
  mouth = w.pick(["the sea", f"the River {w.place()}", f"Lake {w.place()}"])
  fish = w.pick(["brown trout", "salmon", "grayling", "eels", "pike"])
  lead = (f"The '''{name}''' is a river in {w.pick(REGIONS)}. It is "
          f"{{{{convert|{length}|km}}}} long and flows from the hills near "
          f"[[{source}]] to {mouth}.{w.ref()}")
  course = w.pick([
      f"The river rises in a peat bog at a height of about "
      f"{w.rng.randint(200, 800)} metres and descends steeply through a "
      f"wooded gorge.",
      f"From its source among moorland springs, the {short} runs south "
      f"through open farmland.",
  ]) + " " + w.pick([
      f"Below the village of {w.place()} it widens and meanders across a "
      f"broad floodplain.",
      f"It passes through {w.rng.randint(2, 9)} villages before reaching "
      f"{mouth}.",
      f"In its lower course it is tidal for about {w.rng.randint(2, 15)} "
      f"kilometres.",
  ])
  tributaries = "\n".join(f"* {w.place()} Beck" for _ in range(3))
  ecology = w.pick([
      f"The {short} supports a healthy population of {fish}, and the upper "
      f"reaches are a protected habitat.",
      f"Water quality improved after the closure of the mills in the 1970s, "
      f"and {fish} have returned to the river.",
  ]) + " " + w.pick([
      "Otters were recorded again in 2004 after an absence of forty years.",
      "Kingfishers and dippers nest along the banks.",
      "Floods in the lower valley have led to the building of storage ponds "
      "upstream.",
  ])
  history = w.pick([
      f"In the eighteenth century the river powered "
      f"{w.rng.randint(5, 30)} mills, grinding corn and fulling cloth.",
      f"A canal built beside the river in {w.rng.randint(1760, 1830)} "
      f"carried coal and lime until the railway took its trade.",
  ])
  text = (f"{lead}\n\n== Course ==\n{course}\n\n== Tributaries ==\n"
          f"{tributaries}\n\n== Ecology ==\n{ecology}\n\n== History ==\n"
          f"{history}\n\n== References ==\n{{{{Reflist}}}}\n\n"
          f"[[Category:Rivers of {w.pick(COUNTRIES)}]]\n")
  return name, text


def species(w):
  """A species: taxobox, description with sizes, range, ecology, taxonomy."""
  kind, order, family, unit, (low, high) = w.pick(ORGANISMS)
  name = w.unique(lambda: f"{w.pick(LATIN_A)}{w.pick(LATIN_B)} "
                  f"{w.pick(LATIN_EPITHETS)}")
  genus = name.split()[0]
  size = round(w.rng.uniform(low, high), 1)
  size2 = round(size * w.rng.uniform(1.1, 1.5), 1)
  author = w.person().split()[1]
  year = w.rng.randint(1760, 1990)
  habitat = w.pick(HABITATS)
  country = w.pick(COUNTRIES)
  lead = (f"''{name}'' is a species of {kind} in the order {order}, one of "
          f"the {family}. It is found in {habitat} in {country} and "
          f"neighbouring regions.{w.ref()}")
  description = w.pick([
      f"Adults measure {size} to {size2} {unit}.",
      f"It reaches a length of about {size} {unit}, rarely up to "
      f"{size2} {unit}.",
      f"The largest specimens measure {size2} {unit}, but most are close to "
      f"{size} {unit}.",
  ]) + " " + w.pick([
      f"The upper surface is dark brown with {w.pick(['two', 'four', 'six'])}"
      f" pale spots, and the underside is greyish.",
      "Its colour varies from reddish brown to almost black, which makes it "
      "hard to identify in the field.",
      "It can be told apart from related species by the fine grooves on its "
      "surface, visible only under a hand lens.",
  ])
  ecology = w.pick([
      f"It is most active at night and spends the day under stones or bark.",
      f"It feeds mainly on small invertebrates, e.g. springtails and mites.",
      f"Little is known of its life cycle, although larvae have been found "
      f"in {w.pick(MONTHS)} and {w.pick(MONTHS)}.",
      f"It grows best in shade and is sensitive to drought.",
  ]) + " " + w.pick([
      f"It is listed as near threatened in {country} because its habitat "
      f"has been reduced by drainage and forestry.",
      "The species is common throughout most of its range.",
      "Populations appear to be stable.",
  ])
  taxonomy = w.pick([
      f"The species was first described by {author} in {year}, from "
      f"specimens collected near {w.place()}.",
      f"It was described in {year} by {author}, who placed it in a different"
      f" genus; it was moved to ''{genus}'' in {year + w.rng.randint(5, 60)}.",
  ])
  text = (f"{{{{Speciesbox\n| genus = {genus}\n| species = "
          f"{name.split()[1]}\n| authority = {author}, {year}\n}}}}\n{lead}\n"
          f"\n== Description ==\n{description}\n\n== Distribution and habitat"
          f" ==\n{w.pick(['It', 'The species'])} occurs in {habitat}, mainly "
          f"at heights between {w.rng.randint(0, 400)} and "
          f"{w.rng.randint(500, 2000)} metres.\n\n== Ecology ==\n{ecology}\n\n"
          f"== Taxonomy ==\n{taxonomy}\n\n== References ==\n{{{{Reflist}}}}"
          f"\n\n[[Category:{family.capitalize()}]]\n")
  return name, text


def biography(w):
  """A person: infobox, early life, career, personal life, death, legacy."""
  name = w.unique(w.person)
  first, last = name.split()
  profession = w.pick(PROFESSIONS)
  born, year = w.date(1820, 1960)
  died_year = year + w.rng.randint(35, 95)
  alive = died_year > 2024
  died = "" if alive else w.date(died_year, died_year)[0]
  town = w.place()
  country = w.pick(COUNTRIES)
  pronoun = "She" if first in ("Anna", "Clara", "Edith", "Greta", "Ines",
                               "Karin", "Maja", "Olga", "Rosa", "Tilde",
                               "Agnes", "Helena", "Lydia", "Vera",
                               "Nora") else "He"
  possessive = "her" if pronoun == "She" else "his"
  dates = f"born {born}" if alive else f"{born} – {died}"
  lead = (f"'''{name}''' ({dates}) {'is' if alive else 'was'} a {country}n "
          f"{profession}.")
  career_by_profession = {
      "painter": (f"{pronoun} painted mainly landscapes of the coast, working "
                  f"outdoors in all weathers. {possessive.capitalize()} "
                  f"first exhibition, in {year + 24}, sold out within a "
                  f"week."),
      "composer": (f"{pronoun} wrote {w.rng.randint(3, 9)} symphonies, "
                   f"chamber music and many songs. {possessive.capitalize()} "
                   f"concerto for {w.pick(INSTRUMENTS)} was first performed "
                   f"in {year + 31}."),
      "footballer": (f"{pronoun} played as a {w.pick(POSITIONS)}"
                     f" for {town} United, making {w.rng.randint(80, 420)} "
                     f"league appearances and scoring {w.rng.randint(0, 120)}"
                     f" goals."),
      "politician": (f"{pronoun} was elected to parliament for {town} in "
                     f"{year + 30} and served as minister of "
                     f"{w.pick(MINISTRIES)}"
                     f" from {year + 38} to {year + 42}."),
      "chemist": (f"{pronoun} studied the catalysts used in making fertiliser "
                  f"and published more than {w.rng.randint(40, 200)} papers. "
                  f"{possessive.capitalize()} best-known result raised the "
                  f"yield of one reaction from 3.5 to 11.2 percent."),
      "architect": (f"{pronoun} designed schools, libraries and the railway "
                    f"station of {town}, using brick and large windows. "
                    f"Several of {possessive} buildings are now protected."),
      "novelist": (f"{pronoun} published {w.rng.randint(4, 20)} novels, most "
                   f"of them set in small fishing towns. The third, "
                   f"''The {w.pick(['Salt', 'Winter', 'Harbour', 'Lantern'])} "
                   f"{w.pick(['Year', 'House', 'Road', 'Keeper'])}'', was "
                   f"translated into twelve languages."),
      "engineer": (f"{pronoun} worked on the design of harbours and "
                   f"breakwaters, e.g. the new port of {w.place()}, and "
                   f"later taught at the technical university."),
  }
  early = w.pick([
      f"{first} was born in [[{town}]], the {w.pick(BIRTH_ORDER)}"
      f" child of a {w.pick(PARENT_JOBS)}.",
      f"{last} grew up in {town}, where {possessive} family ran a shop on the "
      f"market square.",
  ]) + " " + w.pick([
      f"{pronoun} attended the grammar school in {w.place()} and went on to "
      f"study at the university in the capital.",
      f"{pronoun} left school at fifteen and trained as an apprentice before "
      f"taking evening classes.",
  ])
  personal = w.pick([
      f"{last} married {w.person()} in {year + w.rng.randint(22, 35)}; they "
      f"had {w.pick(['one child', 'two children', 'three children'])}.",
      f"{pronoun} never married and lived for most of {possessive} life in a "
      f"house overlooking the harbour.",
  ])
  death = ("" if alive else
           f"\n\n== Death and legacy ==\n{last} died in {w.place()} in "
           f"{died_year}. " + w.pick([
               f"A street in {town} bears {possessive} name.",
               f"{possessive.capitalize()} papers are kept in the national "
               f"library.",
               f"A prize in {possessive} name has been awarded since "
               f"{died_year + 5}.",
           ]))
  text = (f"{{{{Infobox person\n| name = {name}\n| birth_date = {born}\n"
          f"| occupation = {profession}\n}}}}\n{lead}{w.ref()}\n\n"
          f"== Early life ==\n{early}\n\n== Career ==\n"
          f"{career_by_profession[profession]}\n\n== Personal life ==\n"
          f"{personal}{death}\n\n== References ==\n{{{{Reflist}}}}\n\n"
          f"[[Category:{year} births]]\n")
  return name, text


def ship(w):
  """A ship: design, service, fate."""
  name = w.unique(lambda: f"SS {w.place()}")
  kind = w.pick(SHIP_TYPES)
  launched = w.rng.randint(1850, 1975)
  tonnage = w.rng.randint(300, 12000)
  length = round(w.rng.uniform(30, 160), 1)
  yard = w.place()
  lead = (f"'''{name}''' was a {kind} built in {launched} at the "
          f"{yard} shipyard. She measured {tonnage:,} gross register tons.")
  design = (f"The ship was {{{{convert|{length}|m}}}} long. " + w.pick([
      "She was driven by a triple-expansion steam engine and a single "
      "screw.",
      "She carried three masts and could set more than twenty sails.",
      "Her diesel engines gave her a service speed of 14.5 knots.",
  ]) + " " + w.pick([
      f"Accommodation was provided for {w.rng.randint(20, 600)} passengers.",
      "Her holds were fitted for refrigerated cargo.",
      "She was one of the first ships of her size to be lit by electricity.",
  ]))
  service = w.pick([
      f"For most of her career she sailed between {w.place()} and "
      f"{w.place()}, carrying mail, passengers and general cargo.",
      f"She was chartered by the U.S. government in "
      f"{launched + w.rng.randint(2, 20)} to carry supplies.",
      f"She served as a training ship for cadets from {launched + 12}.",
  ])
  fate = w.pick([
      f"She ran aground in fog off {w.place()} in "
      f"{launched + w.rng.randint(5, 40)}; all on board were rescued.",
      f"She was sold for scrap in {launched + w.rng.randint(20, 45)}.",
      f"She was sunk by a mine in {launched + w.rng.randint(3, 30)}.",
  ])
  text = (f"{{{{Infobox ship\n| name = {name}\n| launched = {launched}\n}}}}"
          f"\n{lead}{w.ref()}\n\n== Design ==\n{design}\n\n== Service ==\n"
          f"{service}\n\n== Fate ==\n{fate}\n\n[[Category:Ships built in "
          f"{launched}]]\n")
  return name, text


def minor_planet(w):
  """A minor planet: orbit with decimals, size, naming."""
  number = w.rng.randint(1200, 99000)
  honoree = w.person()
  name = w.unique(lambda: f"{number} {honoree.split()[1]}")
  found, year = w.date(1920, 2015)
  axis = round(w.rng.uniform(1.9, 3.4), 2)
  ecc = round(w.rng.uniform(0.01, 0.3), 3)
  period = round(axis ** 1.5, 2)
  diameter = round(w.rng.uniform(1.5, 40), 1)
  lead = (f"'''{name}''' is a minor planet of the main [[asteroid belt]], "
          f"about {diameter} kilometres across. It was discovered on {found} "
          f"at the {w.place()} Observatory.")
  orbit = (f"It orbits the Sun at a distance of {axis - 0.3:.2f} to "
           f"{axis + 0.3:.2f} AU once every {period} years. Its orbit has an "
           f"eccentricity of {ecc} and an inclination of "
           f"{round(w.rng.uniform(0.5, 20), 1)} degrees with respect to the "
           f"ecliptic.")
  physical = w.pick([
      f"Its rotation period, measured from changes in its brightness, is "
      f"{round(w.rng.uniform(2.5, 30), 2)} hours.",
      "Its surface is dark and probably rich in carbon.",
      "It is a stony asteroid with a moderately high albedo.",
  ])
  naming = (f"The minor planet was named after {honoree}, " + w.pick([
      "a teacher who founded an amateur astronomy society.",
      "an astronomer known for measuring the light of variable stars.",
      "the designer of the telescope used in the discovery.",
  ]))
  text = (f"{lead}\n\n== Orbit ==\n{orbit}\n\n== Physical characteristics ==\n"
          f"{physical}\n\n== Naming ==\n{naming}\n\n[[Category:Minor planets "
          f"discovered in {year}]]\n")
  return name, text


def album(w):
  """An album: recording, track list, reception."""
  artist = w.pick([w.person(), f"The {w.place()} {w.pick(GROUP_KINDS)}"])
  title = w.unique(lambda: w.pick(["", "The ", "Songs of ", "After the "]) +
                   f"{w.pick(ALBUM_WORDS_A)} {w.pick(ALBUM_WORDS_B)}")
  year = w.rng.randint(1962, 2022)
  genre = w.pick(GENRES)
  article = "an" if genre[0] in "aeiou" else "a"
  lead = (f"''{title}'' is {article} {genre} album by {artist}, released in "
          f"{year}. "
          + w.pick([
              "It was recorded in a single week with few overdubs.",
              "It was the first of their records to reach the national chart.",
              "It was produced by the band themselves.",
          ]))
  recording = w.pick([
      f"Recording took place in {w.place()} during the winter of {year - 1}.",
      f"The songs were written on tour and first played live in {year - 1}.",
  ]) + " " + w.pick([
      f"A {w.pick(INSTRUMENTS)} and a small string section were added to "
      "several tracks.",
      "Most of the vocals were recorded in one take.",
  ])
  tracks = "\n".join(f"# \"{w.pick(SONG_WORDS_A)} "
                     f"{w.pick(SONG_WORDS_B)}\" – "
                     f"{w.rng.randint(2, 6)}:{w.rng.randint(0, 59):02d}"
                     for _ in range(4))
  reception = w.pick([
      "Critics praised the arrangements but found the second half weaker.",
      f"It received generally favourable reviews and sold about "
      f"{w.rng.randint(10, 400) * 1000:,} copies in its first year.",
      "Reviews were mixed, although the album was later reassessed more "
      "warmly.",
  ])
  text = (f"{{{{Infobox album\n| name = {title}\n| artist = {artist}\n"
          f"| released = {year}\n}}}}\n{lead}\n\n== Recording ==\n{recording}"
          f"\n\n== Track listing ==\n{tracks}\n\n== Reception ==\n{reception}"
          f"\n\n[[Category:{year} albums]]\n")
  return title, text


FAMILIES = [settlement, settlement, river, species, species, biography,
            biography, ship, minor_planet, album]


def page_xml(page_id, title, text, ns=0, redirect=None):
  """One <page> element of a MediaWiki export."""
  redirect_xml = (f'    <redirect title="{escape(redirect)}" />\n'
                  if redirect else "")
  return (f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n"
          f"    <id>{page_id}</id>\n{redirect_xml}    <revision>\n"
          f"      <id>{page_id * 10 + 7}</id>\n"
          f"      <timestamp>2024-06-01T00:00:00Z</timestamp>\n"
          f"      <model>wikitext</model>\n      <format>text/x-wiki</format>\n"
          f"      <text bytes=\"{len(text.encode('utf-8'))}\" "
          f"xml:space=\"preserve\">{escape(text)}</text>\n"
          f"    </revision>\n  </page>\n")


def build_pages(seed, num_generated):
  """Every page of the dump, in order: (title, text, ns, redirect)."""
  pages = [(t, x, 10, None) for t, x in handwritten.TEMPLATES]
  pages += [(t, x, 0, None) for t, x in handwritten.ARTICLES]
  writer = Writer(seed)
  writer.titles.update(t for t, _ in handwritten.ARTICLES)
  for i in range(num_generated):
    title, text = FAMILIES[i % len(FAMILIES)](writer)
    pages.append((title, text, 0, None))
  pages += [(t, f"#REDIRECT [[{target}]]\n", 0, target)
            for t, target in handwritten.REDIRECTS]
  pages += [(t, x, 0, None) for t, x in handwritten.DISAMBIGUATION]
  return pages


def dump_xml(seed, num_generated):
  """The whole MediaWiki export as UTF-8 bytes."""
  pages = build_pages(seed, num_generated)
  xml = SITEINFO + "".join(
      page_xml(i + 1, title, text, ns, redirect)
      for i, (title, text, ns, redirect) in enumerate(pages)) + "</mediawiki>\n"
  return xml.encode("utf-8")
