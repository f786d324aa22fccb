"""Synthetic data for the bundled demo models, generated deterministically from a seed.

Five kinds of examples share one vocabulary of names, places and things, so one tokenizer and one
pretrained language model serve every task: simple stories (language modelling), key retrieval with
look-alike distractors (the Differential Transformer paper's multi-needle setup, also used as
extractive QA), sentiment reviews with negation and irrelevant sentences, and sentences tagged with
PER / LOC / ORG / NUM / DATE entities. Every span is a character span into its own text.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

PEOPLE = ["Anna", "Bob", "Clara", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Liam",
          "Maya", "Noah", "Olga", "Pablo", "Rosa", "Sam", "Tara", "Victor", "Wendy", "Yusuf", "Zoe", "Omar"]
CITIES = ["Lyon", "Paris", "Berlin", "Madrid", "Oslo", "Rome", "Vienna", "Prague", "Lisbon", "Dublin", "Athens",
          "Warsaw", "Zurich", "Munich", "Porto", "Milan", "Seville", "Bergen", "Krakow", "Geneva", "Turin", "Nantes"]
ORGS = ["Acme Corp", "Blue River Bank", "Northwind", "Helix Labs", "Orbit Media", "Green Leaf Farms",
        "Summit Motors", "Atlas Books", "Silver Line Rail", "Nova Health"]
THINGS = ["a red kite", "an old map", "a small boat", "a blue bicycle", "a wooden box", "a silver key",
          "a warm coat", "a basket of apples", "a strange letter", "a broken clock", "a new camera"]
PLACES = ["the market", "the river", "the station", "the library", "the old bridge", "the park", "the harbour",
          "the museum", "the bakery", "the hill"]
FEELINGS = ["happy", "tired", "curious", "calm", "surprised", "proud", "worried", "cheerful"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
POSITIVE = ["great", "wonderful", "excellent", "lovely", "fantastic", "good", "delightful", "superb"]
NEGATIVE = ["terrible", "awful", "boring", "bad", "disappointing", "poor", "dreadful", "dull"]
PRODUCTS = ["film", "book", "meal", "hotel", "concert", "phone", "game", "show", "coffee", "trip"]
FILLER = ["The weather was mild that day.", "Many people walked along the streets.", "A bus passed by slowly.",
          "The shops opened early in the morning.", "Some birds sang in the trees.", "It was a quiet afternoon.",
          "The bells rang twice at noon.", "Children played near the fountain.", "A light wind came from the sea.",
          "The lights of the town were bright."]


@dataclass
class Span:
    start: int
    end: int
    label: str = ""


@dataclass
class Retrieval:
    """A context of facts and distractors, a question about one key, and the answer's span."""

    context: str
    question: str
    answer: Span  # in the context
    depth: float  # where the answer's fact sits in the context, 0 = first sentence, 1 = last

    @property
    def answer_text(self) -> str:
        return self.context[self.answer.start:self.answer.end]


@dataclass
class Review:
    text: str
    label: str  # "negative" | "positive"


@dataclass
class Tagged:
    text: str
    entities: list[Span] = field(default_factory=list)


def story(rng: random.Random) -> str:
    """A short story: a few sentences picked from several templates around one or two characters."""
    person, friend = rng.sample(PEOPLE, 2)
    city, place, thing, feeling = rng.choice(CITIES), rng.choice(PLACES), rng.choice(THINGS), rng.choice(FEELINGS)
    sentences = [
        f"{person} lived in {city}.", f"One morning {person} went to {place}.", f"There {person} found {thing}.",
        f"{person} met {friend} near {place}.", f"{friend} was {feeling} and smiled.",
        f"They talked about {thing} for a long time.", f"Later {person} took {thing} home.",
        f"In the evening {person} felt {feeling}.", f"{friend} said that {city} is a beautiful city.",
        f"The next day they went to {rng.choice(PLACES)} together.",
    ]
    first = sentences[:1]
    rest = rng.sample(sentences[1:], rng.randint(2, 5))
    return " ".join(first + rest)


def retrieval(rng: random.Random, needles: int = 3, fillers: int = 4, depth: float | None = None) -> Retrieval:
    """Facts "The magic number of <city> is <n>." for several cities among filler sentences; the
    question asks for one city's number, so the others are look-alike distractors. ``depth`` (0 =
    first sentence, 1 = last) places the asked fact; None leaves it where the shuffle put it."""
    cities = rng.sample(CITIES, needles)
    numbers = [str(rng.randint(1000, 9999)) for _ in cities]
    sentences = [f"The magic number of {c} is {n}." for c, n in zip(cities, numbers)]
    # more fillers than distinct filler sentences repeat some (long contexts)
    sentences += rng.sample(FILLER, fillers) if fillers <= len(FILLER) else rng.choices(FILLER, k=fillers)
    rng.shuffle(sentences)
    target = rng.randrange(needles)
    fact = f"The magic number of {cities[target]} is {numbers[target]}."
    if depth is not None:
        sentences.remove(fact)
        sentences.insert(round(depth * len(sentences)), fact)
    index = sentences.index(fact)
    context = " ".join(sentences)
    start = context.index(fact) + len(fact) - len(numbers[target]) - 1
    return Retrieval(context=context, question=f"What is the magic number of {cities[target]}?",
                     answer=Span(start, start + len(numbers[target])), depth=index / (len(sentences) - 1))


def review(rng: random.Random) -> Review:
    """A review whose label comes from one opinion sentence, possibly negated ("not bad"), among
    irrelevant sentences that a model must ignore."""
    positive = rng.random() < 0.5
    negated = rng.random() < 0.35
    product = rng.choice(PRODUCTS)
    # a negated negative word reads positive ("not bad"), a negated positive word negative
    word = rng.choice(NEGATIVE if positive == negated else POSITIVE)
    opinion = f"The {product} was {'not ' if negated else ''}{word}."
    extra = rng.sample([f"I went with {rng.choice(PEOPLE)}.", f"We were in {rng.choice(CITIES)}.",
                        rng.choice(FILLER), f"It was {rng.choice(MONTHS)}."], rng.randint(0, 2))
    sentences = extra + [opinion]
    rng.shuffle(sentences)
    if rng.random() < 0.4:
        sentences.append("I would " + ("recommend it." if positive else "not recommend it."))
    return Review(" ".join(sentences), "positive" if positive else "negative")


TAG_TEMPLATES = [
    "{PER} works at {ORG} in {LOC}.", "{PER} moved to {LOC} on {DATE}.", "{ORG} hired {NUM} people in {LOC}.",
    "On {DATE} {PER} met {PER} at {ORG}.", "{PER} bought {NUM} tickets to {LOC}.",
    "The office of {ORG} in {LOC} opened on {DATE}.", "{PER} and {PER} walked {NUM} miles to {LOC}.",
    "In {LOC} {PER} visited {ORG} with {NUM} friends.",
]


def tagged(rng: random.Random) -> Tagged:
    """A sentence from a template whose slots are filled with entities, recording each entity's span."""
    template = rng.choice(TAG_TEMPLATES)
    fillers = {"PER": lambda: rng.choice(PEOPLE), "LOC": lambda: rng.choice(CITIES), "ORG": lambda: rng.choice(ORGS),
               "NUM": lambda: str(rng.randint(2, 500)),
               "DATE": lambda: f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(1990, 2030)}"}
    text, entities = "", []
    for piece in template.replace("}", "{").split("{"):
        if piece in fillers:
            value = fillers[piece]()
            entities.append(Span(len(text), len(text) + len(value), piece))
            text += value
        else:
            text += piece
    return Tagged(text, entities)


def generate(kind: str, seed: int, count: int) -> list:
    """``count`` examples of ``kind`` ("story", "retrieval", "review", "tagged") from ``seed``."""
    makers = {"story": story, "retrieval": retrieval, "review": review, "tagged": tagged}
    rng = random.Random(f"{kind}-{seed}")
    return [makers[kind](rng) for _ in range(count)]


TRAIN_SEED, HELD_OUT_SEED = 0, 1  # held-out splits come from a different seed than training data
