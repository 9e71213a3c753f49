"""Generated, labelled English prompts for the offline demo: reviews, news-like topic sentences
and general text, produced here from a seed (no download, no copied corpus).

Why not a few templates x word lists: with uniform prompts most of the variance between
prompts is *which slot word was drawn*, so any bag-of-words representation explains it. A
random-initialised transformer's last token is close to such a bag of words (random attention
averages the random token embeddings), and a mean-pooled sentence encoder is largely one too,
so the untrained control then matched MiniLM better than the real SmolLM2 did, and a single
adjective decided the sentiment label (probe accuracy 1.00). So each generator here

- expresses its latent factors (sentiment, topic, what happens to whom) through many
  different words, and reuses the same words across factors (``good`` in negative reviews via
  negation, ``record``, ``team``, ``test``, ``market``, ``season`` in several topics), so that
  only a model that reads meaning, not one that hashes tokens, sees the shared structure;
- composes clauses (negation, concession, contrast, a verdict after a mixed start) so that a
  label is a function of the whole sentence, not of one word;
- varies syntax, punctuation, final token and length (one to three sentences, about 5 to 50
  words), like real text.

Measured on the demo store (1,800 prompts): the control's best CKA with MiniLM fell from 0.79
(above SmolLM2's 0.72) to 0.36 (below SmolLM2's 0.62), and SmolLM2's sentiment probe from a
trivial 1.00 to 0.83 (MiniLM's mean pooling 0.66, the control 0.58, a bag-of-words logistic
regression 0.72; SST-2 gives SmolLM2 0.79).

Each generator draws from its own ``random.Random("<set>-<seed>")`` only (a string seed is
hashed with SHA-512, not with Python's salted ``hash``), so the sets are identical on every
machine and run; prompts within a set are distinct. Nothing here imports the
rest of the project.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# ----------------------------------------------------------------------------- shared pools

_NAMES = [
    "Anna",
    "Ben",
    "Chloe",
    "Daniel",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Isabel",
    "Jonas",
    "Kemi",
    "Leo",
    "Maya",
    "Nikolai",
    "Olivia",
    "Pedro",
    "Quinn",
    "Rosa",
    "Samir",
    "Tara",
    "Uma",
    "Victor",
    "Wen",
    "Yusuf",
    "Zoe",
    "Mr. Patel",
    "Mrs. Okafor",
    "Dr. Lindqvist",
    "my uncle",
    "our neighbour",
    "the new teacher",
    "a young nurse",
    "the old fisherman",
    "my sister",
    "a student from Lyon",
    "the bus driver",
]
_PLACES = [
    "Lisbon",
    "Nairobi",
    "Osaka",
    "a small village in Wales",
    "the old harbour",
    "the city library",
    "the train station",
    "a mountain hut",
    "the market square",
    "the hospital",
    "a quiet suburb",
    "the university",
    "Toronto",
    "Cairo",
    "the coast",
    "the north of Norway",
    "a farm near Kraków",
    "the airport",
    "Buenos Aires",
    "the town hall",
    "a crowded ferry",
    "the botanical garden",
]
_TIMES = [
    "yesterday",
    "last week",
    "this morning",
    "in 1987",
    "after the storm",
    "every Sunday",
    "at midnight",
    "during the winter",
    "two years ago",
    "before breakfast",
    "in the spring of 2011",
    "on her birthday",
    "late on Friday",
    "for the first time",
    "once a month",
    "at dawn",
    "last summer",
    "in the end",
]


def _cap(s: str) -> str:
    return s[0].upper() + s[1:] if s else s


def _plural(np_: str) -> bool:
    """Whether a noun phrase of the pools here is plural ("the onions", "the children"; not
    "a pair of boots")."""
    last = np_.split()[-1]
    return " of " not in np_ and (last == "children" or (last.endswith("s") and not last.endswith("ss")))


def _be(np_: str, verb: str) -> str:
    """``verb`` agreed with ``np_``: was/were, is/are; other verbs unchanged."""
    if _plural(np_):
        return {"was": "were", "is": "are"}.get(verb, verb)
    return verb


def _distinct(
    n: int, rng: random.Random, make: Callable[[random.Random], tuple[str, int | None]], what: str
) -> list[tuple[str, int | None]]:
    """``n`` distinct (text, label) rows from ``make``; a ValueError if the generator runs dry."""
    seen: set[str] = set()
    rows: list[tuple[str, int | None]] = []
    tries = 0
    while len(rows) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise ValueError(f"the {what} generator gave only {len(rows)} distinct prompts of {n} asked")
        text, label = make(rng)
        if text not in seen:
            seen.add(text)
            rows.append((text, label))
    return rows


# ----------------------------------------------------------------------------- sentiment

_DOMAINS: dict[str, tuple[list[str], list[str]]] = {
    "film": (
        ["film", "movie", "documentary", "thriller", "comedy", "sequel", "animated feature", "war drama"],
        [
            "the acting",
            "the script",
            "the soundtrack",
            "the ending",
            "the pacing",
            "the dialogue",
            "the camera work",
            "the plot",
            "the lead performance",
            "the special effects",
            "the first hour",
        ],
    ),
    "restaurant": (
        ["restaurant", "bistro", "diner", "cafe", "pizzeria", "noodle bar", "steakhouse", "tapas bar"],
        [
            "the service",
            "the food",
            "the dessert",
            "the wine list",
            "the portions",
            "the staff",
            "the atmosphere",
            "the bill",
            "the pasta",
            "the coffee",
            "the main course",
        ],
    ),
    "hotel": (
        ["hotel", "hostel", "guesthouse", "resort", "inn", "holiday flat", "bed and breakfast"],
        [
            "the room",
            "the bed",
            "the breakfast",
            "the view",
            "the front desk",
            "the pool",
            "the location",
            "the wifi",
            "the shower",
            "the cleaning",
            "the check-in",
        ],
    ),
    "gadget": (
        ["phone", "laptop", "tablet", "headset", "camera", "smartwatch", "speaker", "e-reader"],
        [
            "the battery",
            "the screen",
            "the keyboard",
            "the sound",
            "the software",
            "the build quality",
            "the charger",
            "the price",
            "the setup",
            "the manual",
            "the case",
        ],
    ),
    "book": (
        ["novel", "book", "memoir", "biography", "cookbook", "poetry collection", "crime novel"],
        [
            "the writing",
            "the characters",
            "the ending",
            "the first chapter",
            "the translation",
            "the plot",
            "the prose",
            "the humour",
            "the illustrations",
            "the middle section",
        ],
    ),
    "show": (
        ["concert", "play", "musical", "gig", "opera", "festival", "stand-up show", "ballet"],
        [
            "the band",
            "the singer",
            "the sound",
            "the seats",
            "the lighting",
            "the encore",
            "the crowd",
            "the second act",
            "the tickets",
            "the costumes",
            "the orchestra",
        ],
    ),
    "trip": (
        ["flight", "train journey", "guided tour", "cruise", "bus trip", "ferry crossing", "hiking trip"],
        [
            "the guide",
            "the crew",
            "the seats",
            "the timing",
            "the food on board",
            "the views",
            "the staff",
            "the schedule",
            "the luggage handling",
            "the route",
        ],
    ),
}
_POS = [
    "excellent",
    "wonderful",
    "superb",
    "delightful",
    "great",
    "good",
    "lovely",
    "impressive",
    "charming",
    "brilliant",
    "enjoyable",
    "pleasant",
    "outstanding",
    "solid",
    "memorable",
    "fantastic",
    "first-rate",
    "satisfying",
    "warm",
    "clever",
    "generous",
    "spotless",
    "gripping",
    "flawless",
    "friendly",
]
_NEG = [
    "awful",
    "terrible",
    "dreadful",
    "disappointing",
    "poor",
    "bad",
    "dull",
    "tedious",
    "mediocre",
    "sloppy",
    "clumsy",
    "forgettable",
    "annoying",
    "frustrating",
    "bland",
    "unbearable",
    "overpriced",
    "rude",
    "cramped",
    "noisy",
    "confusing",
    "cold",
    "shabby",
    "flimsy",
    "predictable",
]
_INTENS = [
    "",
    "",
    "",
    "really ",
    "truly ",
    "rather ",
    "quite ",
    "surprisingly ",
    "genuinely ",
    "absolutely ",
    "a bit ",
    "fairly ",
    "incredibly ",
]
_NEGATORS = [
    "not {a}",
    "not at all {a}",
    "far from {a}",
    "anything but {a}",
    "hardly {a}",
    "never {a}",
    "not exactly {a}",
    "not particularly {a}",
    "in no way {a}",
]
_COPULA = ["was", "was", "is", "felt", "seemed", "turned out to be", "proved", "looked"]
_POS_ACTS = [
    "I loved {x}",
    "{X} won me over",
    "I would happily go back",
    "I would recommend it to anyone",
    "it was worth every penny",
    "{X} made my day",
    "I left smiling",
    "I enjoyed every minute",
    "it exceeded my expectations",
    "I will definitely return",
    "it deserves the praise",
    "I was pleasantly surprised",
]
_NEG_ACTS = [
    "I hated {x}",
    "{X} ruined it for me",
    "I want my money back",
    "I would not recommend it",
    "it was a waste of money",
    "{X} spoiled the evening",
    "I left early",
    "I regret every minute",
    "it fell short of my expectations",
    "I will never return",
    "it does not deserve the praise",
    "I was bitterly let down",
]
# negated actions flip the label: "I did not regret it" is positive
_NEG_OF_NEG = [
    "I did not regret it for a second",
    "I could not find anything to complain about",
    "nothing about {x} disappointed me",
    "I never once felt bored",
    "there was nothing to dislike",
    "I have no complaints about {x}",
]
_NEG_OF_POS = [
    "I did not enjoy {x}",
    "I could not find anything to like",
    "nothing about {x} impressed me",
    "I never once felt excited",
    "there was nothing to praise",
    "I cannot recommend {x}",
]
_CONTRAST = ["but", "but", "yet", "however,", "but in the end", "though in the end", "but overall"]
_CONCEDE = ["Although", "Even though", "While", "Despite the fact that"]
_VERDICT = [
    "Overall, {i} was {p}.",
    "All in all, {i} was {p}.",
    "In the end, {i} {c} {p}.",
    "Still, I have to say {i} was {p}.",
    "On balance, {i} {c} {p}.",
    "My verdict: {p}.",
]
_OPENERS = [
    "",
    "",
    "",
    "We went last weekend. ",
    "I had high hopes. ",
    "A friend recommended it. ",
    "I went in with no expectations. ",
    "Third visit this year. ",
    "Bought it on sale. ",
    "I read the reviews first. ",
    "It was my first time. ",
]


def _pol_phrase(rng: random.Random, y: int) -> str:
    """A predicate of polarity ``y`` (1 positive, 0 negative): a plain adjective of that
    polarity, or a negated one of the other (``not bad``, ``far from brilliant``)."""
    same, other = (_POS, _NEG) if y == 1 else (_NEG, _POS)
    if rng.random() < 0.35:
        return rng.choice(_NEGATORS).format(a=rng.choice(other))
    return rng.choice(_INTENS) + rng.choice(same)


def _pol_act(rng: random.Random, y: int, x: str, first: bool = True) -> str:
    """An action clause of polarity ``y`` about ``x`` (30% a negated one of the other polarity:
    "I did not regret it"); ``first``: whether it starts the sentence."""
    pool = (_POS_ACTS if y else _NEG_ACTS) if rng.random() < 0.7 else (_NEG_OF_NEG if y else _NEG_OF_POS)
    s = rng.choice(pool)
    return s.replace("{X}", _cap(x) if first else x).replace("{x}", x)


def _review(rng: random.Random, y: int) -> str:
    """One review of label ``y``: simple, contrast, concession, verdict-then-concession,
    mixed-then-verdict or a (possibly negated) action sentence; see the comments below."""
    items, aspects = _DOMAINS[rng.choice(list(_DOMAINS))]
    item = "the " + rng.choice(items)
    a1, a2 = rng.sample(aspects, 2)
    c1, c2 = _be(a1, rng.choice(_COPULA)), _be(a2, rng.choice(_COPULA))
    kind = rng.random()
    opener = rng.choice(_OPENERS)
    if kind < 0.2:  # one or two clauses of the same polarity
        s = f"{_cap(a1)} {c1} {_pol_phrase(rng, y)}"
        if rng.random() < 0.5:
            s += f", and {a2} {c2} {_pol_phrase(rng, y)}"
        s += "."
        if rng.random() < 0.4:
            s += " " + _cap(_pol_act(rng, y, item)) + "."
    elif kind < 0.4:  # "X was good, but Y was awful": the second clause carries the label
        s = f"{_cap(a1)} {c1} {_pol_phrase(rng, 1 - y)}, {rng.choice(_CONTRAST)} {a2} {c2} {_pol_phrase(rng, y)}."
    elif kind < 0.55:  # "Although X was good, I would not go back."
        s = f"{rng.choice(_CONCEDE)} {a1} {c1} {_pol_phrase(rng, 1 - y)}, {_pol_act(rng, y, a2, first=False)}."
    elif kind < 0.75:  # the verdict first, then a concession: the first clause carries the label
        s = f"{_cap(_pol_act(rng, y, item))}, {rng.choice(_CONCEDE).lower()} {a1} {c1} {_pol_phrase(rng, 1 - y)}."
    elif kind < 0.9:  # a mixed start, then a verdict
        s = f"{_cap(a1)} {c1} {_pol_phrase(rng, 1 - y)} and {a2} {c2} {_pol_phrase(rng, y)}. " + rng.choice(
            _VERDICT
        ).format(i=item, p=_pol_phrase(rng, y), c=rng.choice(_COPULA))
    else:  # an action sentence, possibly negated
        s = _cap(_pol_act(rng, y, item)) + rng.choice([".", ".", "!", ", honestly."])
    return opener + _cap(s)


def sentiment_reviews(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """``n`` distinct short reviews (one to three sentences) with labels 1 positive / 0
    negative, alternating 1, 0, 1, 0, ... About a third of the predicates are negated ("far
    from brilliant", "I did not regret it") and about two thirds of the reviews mix polarities
    (contrast, concession, a verdict before or after a mixed start), so that neither a single
    word nor the last clause decides it."""
    rng = random.Random(f"sentiment-{seed}")
    pos = _distinct((n + 1) // 2, rng, lambda r: (_review(r, 1), 1), "sentiment")
    neg = _distinct(n // 2, rng, lambda r: (_review(r, 0), 0), "sentiment")
    taken = {t for t, _ in pos}
    neg = [(t, l) for t, l in neg if t not in taken]
    while len(neg) < n // 2:  # a text drawn for both labels is kept once (vanishingly rare)
        t = _review(rng, 0)
        if t not in taken and t not in {x for x, _ in neg}:
            neg.append((t, 0))
    rows = [r for pair in zip(pos, neg) for r in pair] + pos[len(neg) :]
    return [t for t, _ in rows], [int(l) for _, l in rows]  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- topic

TOPIC_NAMES = ("sport", "science", "food", "business")
# Shared words on purpose: "record", "team", "test", "season", "market", "growth", "table",
# "results", "training" and "cells"/"trade" appear in more than one topic.
_TOPIC_SUBJ = [
    [
        "the striker",
        "the home team",
        "the coach",
        "the goalkeeper",
        "a marathon runner",
        "the captain",
        "the visiting side",
        "the young sprinter",
        "the club",
        "the tennis champion",
        "the referee",
        "the team",
    ],
    [
        "the research team",
        "a physicist",
        "the laboratory",
        "the space agency",
        "a team of biologists",
        "the telescope",
        "the chemist",
        "climate scientists",
        "the university lab",
        "a geologist",
        "researchers",
    ],
    [
        "the chef",
        "the bakery",
        "a street vendor",
        "the new restaurant",
        "my grandmother",
        "the kitchen team",
        "the pastry cook",
        "a farmers' cooperative",
        "the food critic",
        "the cheesemaker",
        "the team",
    ],
    [
        "the central bank",
        "the startup",
        "the retailer",
        "investors",
        "the chief executive",
        "the board",
        "the car maker",
        "a hedge fund",
        "the shop owner",
        "the airline",
        "analysts",
    ],
]
_TOPIC_VP = [
    [
        "scored twice in the second half",
        "set a new national record",
        "won the cup on penalties",
        "was sent off after ten minutes",
        "lost the match in extra time",
        "climbed to the top of the league table",
        "finished the season unbeaten",
        "signed a three-year contract",
        "missed training with a knee injury",
        "broke the course record in the final",
        "drew one-all in the test match",
        "qualified for the semi-finals",
    ],
    [
        "measured the rate of the reaction",
        "detected a faint signal from a distant galaxy",
        "published the results of the trial",
        "sequenced the genome of the plant",
        "recorded the highest ocean temperature on record",
        "found a new way to grow cells in the lab",
        "ran a test of the new vaccine",
        "launched a satellite to study the sun",
        "mapped the fault under the city",
        "observed the growth of the bacteria",
        "confirmed the prediction with a second experiment",
        "built a more accurate clock",
    ],
    [
        "baked bread before dawn",
        "served a spicy lentil soup",
        "grilled fresh sardines over charcoal",
        "won praise for its slow-cooked lamb",
        "opened a stall at the weekend market",
        "tested a new recipe for plum cake",
        "made dumplings by hand",
        "picked the tomatoes at the height of the season",
        "set the table with local cheeses",
        "fermented cabbage for three weeks",
        "roasted the vegetables with garlic",
        "ran out of pastries by noon",
    ],
    [
        "raised interest rates by half a point",
        "reported record profits for the quarter",
        "cut two hundred jobs",
        "sold its shares at a loss",
        "doubled its revenue in a year",
        "announced a merger with a rival",
        "warned that growth would slow",
        "opened a new factory abroad",
        "paid off its debts early",
        "lost market share to cheaper rivals",
        "beat the expectations of the market",
        "signed a trade deal",
    ],
]
_TOPIC_FRAMES = [
    "{S} {V}.",
    "{T}, {s} {V}.",
    "{S} {V} {t}.",
    "According to reports, {s} {V}.",
    "Few expected that {s} {V}.",
    "It was confirmed {t} that {s} {V}.",
    "Why {s} {V} is still unclear.",
    "{S} {V}, a spokesperson said.",
    '"We are delighted," said a source, after {s} {V}.',
    "Breaking: {s} {V}",
    "In {p}, {s} {V}.",
    "{S} {V}, and the news spread quickly.",
    "After months of speculation, {s} finally {V}.",
    "{S} reportedly {V}.",
    "Did you hear that {s} {V}?",
]


def _topic_sentence(rng: random.Random, label: int) -> str:
    subj = rng.choice(_TOPIC_SUBJ[label])
    frame = rng.choice(_TOPIC_FRAMES)
    text = frame.format(
        S=_cap(subj),
        s=subj,
        V=rng.choice(_TOPIC_VP[label]),
        T=_cap(rng.choice(_TIMES)),
        t=rng.choice(_TIMES),
        p=rng.choice(_PLACES),
    )
    return _cap(text)


def topic_sentences(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """``n`` distinct news-like sentences labelled 0 sport, 1 science, 2 food, 3 business (see
    :data:`TOPIC_NAMES`), the labels cycling 0, 1, 2, 3, 0, ... Fifteen frames of varied
    syntax (reported speech, questions, headlines, fronted times and places) and vocabulary
    shared between topics."""
    rng = random.Random(f"topic-{seed}")
    seen: set[str] = set()
    texts, labels = [], []
    for i in range(n):
        label = i % len(TOPIC_NAMES)
        for _ in range(10_000):
            t = _topic_sentence(rng, label)
            if t not in seen:
                break
        else:
            raise ValueError(f"the topic generator gave only {i} distinct prompts of {n} asked")
        seen.add(t)
        texts.append(t)
        labels.append(label)
    return texts, labels


# ----------------------------------------------------------------------------- general text

# Scenes: each a semantic field of people, things, places, (base, past) verbs and adjectives.
# A text draws its content words from one scene (a coherent paragraph), so texts about the
# same scene share meaning but rarely the same words; its function words come from a small
# grammar (tense and modality, questions, commands, quotes, subordinate and relative clauses).
_SCENES: dict[str, dict[str, list]] = {
    "kitchen": dict(
        p=["the cook", "my grandmother", "the waiter", "a baker", "the dishwasher"],
        o=[
            "the soup",
            "a loaf of bread",
            "the frying pan",
            "the onions",
            "a bowl of rice",
            "the oven",
            "the recipe",
            "a jar of honey",
            "the cutting board",
        ],
        l=["in the kitchen", "at the stove", "behind the counter", "by the sink", "in the pantry"],
        v=[
            ("stir", "stirred"),
            ("chop", "chopped"),
            ("taste", "tasted"),
            ("burn", "burnt"),
            ("season", "seasoned"),
            ("wash", "washed"),
            ("bake", "baked"),
        ],
        a=["hot", "salty", "fresh", "sticky", "crispy", "steaming", "sour"],
    ),
    "sea": dict(
        p=["the fisherman", "a sailor", "the captain", "the lighthouse keeper", "a diver"],
        o=[
            "the nets",
            "the anchor",
            "a small boat",
            "the sails",
            "a crate of mackerel",
            "the rope",
            "the harbour wall",
            "the tide tables",
            "a lifejacket",
        ],
        l=["at the harbour", "on the deck", "near the pier", "out at sea", "along the shore"],
        v=[
            ("haul", "hauled"),
            ("mend", "mended"),
            ("row", "rowed"),
            ("tie", "tied"),
            ("sink", "sank"),
            ("steer", "steered"),
            ("drift", "drifted"),
        ],
        a=["wet", "rough", "salty", "rusty", "calm", "stormy", "grey"],
    ),
    "school": dict(
        p=["the teacher", "a pupil", "the head teacher", "the class", "a new student"],
        o=[
            "the homework",
            "a textbook",
            "the blackboard",
            "the exam papers",
            "a pencil case",
            "the timetable",
            "the spelling test",
            "a science project",
            "the register",
        ],
        l=["in the classroom", "in the playground", "at the back of the hall", "in the library", "by the lockers"],
        v=[
            ("mark", "marked"),
            ("read", "read"),
            ("copy", "copied"),
            ("explain", "explained"),
            ("forget", "forgot"),
            ("hand in", "handed in"),
            ("learn", "learned"),
        ],
        a=["difficult", "boring", "neat", "late", "clever", "noisy", "unfinished"],
    ),
    "hospital": dict(
        p=["the nurse", "a surgeon", "the patient", "the night doctor", "a paramedic"],
        o=[
            "the bandage",
            "a blood sample",
            "the medicine",
            "the stretcher",
            "an X-ray",
            "the thermometer",
            "the patient's chart",
            "a wheelchair",
            "the syringe",
        ],
        l=["on the ward", "in the waiting room", "in the operating theatre", "at reception", "in the ambulance"],
        v=[
            ("check", "checked"),
            ("treat", "treated"),
            ("clean", "cleaned"),
            ("examine", "examined"),
            ("prescribe", "prescribed"),
            ("wrap", "wrapped"),
            ("monitor", "monitored"),
        ],
        a=["sterile", "pale", "urgent", "painful", "feverish", "tired", "careful"],
    ),
    "farm": dict(
        p=["the farmer", "a shepherd", "the farmhand", "the vet", "my cousin"],
        o=[
            "the cows",
            "a bale of hay",
            "the tractor",
            "the chickens",
            "the barn door",
            "a bucket of milk",
            "the fence posts",
            "the wheat",
            "a litter of piglets",
        ],
        l=["in the field", "behind the barn", "in the cowshed", "down by the pond", "on the hillside"],
        v=[
            ("feed", "fed"),
            ("milk", "milked"),
            ("plough", "ploughed"),
            ("harvest", "harvested"),
            ("herd", "herded"),
            ("shear", "sheared"),
            ("repair", "repaired"),
        ],
        a=["muddy", "hungry", "ripe", "dusty", "early", "stubborn", "golden"],
    ),
    "city": dict(
        p=["the taxi driver", "a cyclist", "the police officer", "a commuter", "the street sweeper"],
        o=[
            "the traffic lights",
            "a parking ticket",
            "the bus timetable",
            "the crossing",
            "a delivery van",
            "the subway map",
            "the roadworks",
            "a shopping bag",
            "the pavement",
        ],
        l=["on the main street", "at the crossroads", "in the subway", "outside the bank", "in the rush hour"],
        v=[
            ("cross", "crossed"),
            ("park", "parked"),
            ("honk at", "honked at"),
            ("block", "blocked"),
            ("wait for", "waited for"),
            ("miss", "missed"),
            ("follow", "followed"),
        ],
        a=["crowded", "loud", "busy", "narrow", "delayed", "grimy", "bright"],
    ),
    "forest": dict(
        p=["the hiker", "a ranger", "the woodcutter", "a birdwatcher", "the scouts"],
        o=[
            "the trail",
            "a fallen tree",
            "the campfire",
            "the compass",
            "a pair of boots",
            "the tent",
            "the mushrooms",
            "a deer",
            "the map of the valley",
        ],
        l=["in the forest", "on the mountain path", "beside the stream", "under the pines", "near the summit"],
        v=[
            ("climb", "climbed"),
            ("follow", "followed"),
            ("light", "lit"),
            ("chop", "chopped"),
            ("spot", "spotted"),
            ("pitch", "pitched"),
            ("gather", "gathered"),
        ],
        a=["steep", "dark", "damp", "quiet", "mossy", "cold", "wild"],
    ),
    "office": dict(
        p=["the manager", "an accountant", "the intern", "the receptionist", "my colleague"],
        o=[
            "the report",
            "a spreadsheet",
            "the printer",
            "the quarterly budget",
            "a stack of invoices",
            "the meeting notes",
            "the contract",
            "an email",
            "the projector",
        ],
        l=["in the office", "in the meeting room", "at her desk", "by the photocopier", "on the third floor"],
        v=[
            ("sign", "signed"),
            ("print", "printed"),
            ("file", "filed"),
            ("send", "sent"),
            ("review", "reviewed"),
            ("delete", "deleted"),
            ("schedule", "scheduled"),
        ],
        a=["urgent", "overdue", "confidential", "long", "tedious", "formal", "incomplete"],
    ),
    "music": dict(
        p=["the violinist", "a drummer", "the conductor", "the choir", "a young pianist"],
        o=[
            "the score",
            "a guitar",
            "the piano",
            "the rehearsal",
            "a new song",
            "the microphone",
            "the orchestra",
            "an old record",
            "the drum kit",
        ],
        l=["on stage", "in the concert hall", "in the studio", "at the rehearsal room", "in the orchestra pit"],
        v=[
            ("tune", "tuned"),
            ("play", "played"),
            ("practise", "practised"),
            ("record", "recorded"),
            ("conduct", "conducted"),
            ("hum", "hummed"),
            ("rehearse", "rehearsed"),
        ],
        a=["loud", "soft", "out of tune", "beautiful", "slow", "lively", "haunting"],
    ),
    "garden": dict(
        p=["the gardener", "my neighbour", "a beekeeper", "the children", "an old woman"],
        o=[
            "the roses",
            "a wheelbarrow",
            "the hedge",
            "the lawn",
            "a watering can",
            "the tomatoes",
            "the beehive",
            "the weeds",
            "a packet of seeds",
        ],
        l=["in the garden", "by the greenhouse", "under the apple tree", "along the flower beds", "in the allotment"],
        v=[
            ("water", "watered"),
            ("prune", "pruned"),
            ("plant", "planted"),
            ("dig", "dug"),
            ("mow", "mowed"),
            ("pick", "picked"),
            ("weed", "weeded"),
        ],
        a=["green", "overgrown", "fragrant", "dry", "blooming", "thorny", "tidy"],
    ),
    "railway": dict(
        p=["the train driver", "a conductor", "the station master", "a passenger", "the porter"],
        o=[
            "the ticket",
            "a suitcase",
            "the timetable",
            "the platform",
            "the night train",
            "a seat",
            "the signal",
            "the luggage rack",
            "a return ticket",
        ],
        l=["at the station", "on platform four", "in the dining car", "at the ticket office", "on the night train"],
        v=[
            ("board", "boarded"),
            ("check", "checked"),
            ("miss", "missed"),
            ("stamp", "stamped"),
            ("carry", "carried"),
            ("book", "booked"),
            ("announce", "announced"),
        ],
        a=["late", "crowded", "cancelled", "comfortable", "slow", "empty", "overnight"],
    ),
    "sky": dict(
        p=["the astronomer", "a pilot", "the weather forecaster", "a stargazer", "the children"],
        o=[
            "the telescope",
            "a comet",
            "the clouds",
            "the full moon",
            "a thunderstorm",
            "the rainbow",
            "the night sky",
            "a kite",
            "the northern lights",
        ],
        l=["on the roof", "above the hills", "over the city", "from the observatory", "across the sky"],
        v=[
            ("watch", "watched"),
            ("track", "tracked"),
            ("photograph", "photographed"),
            ("predict", "predicted"),
            ("fly", "flew"),
            ("point at", "pointed at"),
            ("chase", "chased"),
        ],
        a=["clear", "cloudy", "bright", "distant", "faint", "red", "enormous"],
    ),
}
_TIME_ADV = [
    "Yesterday",
    "Last night",
    "Early in the morning",
    "After lunch",
    "Every Tuesday",
    "In 1998",
    "Two weeks ago",
    "Once",
    "Suddenly",
    "Later that day",
    "At first",
    "For years",
]
_MODAL = [
    ("{p}", 5),
    ("did not {b}", 2),
    ("will {b}", 1),
    ("might {b}", 1),
    ("had to {b}", 1),
    ("decided to {b}", 1),
    ("tried to {b}", 1),
    ("used to {b}", 1),
    ("refused to {b}", 1),
    ("wanted to {b}", 1),
    ("would never {b}", 1),
    ("could not {b}", 1),
]
_SUBORD = ["because", "when", "although", "after", "before", "until", "as soon as", "while", "since", "if"]
_SAY = ["said", "whispered", "shouted", "admitted", "explained", "asked", "complained", "announced"]


def _np_scene(rng: random.Random, sc: dict, what: str) -> str:
    n = rng.choice(sc[what])
    if what == "o" and rng.random() < 0.35:
        art, rest = (n.split(" ", 1) + [""])[:2] if n.startswith(("the ", "a ", "an ")) else ("the", n)
        adj = rng.choice(sc["a"])
        n = f"{'an' if adj[0] in 'aeiou' and art != 'the' else art} {adj} {rest}"
    return n


def _clause(rng: random.Random, sc: dict) -> str:
    base, past = rng.choice(sc["v"])
    vp = rng.choices([m for m, _ in _MODAL], weights=[w for _, w in _MODAL])[0].format(b=base, p=past)
    s = f"{_np_scene(rng, sc, 'p')} {vp} {_np_scene(rng, sc, 'o')}"
    if rng.random() < 0.4:
        s += " " + rng.choice(sc["l"])
    return s


def _scene_sentence(rng: random.Random, sc: dict) -> str:
    kind = rng.random()
    if kind < 0.25:
        s = _clause(rng, sc) + "."
    elif kind < 0.4:
        s = f"{rng.choice(_TIME_ADV)}, {_clause(rng, sc)}."
    elif kind < 0.55:
        s = f"{_clause(rng, sc)} {rng.choice(_SUBORD)} {_clause(rng, sc)}."
    elif kind < 0.63:
        thing = _np_scene(rng, sc, "o")
        s = f"{thing} {_be(thing, 'was')} {rng.choice(sc['a'])} {rng.choice(sc['l'])}."
    elif kind < 0.71:
        base, _ = rng.choice(sc["v"])
        who = _np_scene(rng, sc, "p")
        s = rng.choice(
            [
                f"Why did {who} {base} {_np_scene(rng, sc, 'o')}?",
                f"Who would {base} {_np_scene(rng, sc, 'o')} {rng.choice(sc['l'])}?",
                f"Has anyone seen {_np_scene(rng, sc, 'o')}?",
            ]
        )
    elif kind < 0.78:
        base, _ = rng.choice(sc["v"])
        s = rng.choice(
            [
                f"Please {base} {_np_scene(rng, sc, 'o')} {rng.choice(sc['l'])}.",
                f"Don't {base} {_np_scene(rng, sc, 'o')} yet!",
            ]
        )
    elif kind < 0.88:
        s = f'"{_cap(_clause(rng, sc))}," {rng.choice(_SAY)} {_np_scene(rng, sc, "p")}.'
    else:  # a relative clause
        who = _np_scene(rng, sc, "p")
        s = (
            f"{who}, who had {rng.choice(sc['v'])[1]} {_np_scene(rng, sc, 'o')}, {_be(who, 'was')} "
            f"{rng.choice(sc['a'])} {rng.choice(sc['l'])}."
        )
    return _cap(s)


def general_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct unlabelled texts of one to three sentences (about 5 to 50 words), each
    about one of twelve everyday scenes (kitchen, sea, school, hospital, farm, city, forest,
    office, music, garden, railway, sky): statements in several tenses and modalities,
    subordinate and relative clauses, questions, commands and quoted speech, ending in ``.``,
    ``?`` or ``!``. The scene is the shared meaning that varied words express."""
    rng = random.Random(f"text-{seed}")
    names = list(_SCENES)

    def make(r: random.Random) -> tuple[str, None]:
        sc = _SCENES[r.choice(names)]
        k = r.choices((1, 2, 3), weights=(6, 3, 1))[0]
        return " ".join(_scene_sentence(r, sc) for _ in range(k)), None

    return [t for t, _ in _distinct(n, rng, make, "general-text")]
