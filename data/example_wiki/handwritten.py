"""Hand-written articles of the example dump: original prose in wiki markup.

Every article, place, person and work here is written for this project (the
places and people are fictional or described in general terms); nothing is
copied from Wikipedia. Each entry is (title, wikitext).
"""

TEMPLATES = [
    ("Template:Convert", "{{{1}}} {{{2}}}"),
    ("Template:Reflist", "<references />"),
    ("Template:Lang", "{{{2}}}"),
    ("Template:Nowrap", "{{{1}}}"),
    ("Template:Circa", "around {{{1}}}"),
    ("Template:Sfn", ""),
    ("Template:Main", ""),
    ("Template:Disambiguation", ""),
    ("Template:Citation needed", ""),
    ("Template:Short description", ""),
    ("Template:Use dmy dates", ""),
]

ARTICLES = [
    ("Tidal mill", """{{Short description|Water mill driven by the rise and fall of the tide}}
{{Use dmy dates|date=March 2023}}
[[File:Tide mill sketch.png|thumb|right|A tide mill with its pond behind the dam]]
A '''tidal mill''' (also '''tide mill''') is a [[water mill]] that is driven by the rise and fall of the [[tide]]. A dam with a sluice gate is built across a creek or estuary, and the water that flows in on the rising tide is held back in a mill pond. When the tide has fallen far enough, the stored water is let out through a [[water wheel]], which turns the millstones.<ref name="coastal">{{cite book |last=Orrin |first=Thea |title=Mills of the Tidal Coast |year=1994 |page=12}}</ref>

Because a tidal mill can only work while the water level outside is lower than the pond, the miller's hours followed the tide rather than the sun. A mill could typically grind for four to six hours in each tidal cycle, so work often began in the middle of the night.

== History ==
{{Main|History of milling}}
The earliest tidal mills known from archaeology date to the early medieval period, when timber dams and simple horizontal wheels were used on sheltered inlets. Excavated timbers have been dated by [[dendrochronology]], the counting and matching of tree rings, which can give the year in which a tree was felled.

During the eighteenth century larger mills with vertical wheels were built near ports, where grain arrived by ship and flour could be sent on by the same route. Several of these buildings still stand, e.g. as museums, and a few have been restored to working order.<ref>Keble, R. (2009). "Restoring a tide mill". ''Industrial Heritage Review'' '''31''': 45–60.</ref>

=== Decline ===
Steam power, and later electric motors, freed millers from the timetable of the tide. By the early twentieth century most tidal mills had closed, and many mill ponds were drained for housing or silted up.

== Operation ==
The pond fills through gates that open by themselves under the pressure of the incoming water and close again when the tide turns. The miller then waits until the level outside has dropped by about {{convert|1.5|m}}, the usual working head, before opening the sluice.
* An undershot wheel is turned by water striking its lower blades.
* A breastshot wheel receives the water at about the height of its axle.
* Some later mills used small turbines instead of wheels.

The power available depends on the area of the pond and on the tidal range. A pond of two hectares with a range of 3.5 metres can drive two pairs of stones for most of a working day.

== See also ==
* [[Tidal power]]
* [[Watermill]]

== References ==
{{Reflist}}

[[Category:Watermills]]
[[Category:Tidal power]]
"""),

    ("Honey bee navigation", """'''Honey bee navigation''' is the set of methods by which a [[honey bee]] finds its way between the hive and sources of food, often several kilometres apart. Bees combine information from the position of the [[Sun]], the pattern of [[polarized light]] in the sky, landmarks on the ground and the distance they have flown.

== Sun compass ==
A foraging bee keeps track of the angle between its flight path and the direction of the sun. Because the sun moves across the sky during the day, the bee must correct this angle with time, and experiments show that bees do so even after being kept in a dark box for several hours. When the sun is hidden by cloud, bees can still read the direction from small patches of blue sky, where the light is partly polarized.

== Measuring distance ==
Bees estimate how far they have flown by the amount of image motion that passes across their eyes, a quantity sometimes called optic flow. In a narrow tunnel lined with a dense pattern, bees overestimate distance, and when they return to the hive they report a source that appears much farther away than it is.<ref>Merrow, D.; Lindqvist, A. (2001). "Optic flow and the honey bee odometer". ''Journal of Insect Behaviour'' '''14''' (3): 211–225.</ref>

== The waggle dance ==
A bee that has found a good source of nectar communicates its location to other workers by dancing on the vertical surface of the comb. During the straight part of the dance the bee shakes its abdomen from side to side. The angle of this run relative to the vertical shows the direction of the food relative to the sun, and its length shows the distance. Recruits that follow the dance leave the hive and search in the indicated region, using scent to find the exact spot.

Researchers have decoded dances recorded on video to map where a colony forages over a whole season. Such maps show that colonies in cities often travel shorter distances than colonies in farmland, because gardens provide flowers for more of the year.

== Landmarks ==
Close to the hive, and near a familiar food source, bees rely on learned views of the surroundings. A bee leaving a new site often performs a short orientation flight, turning back to face the site while flying in widening arcs. It appears to store snapshots that it later compares with what it sees.

[[Category:Bees]]
[[Category:Animal navigation]]
"""),

    ("Brennock Viaduct", """{{Infobox bridge
| name = Brennock Viaduct
| carries = Railway
| crosses = Ouden valley
| length = {{convert|412|m}}
| spans = 19
| opened = 1868
}}
The '''Brennock Viaduct''' is a disused [[railway]] [[viaduct]] of nineteen brick arches that crosses the valley of the River Ouden near the village of Brennock. It was built between 1864 and 1868 for a branch line that carried slate and passengers to the coast, and it is now a protected structure that forms part of a walking and cycling route.

== Construction ==
The engineer, Dr. Walter Penhale, chose brick rather than iron because clay was dug and fired close to the site, and the company had little money to spare. Some two million bricks were made in temporary kilns on the valley floor. The tallest pier rises {{convert|31|m}} above the river, and the piers were built hollow to save material.

Work was delayed in the winter of 1865, when floods carried away the wooden centring of three arches. The contractor then changed the order of construction so that no arch was left standing on its centring during the wet season.<ref>Penhale, W. (1869). ''Account of the Brennock Viaduct''. Minutes of Proceedings, vol. 28.</ref>

== Operation and closure ==
Passenger trains crossed the viaduct for almost a century. Traffic fell after the slate quarries closed, and the line was shut in 1963. For twenty years the structure was left without maintenance; trees took root in the parapets, and water leaking through the deck damaged several arches.

== Restoration ==
A local trust was formed in 1987 to save the viaduct from demolition. Between 1992 and 1997 the deck was waterproofed, the vegetation removed and the damaged brickwork replaced with bricks made to match the originals. The path across the top was opened on 14 June 1997.

Today the viaduct is used by about 60,000 walkers and cyclists a year. Bats roost in the hollow piers, and access to them is restricted during the breeding season.

== See also ==
* [[List of railway viaducts]]

== References ==
{{Reflist}}

[[Category:Railway viaducts]]
[[Category:Bridges completed in 1868]]
"""),

    ("Fermentation of cabbage", """'''Fermentation of cabbage''' is a method of preserving cabbage in which [[lactic acid bacteria]] that live naturally on the leaves convert the sugars of the plant into [[lactic acid]]. The acid lowers the [[pH]] of the food below about 4.0, which stops the growth of most organisms that cause spoilage. Similar methods are used across much of Europe and Asia, and the products differ mainly in the vegetables, spices and salt content used.

== Process ==
The cabbage is shredded or cut into pieces and mixed with salt, usually between 1.5 and 2.5 percent of its weight. The salt draws water out of the leaves to form a brine, and it also slows the growth of bacteria that cannot tolerate it. The mixture is packed tightly into a crock or jar so that the leaves stay below the surface of the brine, away from the air.

Fermentation proceeds in stages. In the first days, bacteria that produce gas as well as acid are most active, and bubbles rise through the brine. As the acidity increases, species that tolerate stronger acid take over and make the brine more acidic still. At a cellar temperature of about {{convert|18|°C}}, the product is usually ready after three to six weeks.

== Problems ==
A soft texture is most often caused by too little salt or too warm a temperature. Pink colour can result from yeasts that grow when salt is unevenly distributed. White film yeast on the surface is common and is usually harmless, although it may spoil the flavour if left.
* Keep the vegetables submerged.
* Use salt without iodine or anti-caking agents.
* Keep the vessel at a steady, cool temperature.

== Nutrition ==
Fermented cabbage keeps much of the [[vitamin C]] of the fresh vegetable, which made it valuable on long sea voyages before fresh fruit could be carried. It is low in energy and high in sodium because of the added salt.

[[Category:Fermented foods]]
[[Category:Cabbage dishes]]
"""),

    ("Cirrus cloud", """'''Cirrus''' is a genus of high [[cloud]] made of ice crystals, seen as thin white filaments, tufts or bands. Cirrus forms at altitudes of roughly 5 to 13 kilometres in the middle latitudes, where the air is well below freezing. Its name comes from the Latin word for a curl of hair.

== Formation ==
Cirrus forms when water vapour freezes directly into ice in rising air, or when the ice of a decaying storm cloud spreads out at high level. The long streaks, known as fall streaks, are crystals that have grown large enough to fall into slower air below, where they are drawn out sideways by the change of wind speed with height.

The crystals are often hexagonal plates or columns. Sunlight passing through them is bent in regular ways, which produces halos, arcs and bright spots beside the sun called sun dogs.

== Weather ==
A sky that fills gradually with cirrus, followed by thicker sheets of cirrostratus, often shows that a [[warm front]] is approaching and that rain may arrive within a day. Isolated tufts in an otherwise clear sky have little value for forecasting.

== Climate ==
Because cirrus is thin, it lets most sunlight through but absorbs heat radiated from the surface below. Its overall effect is therefore to warm the climate slightly, in contrast to low, thick clouds, which reflect sunlight and cool it. Trails left by aircraft can spread into cirrus-like sheets, and researchers continue to study how much they add to this warming.<ref>Aldana, P. (2015). "Contrail cirrus and radiative forcing". ''Atmospheric Letters'' '''9''': 77–84.</ref>

== References ==
{{Reflist}}

[[Category:Clouds]]
"""),

    ("Mirela Tosk", """{{Infobox person
| name = Mirela Tosk
| birth_date = 12 April 1931
| birth_place = Varnholm
| death_date = 3 November 2009
| occupation = Astronomer
}}
'''Mirela Tosk''' (12 April 1931 – 3 November 2009) was an astronomer who studied [[variable star]]s and who built one of the first automated photometers used at a small observatory. She spent most of her career at the Varnholm Observatory, where she directed the programme of observations for twenty-two years.

== Early life and education ==
Tosk was born in Varnholm, the second of four children of a schoolteacher and a clockmaker. She later said that her father's workshop taught her more about instruments than any lecture. She studied physics at the university of her home province and received her doctorate in 1958 for a thesis on the light curves of eclipsing binaries.

== Career ==
After a period as an assistant at a larger observatory abroad, Tosk returned to Varnholm in 1962. The observatory's telescope was old, and its staff could observe only a few stars each night. Tosk designed a photometer that moved from star to star on a programmed sequence and recorded the brightness on punched tape. With it, the observatory measured more than three hundred stars a night.

Her measurements of short-period variables were used by many other astronomers, e.g. to test models of pulsating stars. She was elected to her national academy of sciences in 1979 and was awarded its gold medal in 1991.

== Personal life ==
Tosk married the engineer Anton Reel in 1960; they had two sons. She was a keen sailor and took part in coastal races until her seventies.

== Legacy ==
An asteroid discovered in 1994 was named in her honour. The photometer she designed is on display in the observatory's visitor centre.

[[Category:1931 births]]
[[Category:2009 deaths]]
[[Category:Astronomers]]
"""),

    ("Dry stone wall", """A '''dry stone wall''' is a wall built of stones without any [[mortar (masonry)|mortar]] to bind them. The stability of the wall comes from the careful selection and placing of each stone, from the batter (the inward slope of its faces) and from the weight of the stones above. Dry stone walls are common in upland farming regions where stone is plentiful and timber for fences is scarce.

== Construction ==
A typical field wall is built as two faces of carefully placed stones, with the space between them filled with smaller stones called hearting. Long stones known as throughs are laid across the full width of the wall at intervals to tie the two faces together. The top is finished with a row of upright or sloping coping stones.

The foundation is laid in a shallow trench on firm ground, using the largest stones. Each stone is set so that it touches the stones below at two or more points, and the joints are crossed, that is, each stone sits over a joint in the course beneath. A skilled waller can build about three metres of a wall of average height in a day.

== Repair ==
Walls fail most often where the hearting has settled, allowing the faces to bulge, or where frost, animals or tree roots have displaced stones. A collapse is repaired by taking down the wall on either side to sound work and rebuilding the whole section, since patching the face alone rarely lasts.

== Ecology ==
The gaps between the stones shelter insects, spiders, small mammals and reptiles, and the shaded side of a wall is often covered in mosses and lichens. In some regions, old walls hold rare ferns that grow nowhere else nearby.

[[Category:Masonry]]
[[Category:Agricultural buildings]]
"""),

    ("The Glass Orchard", """{{Infobox album
| name = The Glass Orchard
| type = studio
| artist = Hollis Fane
| released = 1978
| genre = Folk rock
| length = 41:12
}}
'''''The Glass Orchard''''' is the third studio album by the singer and songwriter Hollis Fane, released in 1978. It was recorded over six weeks in a converted barn, with a small band and a string quartet that played on four of its ten songs. The album was a modest commercial success at first but later came to be regarded as Fane's best work.

== Background ==
After the tour for her second album, Fane moved to the countryside and wrote most of the songs while restoring an old farmhouse. She has said that the title came from the sight of frost on the branches of an apple tree early one morning.

== Recording ==
The producer, Leon Marsh, wanted the album to sound like a group playing together in one room. Most of the basic tracks were recorded live, with the vocals and strings added afterwards. The barn's wooden walls gave the recordings a warm sound, but rain on the roof forced the band to stop work on several days.

== Track listing ==
# "Frost on the Bough" – 4:02
# "Harbour Lights" – 3:47
# "The Ferryman's Daughter" – 5:11
# "Glass Orchard" – 4:36

== Reception ==
Reviews at the time of release were mixed. One critic praised the songwriting but thought the string arrangements were too sweet, while another called the album "quiet, patient and very sure of itself". In later decades it appeared in several lists of the best folk records of the 1970s, and it was reissued with previously unreleased recordings in 2008.

[[Category:1978 albums]]
[[Category:Folk rock albums]]
"""),

    ("Salt marsh", """A '''salt marsh''' is a coastal [[wetland]] that is flooded and drained by salt water brought in by the tides. It is covered with dense stands of salt-tolerant plants such as grasses, rushes and low shrubs. Salt marshes form in sheltered places, e.g. behind spits, in estuaries and on the landward side of barrier islands, where fine sediment can settle.

== Zonation ==
Plants in a salt marsh are arranged in bands according to how often they are covered by the sea. The lowest zone, flooded twice a day, holds only a few pioneer species that can trap mud with their roots. Higher up, where flooding happens only at the highest tides, a greater variety of plants grows, and the upper edge merges into freshwater marsh or grassland.

Creeks wind through the marsh and carry the tide in and out. Their banks are often slightly higher than the marsh around them, because sediment settles as the water spills over the edge of the channel.

== Importance ==
Salt marshes are among the most productive ecosystems on Earth. They serve as nurseries for many kinds of fish and shellfish, and they feed large numbers of wading birds and wildfowl, especially in winter. The marsh plants slow the movement of water, which reduces the height of waves that reach sea walls during storms.

The soils of salt marshes store carbon that can remain buried for centuries, since waterlogged mud holds little oxygen and decay is slow. For this reason the protection and restoration of marshes are sometimes described as a way of removing carbon dioxide from the air.

== Threats ==
Large areas of marsh were drained and enclosed for farming in past centuries. Today the main threat in many places is rising sea level: where a marsh cannot move inland because of sea walls or buildings, it may be gradually squeezed out.

[[Category:Wetlands]]
[[Category:Coastal geography]]
"""),

    ("Abacus", """An '''abacus''' is a calculating tool made of beads that slide on rods or wires held in a frame. Each rod represents a place in the number being worked on, and the position of the beads shows the value of the digit. Forms of the abacus were used for trade and accounting for many centuries before written arithmetic with numerals became common, and they are still used today in some schools to teach calculation.

== Design ==
A common modern design has a horizontal bar dividing each rod into two parts. Each bead above the bar counts five, and each bead below counts one. A number is set by moving beads toward the bar. To add, the user sets the first number and then moves the beads for the second, carrying to the next rod to the left when a rod is full.

== Use in education ==
Teachers who use the abacus say that it helps children understand place value, because the value of each bead depends on the rod it sits on. Experienced users can calculate very quickly, and some learn to picture the frame in their mind and move imaginary beads without touching a real one. Competitions in mental calculation of this kind attract thousands of entrants.

== See also ==
* [[Slide rule]]
* [[Counting rods]]

[[Category:Mechanical calculators]]
"""),

    ("Lake Ferrow", """'''Lake Ferrow''' is a freshwater lake in a glacial valley, about {{convert|7.5|km}} long and up to {{convert|64|m}} deep. It is fed by several mountain streams and drained at its northern end by the River Ferrow. The lake is known for its clear water and for a small population of arctic char, a cold-water fish left behind at the end of the last ice age.

== Geography ==
The lake lies in a basin carved by a glacier and dammed at its lower end by a ridge of moraine, the rock and gravel that the ice pushed ahead of it. Steep slopes rise from the eastern shore, while the western shore is lower and partly wooded. A single island near the middle of the lake carries the ruins of a small chapel.

== Ecology ==
The water is low in nutrients, which keeps it clear but limits the number of fish it can support. Surveys in the 1990s found that the char population had fallen, probably because the water had grown warmer. Since then, sewage from lakeside houses has been piped away, and the population has partly recovered.

== Recreation ==
Boating is allowed only without engines, except for a ferry that links the two villages on the shore during the summer months. A footpath around the lake is about {{convert|19|km}} long and can be walked in a day.

[[Category:Lakes]]
"""),

    ("Chess clock", """A '''chess clock''' consists of two linked clocks with buttons that stop one clock while starting the other, so that only one player's time runs at any moment. It is used in [[chess]] and other two-player games to make sure that a game finishes in a reasonable time.

== Use ==
At the start of a game each player's clock is set to the time allowed. After making a move, a player presses the button on their own side, which stops their clock and starts the opponent's. A player whose time runs out before the end of the game normally loses, unless the opponent no longer has any way of winning.

Many tournaments add a small amount of time after every move, an increment, so that a player never has to make a move with only a second or two left. Others use a delay, in which the clock does not start to count down until a few seconds have passed.

== History ==
Before clocks were used, long games could last many hours, since there was no limit on the time a player could think. Early tournaments used sand glasses, which were awkward because a glass had to be laid on its side to stop it. Mechanical clocks with two faces became common in the late nineteenth century, and digital clocks, which can add increments automatically, replaced them in most events from the 1990s.

[[Category:Chess equipment]]
[[Category:Clocks]]
"""),
]

# Pages that WikiExtractor drops or reduces: redirects and disambiguation pages.
REDIRECTS = [
    ("Tide mill", "Tidal mill"),
    ("Dry-stone wall", "Dry stone wall"),
    ("Cirrus (cloud)", "Cirrus cloud"),
    ("Sauerkraut making", "Fermentation of cabbage"),
]

DISAMBIGUATION = [
    ("Ferrow", """'''Ferrow''' may refer to:
* [[Lake Ferrow]], a glacial lake
* [[River Ferrow]], the river that drains it
* [[Ferrow (surname)]], a family name
{{Disambiguation}}
"""),
    ("Glass Orchard", """'''Glass Orchard''' may refer to:
* ''[[The Glass Orchard]]'', a 1978 album by Hollis Fane
* "Glass Orchard", a song on that album
{{Disambiguation}}
"""),
]
