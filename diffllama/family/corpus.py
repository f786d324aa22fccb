"""Synthetic, seeded data for training and evaluating the bundled model family (nothing downloaded).

Every generator takes a ``random.Random`` and returns a typed record; every character span is
checked against its text when the record is built. One shared vocabulary of people, cities,
organisations and things runs through all tasks, so one tokenizer and one pretrained language model
serve every head:

- ``story``      simple English: short stories and descriptions mixed from many sentence templates
- ``retrieval``  key-information retrieval (the Differential Transformer paper's multi-needle task):
                 "The magic number of <City> is <n>." needles among filler sentences, with look-alike
                 distractors ("The lucky number of <City> is ..."), any length, answer at a chosen depth
- ``fact_qa``    extractive QA over facts about several people (who works where, lives where, ...)
- ``review``     three-class sentiment (negative / mixed / positive) with negation scope, contrast
                 clauses and irrelevant sentences
- ``tagged``     sentences with PER / LOC / ORG / NUM / DATE entity spans, names with accents, CJK and
                 emoji in the text

``generate(kind, seed, count)`` is the entry point; training uses ``TRAIN_SEED``, held-out
evaluation ``HELD_OUT_SEED``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

TRAIN_SEED, HELD_OUT_SEED, PROBE_SEED = 0, 1, 2  # training, held-out test, and the check run during training

FIRST_NAMES = ["Anna", "Bob", "Clara", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Liam",
               "Maya", "Noah", "Olga", "Pablo", "Rosa", "Sam", "Tara", "Victor", "Wendy", "Yusuf", "Zoe", "Omar",
               "Lena", "Marco", "Nina", "Oscar", "Priya", "Ravi", "Sofia", "Tom", "José", "Zoë", "Jürgen",
               "Søren", "Łukasz", "François", "Chloé", "Ayşe", "Björn", "Inès", "美咲", "李娜", "Dmitrij"]
LAST_NAMES = ["Smith", "Novak", "Garcia", "Berg", "Rossi", "Khan", "Meyer", "Silva", "Dubois", "Costa", "Weber", "Lund",
              "Müller", "Núñez", "Ødegaard", "Dvořák", "Çelik", "Lefèvre", "田中"]
CITIES = ["Lyon", "Paris", "Berlin", "Madrid", "Oslo", "Rome", "Vienna", "Prague", "Lisbon", "Dublin", "Athens",
          "Warsaw", "Zurich", "Munich", "Porto", "Milan", "Seville", "Bergen", "Krakow", "Geneva", "Turin", "Nantes",
          "Ghent", "Leeds", "Bristol", "Malmö", "Tallinn", "Riga", "Graz", "Split", "Zürich", "Kraków", "São Paulo",
          "Reykjavík", "Besançon", "Łódź", "東京", "Córdoba"]
ORGS = ["Acme Corp", "Blue River Bank", "Northwind", "Helix Labs", "Orbit Media", "Green Leaf Farms",
        "Summit Motors", "Atlas Books", "Silver Line Rail", "Nova Health", "Red Oak Games", "Bright Water",
        "Delta Foods", "Polar Air", "Café Müller", "Nordström & Co", "Señor Pan"]
THINGS = ["a red kite", "an old map", "a small boat", "a blue bicycle", "a wooden box", "a silver key",
          "a warm coat", "a basket of apples", "a strange letter", "a broken clock", "a new camera", "a green hat",
          "a heavy book", "a paper lamp", "a golden ring", "a tiny radio"]
ITEMS = ["apples", "books", "tickets", "chairs", "bottles", "letters", "coins", "stamps", "shirts", "plates"]
PLACES = ["the market", "the river", "the station", "the library", "the old bridge", "the park", "the harbour",
          "the museum", "the bakery", "the hill", "the garden", "the beach", "the school", "the castle"]
ANIMALS = ["a black cat", "a small dog", "an old horse", "a white goose", "a grey rabbit", "a noisy parrot"]
FOODS = ["bread", "soup", "cheese", "cake", "fish", "rice", "pasta", "oranges"]
FEELINGS = ["happy", "tired", "curious", "calm", "surprised", "proud", "worried", "cheerful", "hungry", "sleepy"]
ACTIONS = ["read a book", "painted a picture", "cooked dinner", "fixed the roof", "wrote a letter",
           "planted some flowers", "cleaned the kitchen", "played the piano", "fed the birds", "sang a song"]
TIMES = ["In the morning", "At noon", "In the afternoon", "In the evening", "At night", "On Sunday", "Last winter"]
WEATHER = ["sunny", "rainy", "cold", "windy", "warm", "foggy"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
POSITIVE = ["great", "wonderful", "excellent", "lovely", "fantastic", "good", "delightful", "superb", "nice", "fun"]
NEGATIVE = ["terrible", "awful", "boring", "bad", "disappointing", "poor", "dreadful", "dull", "horrible", "weak"]
PRODUCTS = ["film", "book", "meal", "hotel", "concert", "phone", "game", "show", "coffee", "trip", "album", "room"]
FILLER = ["The weather was mild that day.", "Many people walked along the streets.", "A bus passed by slowly.",
          "The shops opened early in the morning.", "Some birds sang in the trees.", "It was a quiet afternoon.",
          "The bells rang twice at noon.", "Children played near the fountain.", "A light wind came from the sea.",
          "The lights of the town were bright.", "A train left the station on time.", "The river was calm and wide.",
          "Someone was baking bread nearby.", "The old clock on the wall was slow.", "Clouds moved over the hills.",
          "A dog barked somewhere in the distance.", "The market was full of fruit.", "Nobody was in a hurry."]


# --- records ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Span:
    """Characters ``[start, end)`` of a record's text, with a label where one applies."""

    start: int
    end: int
    label: str = ""


@dataclass
class Story:
    text: str


@dataclass
class QAExample:
    """An extractive question over ``context``; ``fact`` is the sentence holding the answer, and
    ``depth`` where it sits among the context's sentences (0 = first, 1 = last)."""

    context: str
    question: str
    answer: Span  # in the context
    fact: Span  # in the context, contains ``answer``
    depth: float
    kind: str  # "retrieval" | "fact"

    @property
    def answer_text(self) -> str:
        return self.context[self.answer.start:self.answer.end]

    @property
    def fact_text(self) -> str:
        return self.context[self.fact.start:self.fact.end]


@dataclass
class Review:
    text: str
    label: str  # one of SENTIMENTS


@dataclass
class Tagged:
    text: str
    entities: list[Span] = field(default_factory=list)  # labels PER / LOC / ORG / NUM / DATE


class TextBuilder:
    """Appends pieces of text and returns each piece's span, so spans are right by construction;
    ``check`` verifies them again against the finished text."""

    def __init__(self):
        self.text = ""
        self.expected: list[tuple[Span, str]] = []

    def add(self, piece: str, label: str = "") -> Span:
        span = Span(len(self.text), len(self.text) + len(piece), label)
        self.text += piece
        self.expected.append((span, piece))
        return span

    def check(self) -> str:
        for span, piece in self.expected:
            assert self.text[span.start:span.end] == piece, (span, piece, self.text)
        return self.text


# --- generators ---------------------------------------------------------------------------------
def person(rng: random.Random) -> str:
    """A first name, sometimes with a last name (multi-token PER entities)."""
    return rng.choice(FIRST_NAMES) + (f" {rng.choice(LAST_NAMES)}" if rng.random() < 0.3 else "")


def date(rng: random.Random, day: bool = True) -> str:
    """"12 May 2021", or "May 2021" when ``day`` is False."""
    return (f"{rng.randint(1, 28)} " if day else "") + f"{rng.choice(MONTHS)} {rng.randint(1990, 2030)}"


def story(rng: random.Random) -> Story:
    """A short story or description: an opening, then 2–5 sentences drawn from a pool of templates
    about one or two characters, their city, things, animals, food and the weather."""
    name, friend = rng.sample(FIRST_NAMES, 2)
    city, place, thing = rng.choice(CITIES), rng.choice(PLACES), rng.choice(THINGS)
    openings = [f"{name} lived in {city}.", f"Once there was a {rng.choice(FEELINGS)} person called {name}.",
                f"{city} is a city near {rng.choice(PLACES)}.", f"{rng.choice(TIMES)} {name} went to {place}.",
                f"It was a {rng.choice(WEATHER)} day in {city}."]
    pool = [f"One morning {name} went to {place}.", f"There {name} found {thing}.", f"{name} met {friend} near {place}.",
            f"{friend} was {rng.choice(FEELINGS)} and smiled.", f"They talked about {thing} for a long time.",
            f"Later {name} took {thing} home.", f"{rng.choice(TIMES)} {name} felt {rng.choice(FEELINGS)}.",
            f"{friend} said that {city} is a beautiful city.", f"The next day they went to {rng.choice(PLACES)} together.",
            f"{name} had {rng.choice(ANIMALS)} that liked {rng.choice(FOODS)}.", f"{rng.choice(TIMES)} {name} {rng.choice(ACTIONS)}.",
            f"{friend} {rng.choice(ACTIONS)} and then ate some {rng.choice(FOODS)}.", f"The weather in {city} was {rng.choice(WEATHER)}.",
            f"{name} gave {thing} to {friend}.", f"{friend} lives in {rng.choice(CITIES)} and works at {rng.choice(ORGS)}.",
            f"Near {place} there was {rng.choice(ANIMALS)}.", f"{name} bought {rng.randint(2, 12)} {rng.choice(ITEMS)} at {place}.",
            f"In {rng.choice(MONTHS)} {name} visited {rng.choice(CITIES)}."]
    return Story(" ".join([rng.choice(openings)] + rng.sample(pool, rng.randint(2, 5))))


def _with_fillers(rng: random.Random, facts: list[str], fillers: int) -> list[str]:
    sentences = facts + rng.sample(FILLER, fillers)
    rng.shuffle(sentences)
    return sentences


def _qa_record(sentences: list[str], target: str, answer: str, question: str, kind: str) -> QAExample:
    """Join ``sentences`` into a context and locate ``answer`` inside the ``target`` sentence."""
    builder, fact = TextBuilder(), None
    for i, sentence in enumerate(sentences):
        span = builder.add(sentence)
        if sentence == target:
            fact, index = span, i
        if i < len(sentences) - 1:
            builder.add(" ")
    context = builder.check()
    offset = target.rindex(answer)  # answers sit at the end of their fact sentence
    answer_span = Span(fact.start + offset, fact.start + offset + len(answer))
    assert context[answer_span.start:answer_span.end] == answer
    return QAExample(context, question, answer_span, fact, index / max(len(sentences) - 1, 1), kind)


LOOKALIKE_KEYS = ["lucky number", "secret number", "magic code", "house number"]  # near-misses of "magic number"


def haystack_sentence(rng: random.Random) -> str:
    """One sentence of the text the needles hide in: a filler or a sentence of a story."""
    return rng.choice(FILLER) if rng.random() < 0.5 else rng.choice(story(rng).text.split(". ")).rstrip(".") + "."


def retrieval(rng: random.Random, needles: int = 4, fillers: int | None = None, depth: float | None = None,
              lookalikes: int = 0) -> QAExample:
    """Facts "The magic number of <city> is <n>." for ``needles`` cities hidden among ``fillers``
    haystack sentences (≈ 9 tokens each) and ``lookalikes`` near-miss facts ("The lucky number of
    <asked city> is <m>."); the question asks for one city's magic number, so every other needle and
    look-alike is a distractor. ``depth`` (0 = first sentence, 1 = last) places the asked fact;
    None places it at random. The question is bare ("What is the magic number of Lyon?");
    ``lead_in`` gives the words that make the answer a continuation."""
    fillers = rng.randint(3, 7) if fillers is None else fillers
    cities = rng.sample(CITIES, needles)
    numbers = rng.sample(range(1000, 10000), needles + lookalikes)  # distinct: no distractor equals the answer
    facts = [f"The magic number of {c} is {n}." for c, n in zip(cities, numbers)]
    target = rng.randrange(needles)
    others = facts[:target] + facts[target + 1:]
    others += [f"The {rng.choice(LOOKALIKE_KEYS)} of {cities[target]} is {n}." for n in numbers[needles:]]
    sentences = others + [haystack_sentence(rng) for _ in range(fillers)]
    rng.shuffle(sentences)
    slot = rng.randint(0, len(sentences)) if depth is None else round(depth * len(sentences))
    sentences.insert(slot, facts[target])
    return _qa_record(sentences, facts[target], str(numbers[target]),
                      f"What is the magic number of {cities[target]}?", "retrieval")


def lead_in(example: QAExample) -> str:
    """The start of the fact that answers ``example`` ("The magic number of Lyon is"): asked after
    the question, the answer is the text's continuation."""
    return example.fact_text[:example.answer.start - example.fact.start].rstrip()


def retrieval_prompt(example: QAExample, with_lead_in: bool = True) -> str:
    """What a language model reads for retrieval by generation: context, question and (by default)
    the answer's lead-in; greedy decoding must then produce the number."""
    prompt = f"{example.context} {example.question}"
    return f"{prompt} {lead_in(example)}" if with_lead_in else prompt


FACT_TEMPLATES = [  # (fact, question, answer slot); each context states one fact per person
    ("{PER} works at {ORG}.", "Where does {PER} work?", "ORG"),
    ("{PER} lives in {LOC}.", "Where does {PER} live?", "LOC"),
    ("{PER} was born on {DATE}.", "When was {PER} born?", "DATE"),
    ("{PER} owns {THING}.", "What does {PER} own?", "THING"),
    ("{PER} bought {NUM} {ITEM}.", "How many {ITEM} did {PER} buy?", "NUM"),
]


def fact_qa(rng: random.Random, people: int | None = None, fillers: int | None = None) -> QAExample:
    """The same kind of fact about 2–4 people among fillers; the question names one of them."""
    fact, question, slot = rng.choice(FACT_TEMPLATES)
    names = rng.sample(FIRST_NAMES, people or rng.randint(2, 4))
    item = rng.choice(ITEMS)
    values = {"ORG": lambda: rng.choice(ORGS), "LOC": lambda: rng.choice(CITIES), "DATE": lambda: date(rng),
              "THING": lambda: rng.choice(THINGS), "NUM": lambda: str(rng.randint(2, 99))}
    answers = [values[slot]() for _ in names]
    facts = [fact.format(PER=n, ITEM=item, **{slot: a}) for n, a in zip(names, answers)]
    target = rng.randrange(len(names))
    sentences = _with_fillers(rng, facts, rng.randint(1, 4) if fillers is None else fillers)
    return _qa_record(sentences, facts[target], answers[target], question.format(PER=names[target], ITEM=item), "fact")


def qa(rng: random.Random) -> QAExample:
    """Extractive QA: retrieval questions (2–6 needles, up to ≈ 550 context tokens, look-alikes) and
    fact questions, half and half."""
    if rng.random() < 0.5:
        return retrieval(rng, needles=rng.randint(2, 6), fillers=rng.randint(3, 60), lookalikes=rng.randint(0, 2))
    return fact_qa(rng)


ASPECTS = ["the food", "the service", "the music", "the room", "the price", "the story", "the acting", "the view",
           "the staff", "the sound"]
SENTIMENTS = ["negative", "mixed", "positive"]


def _opinion(rng: random.Random, subject: str, positive: bool) -> str:
    """One clause judging ``subject``, worded so that only the judgement counts: negation flips the
    word ("not bad"), reported expectations before "but" do not count."""
    good, bad = rng.choice(POSITIVE), rng.choice(NEGATIVE)
    stated, opposite = (good, bad) if positive else (bad, good)
    return rng.choice([
        f"{subject} was {rng.choice(['', 'really ', 'very ', 'quite '])}{stated}",
        f"I found {subject} {stated}",
        f"{subject} was not {opposite}{rng.choice(['', ' at all'])}",
        f"I did not think {subject} was {opposite}",
        f"{rng.choice(FIRST_NAMES)} said {subject} would be {opposite}, but it was {stated}",
        f"{subject} was anything but {opposite}",
    ])


def review(rng: random.Random) -> Review:
    """A three-class review. Positive / negative: one or two opinions of the same polarity; mixed:
    opinions of opposite polarity about two different aspects. Negation scope ("not bad",
    "I did not think it was bad"), contrast ("X said it would be bad, but it was good") and
    irrelevant sentences (who, where, when, prices) make the label depend on the wording."""
    label = rng.choice(SENTIMENTS)
    product = f"the {rng.choice(PRODUCTS)}"
    first, second = rng.sample(ASPECTS, 2)
    if label == "mixed":
        polarity = rng.random() < 0.5
        clauses = [_opinion(rng, first, polarity), _opinion(rng, second, not polarity)]
    else:
        positive = label == "positive"
        clauses = [_opinion(rng, product, positive)] + ([_opinion(rng, first, positive)] if rng.random() < 0.4 else [])
    opinions = [c[0].upper() + c[1:] + "." for c in clauses]
    if label == "mixed" and rng.random() < 0.5:  # one sentence: "A was great, but B was awful."
        opinions = [clauses[0][0].upper() + clauses[0][1:] + ", " + rng.choice(["but ", "while ", "whereas "]) + clauses[1] + "."]
    irrelevant = [f"I went with {rng.choice(FIRST_NAMES)}.", f"We were in {rng.choice(CITIES)}.", rng.choice(FILLER),
                  f"It was {rng.choice(MONTHS)}.", f"We paid {rng.randint(5, 90)} euros.",
                  f"{rng.choice(FIRST_NAMES)} thought it would be {rng.choice(POSITIVE + NEGATIVE)}."]
    sentences = rng.sample(irrelevant, rng.randint(0, 2)) + opinions
    rng.shuffle(sentences)
    return Review(" ".join(sentences), label)


TAG_TEMPLATES = [
    "{PER} works at {ORG} in {LOC}.", "{PER} moved to {LOC} on {DATE}.", "{ORG} hired {NUM} people in {LOC}.",
    "On {DATE} {PER} met {PER} at {ORG}.", "{PER} bought {NUM} tickets to {LOC}.",
    "The office of {ORG} in {LOC} opened on {DATE}.", "{PER} and {PER} walked {NUM} miles to {LOC}.",
    "In {LOC} {PER} visited {ORG} with {NUM} friends.", "{ORG} was founded in {LOC} in {DATE}.",
    "Yesterday {PER} sold {NUM} books to {ORG}.", "{PER} left {LOC} for {LOC} on {DATE}.",
    "According to {PER}, {ORG} earned {NUM} million last year.", "The train from {LOC} carried {NUM} passengers.",
    "{PER} wrote to {ORG} about the meeting of {DATE}.",
]


EMOJI = ["🎉", "🙂", "🚆", "☕", "📚"]


def tagged(rng: random.Random) -> Tagged:
    """A sentence from a template whose slots are filled with entities, recording each entity's
    span; names and places include accented, Polish, Nordic and CJK spellings, and some sentences
    end with an emoji, so byte-level pieces that share a character occur inside and next to entities."""
    builder, entities = TextBuilder(), []
    fillers = {"PER": lambda: person(rng), "LOC": lambda: rng.choice(CITIES), "ORG": lambda: rng.choice(ORGS),
               "NUM": lambda: str(rng.randint(2, 5000)),
               "DATE": lambda: date(rng, day=not builder.text.endswith(("in ", "of ")))}  # "on 3 May 2001", "in May 2001"
    for i, piece in enumerate(rng.choice(TAG_TEMPLATES).replace("}", "{").split("{")):
        if i % 2:  # odd pieces are slot names
            entities.append(builder.add(fillers[piece](), piece))
        else:
            builder.add(piece)
    if rng.random() < 0.15:
        builder.add(" " + rng.choice(EMOJI))
    return Tagged(builder.check(), entities)


def lm_text(example: QAExample) -> tuple[str, Span]:
    """A QA record as language-modelling text: context, question, then the fact restated as the
    answer ("... What is the magic number of Lyon? The magic number of Lyon is 4821."). Restating
    the fact turns retrieval into copying what follows the matching key, which small models learn
    (induction); returns the text and the answer's span in the restated fact."""
    prefix = f"{example.context} {example.question} "
    start = len(prefix) + example.answer.start - example.fact.start
    text = prefix + example.fact_text
    assert text[start:start + len(example.answer_text)] == example.answer_text
    return text, Span(start, start + len(example.answer_text))


GENERATORS = {"story": story, "retrieval": retrieval, "fact_qa": fact_qa, "qa": qa, "review": review, "tagged": tagged}


def generate(kind: str, seed: int, count: int, **options) -> list:
    """``count`` records of ``kind`` (a key of ``GENERATORS``) from ``seed``; ``options`` go to the
    generator (e.g. ``needles=1`` for easier retrieval)."""
    rng = random.Random(f"{kind}-{seed}")  # each kind its own stream: adding one kind never shifts another
    return [GENERATORS[kind](rng, **options) for _ in range(count)]
