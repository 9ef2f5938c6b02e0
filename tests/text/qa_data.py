"""Generated extractive-QA data: templated biographies with questions whose answers are spans; the
test split draws every name, place, company and product from values never used in training."""

from __future__ import annotations

import numpy as np

from ner_data import CITY, FIRST, LAST, ORG_NAMES, ORG_SUFFIXES

PRODUCTS = ["bicycles", "umbrellas", "solar panels", "violins", "tea kettles", "running shoes", "wooden toys",
            "maps", "telescopes", "chess sets", "rain boots", "paper lanterns", "canoes", "pianos"]


def _split(values: list, test: bool) -> list:
    cut = int(len(values) * 0.7)
    return values[cut:] if test else values[:cut]


def make_qa_examples(n_contexts: int, *, test: bool = False, seed: int = 0):
    """(questions, contexts, answers, answer_starts): five questions about each generated paragraph."""
    rng = np.random.default_rng(seed)
    first, last, city, org, products = (_split(v, test) for v in (FIRST, LAST, CITY, ORG_NAMES, PRODUCTS))
    questions, contexts, answers, starts = [], [], [], []
    for _ in range(n_contexts):
        given, family = str(rng.choice(first)), str(rng.choice(last))
        person = f"{given} {family}"
        born, works = (str(c) for c in rng.choice(city, size=2, replace=False))
        company = f"{rng.choice(org)} {rng.choice(ORG_SUFFIXES)}"
        product, year = str(rng.choice(products)), str(int(rng.integers(1900, 2000)))
        pieces = [person, " was born in ", born, " in ", year, ". After school ", given, " moved to ", works,
                  ", where ", given, " founded ", company, ". Today ", company, " makes ", product, " and employs ",
                  str(int(rng.integers(20, 900))), " people."]
        at = np.cumsum([0] + [len(x) for x in pieces])  # where each piece starts
        context = "".join(pieces)
        for question, piece in ((f"Where was {person} born?", 2), (f"When was {person} born?", 4),
                                (f"Who founded {company}?", 10), (f"What does {company} make?", 16),
                                (f"Which company did {given} found?", 12)):
            questions.append(question)
            contexts.append(context)
            answers.append(pieces[piece])
            starts.append(int(at[piece]))
    return questions, contexts, answers, starts
