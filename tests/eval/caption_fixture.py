"""52 candidate captions, each with three to five human-style references.

Written for these tests: museum-style descriptions with the things that trip tokenisers
(contractions, possessives, brackets, numbers, hyphenated words, quotes, dashes, ellipses,
abbreviations), candidates ranging from near copies to unrelated text.
"""

from __future__ import annotations

# image id -> (candidate, references)
CAPTION_SETS: dict[str, tuple[str, list[str]]] = {
    "img-01": (
        "A red horse stands on the left of a green field.",
        [
            "A red horse standing in a green field.",
            "On the left, a chestnut horse stands on grass.",
            "A horse in a meadow under a blue sky.",
        ],
    ),
    "img-02": (
        "Peasants harvest wheat in a golden field while others rest under a tree.",
        [
            "Farm workers cut and bundle wheat; some eat lunch beneath a pear tree.",
            "A harvest scene: people reaping grain in a yellow field.",
            "Workers rest under a tree beside a field of ripe wheat.",
            "In the foreground, harvesters sleep and eat; behind them the wheat is cut.",
        ],
    ),
    "img-03": (
        "A huge wave curls over three small boats, with a snowy mountain in the distance.",
        [
            "A great wave towers over boats; Mount Fuji is small in the background.",
            "Three boats are caught under a giant curling wave.",
            "A woodblock print of a large wave with a snow-capped mountain behind it.",
        ],
    ),
    "img-04": (
        "A night sky full of swirling stars over a quiet village.",
        [
            "Swirling clouds and bright stars above a small town at night.",
            "A village sleeps under a turbulent, star-filled sky.",
            "A dark cypress tree on the left; stars swirl over the village.",
        ],
    ),
    "img-05": (
        "Two fish and a prawn lie on a dark background.",
        [
            "A horse mackerel and a prawn are drawn side by side.",
            "Two silver fish with a pink prawn (shrimp) on a plain ground.",
            "A woodblock print of fish and a prawn.",
        ],
    ),
    "img-06": (
        "Four silver coins are shown, each with a head in profile.",
        [
            "Greek coins photographed in grey; heads in profile on each.",
            "Four ancient coins showing profiles of gods.",
            "A set of coins (obverse) with portraits facing right.",
        ],
    ),
    "img-07": (
        "A medieval manuscript page shows constellations drawn as figures.",
        [
            "Pages of an astronomical manuscript with figures of the constellations.",
            "A 9th-century manuscript: figures represent stars in the sky.",
            "Two facing pages with illustrated constellations and Latin text.",
        ],
    ),
    "img-08": (
        "A woman in a blue dress reads a letter by a window.",
        [
            "A woman reads a letter near an open window.",
            "Light from the window falls on a woman in blue reading.",
            "A young woman stands reading a letter; a map hangs on the wall.",
            "A woman in a blue jacket holds a letter in both hands.",
        ],
    ),
    "img-09": (
        "The portrait shows an old man with a white beard and a black hat.",
        [
            "An elderly man with a grey beard wears a dark cap.",
            "Portrait of a bearded old man in black clothes.",
            "A man's head and shoulders; he has a white beard.",
        ],
    ),
    "img-10": (
        "It's a still life of fruit: apples, grapes and a lemon on a table.",
        [
            "Apples, grapes and a peeled lemon on a white tablecloth.",
            "A still life with fruit and a silver cup.",
            "Fruit on a table: a lemon, some grapes, two apples.",
        ],
    ),
    "img-11": (
        "A ship with white sails on a stormy sea.",
        [
            "A sailing ship is tossed by high waves in a storm.",
            "A three-masted ship with white sails under dark clouds.",
            "Stormy sea; a ship leans in the wind.",
        ],
    ),
    "img-12": (
        "A bronze statue of a man on horseback.",
        [
            "An equestrian statue in bronze on a stone pedestal.",
            "A rider on a horse, cast in bronze.",
            "A bronze horse and rider seen from the side.",
        ],
    ),
    "img-13": (
        "Children play on the ice of a frozen river near a village.",
        [
            "People skate on a frozen river in winter.",
            "A winter landscape with skaters on the ice and houses along the bank.",
            "Villagers and children on a frozen canal; bare trees on the right.",
        ],
    ),
    "img-14": (
        "A blue and white porcelain vase with painted flowers.",
        [
            "A blue-and-white vase decorated with flowers.",
            "Porcelain jar with blue floral patterns on white.",
            "A Chinese vase (Ming dynasty) painted with blue flowers.",
        ],
    ),
    "img-15": (
        "A crowded market square with stalls and people in hats.",
        [
            "A busy market: traders sell vegetables from wooden stalls.",
            "People in hats crowd a town square full of stalls.",
            "Market day in a town square, with a church behind.",
        ],
    ),
    "img-16": (
        "Water lilies float on a pond; green and purple reflections.",
        [
            "Water lilies on a pond with reflections of the sky.",
            "A pond covered with lily pads and pink flowers.",
            "Green and violet brushstrokes show lilies on water.",
        ],
    ),
    "img-17": (
        "A knight in armour kneels before a king.",
        [
            "A kneeling knight in armour before a seated king.",
            "A king on a throne knights a man in armour.",
            "An armoured man kneels; the king raises a sword.",
        ],
    ),
    "img-18": (
        "A cat sleeps on a red cushion.",
        [
            "A small cat curled up asleep on a red pillow.",
            "A sleeping cat on a crimson cushion.",
            "A grey cat naps on a red velvet cushion.",
        ],
    ),
    "img-19": (
        "Mountains rise behind a lake at sunset; the water's pink.",
        [
            "A lake reflects pink light from the sunset over the mountains.",
            "Sunset over mountains and a calm lake.",
            "Snowy peaks behind a lake; the sky is orange and pink.",
        ],
    ),
    "img-20": (
        'A text panel reads "Museum of Art, 1890" above a door.',
        [
            "A sign above the doorway says Museum of Art 1890.",
            'Carved letters over a door: "Museum of Art" and the year 1890.',
            "A stone doorway with an inscription and a date.",
        ],
    ),
    "img-21": (
        "A mother holds a baby while an angel looks on.",
        [
            "The Virgin holds the Christ child; an angel watches.",
            "A woman with a baby in her arms and an angel beside her.",
            "Madonna and child with an angel (tempera on panel).",
        ],
    ),
    "img-22": (
        "Dancers in white tutus rehearse on a stage.",
        [
            "Ballet dancers in white skirts practise on stage.",
            "Young dancers rehearse while a teacher watches.",
            "A dance class: girls in tutus stretch and wait.",
        ],
    ),
    "img-23": (
        "A wooden mask with large eyes and a long nose.",
        [
            "A carved wooden mask with round eyes.",
            "Mask of dark wood; the nose is long and the eyes are wide.",
            "A ceremonial mask made of wood, painted white around the eyes.",
        ],
    ),
    "img-24": (
        "Soldiers on horses charge across a smoky battlefield.",
        [
            "Cavalry charge through smoke on a battlefield.",
            "A battle scene: horsemen ride into cannon smoke.",
            "Mounted soldiers with sabres attack across a field.",
            "Horses and riders rush forward; smoke fills the sky.",
        ],
    ),
    "img-25": (
        "a bridge over a river in the rain",
        [
            "People cross a bridge in heavy rain.",
            "A wooden bridge over a river during a sudden shower.",
            "Rain falls on travellers crossing a bridge.",
        ],
    ),
    "img-26": (
        "A gold crown set with red and green jewels.",
        [
            "A golden crown with rubies and emeralds.",
            "A jewelled gold crown on a velvet cushion.",
            "Crown of gold decorated with coloured stones.",
        ],
    ),
    "img-27": (
        "A landscape with cows grazing near a windmill.",
        [
            "Cows graze in a meadow; a windmill stands behind them.",
            "A Dutch landscape with cattle and a windmill.",
            "Flat fields, cows and a windmill under a cloudy sky.",
        ],
    ),
    "img-28": (
        "An empty room with a chair and an open door.",
        [
            "A bare room; a single chair stands near an open door.",
            "An interior with a wooden chair and a doorway.",
            "Sunlight falls through an open door into an empty room.",
        ],
    ),
    "img-29": (
        "A man plays a violin (or a fiddle) in a tavern.",
        [
            "A fiddler plays for people drinking in an inn.",
            "A man with a violin entertains a tavern crowd.",
            "Peasants dance while a musician plays the fiddle.",
        ],
    ),
    "img-30": (
        "A map of the world with sea monsters in the oceans.",
        [
            "An old world map decorated with sea creatures.",
            "A 16th-century map; monsters swim in the seas.",
            "A map showing continents and ships and whales.",
        ],
    ),
    "img-31": (
        "A young girl with a pearl earring looks over her shoulder.",
        [
            "A girl wearing a blue and yellow turban and a pearl earring.",
            "A girl turns her head toward the viewer; she wears a pearl.",
            "Portrait of a girl with a large pearl earring, dark background.",
        ],
    ),
    "img-32": (
        "Two women sit at a table drinking tea.",
        [
            "Two ladies take tea at a small table.",
            "Women in long dresses drink tea in a parlour.",
            "A tea party: two women with cups at a round table.",
        ],
    ),
    "img-33": (
        "A tiger hides in tall grass in a jungle.",
        [
            "A tiger crouches in a dense jungle.",
            "A striped tiger among leaves and flowers.",
            "In a tropical forest a tiger is surprised by a storm.",
        ],
    ),
    "img-34": (
        "A sword with a decorated hilt lies on black cloth.",
        [
            "A sword with an ornate hilt on a dark cloth.",
            "Steel blade and a gilded handle.",
            "An ornate sword, its hilt covered in engraving.",
        ],
    ),
    "img-35": (
        "The cathedral's facade has two towers and a round window.",
        [
            "A Gothic cathedral front with twin towers and a rose window.",
            "Two towers frame a large round stained-glass window.",
            "The west facade of a cathedral, seen from the square.",
        ],
    ),
    "img-36": (
        "A man in a boat fishes on a misty lake.",
        [
            "A fisherman in a small boat on a foggy lake.",
            "Mist covers the lake; a lone man fishes from a boat.",
            "A boat with a fisherman, trees fading into fog.",
        ],
    ),
    "img-37": (
        "A clay pot with black geometric patterns.",
        [
            "A ceramic pot decorated with black zigzags.",
            "An earthenware jar with geometric designs in black paint.",
            "A round clay vessel painted with lines and triangles.",
        ],
    ),
    "img-38": (
        "Sunflowers in a yellow vase.",
        [
            "A vase of sunflowers on a yellow table.",
            "Yellow sunflowers, some wilting, in a clay vase.",
            "Still life: fifteen sunflowers in a vase.",
        ],
    ),
    "img-39": (
        "A street at night, lit by gas lamps... people walk under umbrellas.",
        [
            "A rainy Paris street with people holding umbrellas.",
            "Pedestrians with umbrellas on a wet street; lamps glow.",
            "A city street in the rain at dusk.",
        ],
    ),
    "img-40": (
        "A group of men in black suits stand in a row.",
        [
            "Several men in dark coats pose in a line.",
            "A group portrait: men in black, standing side by side.",
            "Members of a guild in black clothes with white collars.",
        ],
    ),
    "img-41": (
        "An elephant carved from ivory.",
        [
            "A small ivory carving of an elephant.",
            "An elephant figurine made of ivory.",
            "Carved ivory elephant with raised trunk.",
        ],
    ),
    "img-42": (
        "A garden with a fountain, hedges and statues.",
        [
            "A formal garden with clipped hedges and a fountain.",
            "Statues line the paths of a garden around a fountain.",
            "A palace garden; water jets from a fountain in the centre.",
        ],
    ),
    "img-43": (
        "A rooster crows on a fence at dawn.",
        [
            "A rooster stands on a wooden fence in the morning.",
            "A cockerel on a fence post, the sun rising behind.",
            "A colourful rooster perched on a fence.",
        ],
    ),
    "img-44": (
        "A woman wearing a kimono holds a fan.",
        [
            "A Japanese woman in a patterned kimono with a fan.",
            "A woman in a red kimono raises a folding fan.",
            "Portrait of a woman in a kimono holding an open fan.",
        ],
    ),
    "img-45": (
        "Two boys eat melon and grapes; one looks at the viewer.",
        [
            "Two boys eating grapes and melon.",
            "Street children share fruit: a melon and grapes.",
            "Boys in ragged clothes eat fruit; one turns to us.",
        ],
    ),
    "img-46": (
        "A tapestry shows a unicorn inside a round fence.",
        [
            "A unicorn sits in a small circular fence among flowers.",
            "Tapestry: a white unicorn in an enclosure, millefleur background.",
            "The captive unicorn, woven in wool and silk.",
        ],
    ),
    "img-47": (
        "An astronaut floats above the Earth.",
        [
            "A helmet and gloves on a table.",
            "A still life of a helmet.",
            "Armour pieces laid out on cloth.",
        ],
    ),
    "img-48": (
        "Harbour at dawn: boats, cranes & warehouses -- all in grey.",
        [
            "A grey harbour at dawn with boats and cranes.",
            "Warehouses and cranes line a misty port; boats wait.",
            "Early morning in a port, everything in grey tones.",
        ],
    ),
    "img-49": (
        "A king's portrait, c. 1650, in oil on canvas.",
        [
            "Portrait of a king in ermine robes, oil on canvas (about 1650).",
            "A king stands in a red robe holding a sceptre.",
            "A royal portrait from the 17th century.",
        ],
    ),
    "img-50": (
        "Mr. Turner's painting of a train crossing a bridge in the rain.",
        [
            "A steam train crosses a bridge through rain and mist.",
            "A locomotive rushes over a viaduct in a storm.",
            "Rain, steam and speed: a train on a bridge.",
        ],
    ),
    "img-51": (
        "A skull, a candle and books on a table: a vanitas.",
        [
            "A vanitas still life with a skull, books and a snuffed candle.",
            "A skull rests on old books beside a candle.",
            "Symbols of death: skull, candle, hourglass and books.",
        ],
    ),
    "img-52": (
        "There isn't much here: a white canvas with one black square.",
        [
            "A black square on a white ground.",
            "A single black square painted on white canvas.",
            "An abstract painting: a black square, cracked paint.",
            "Black square, white border.",
        ],
    ),
}
