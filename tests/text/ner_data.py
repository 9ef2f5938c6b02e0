"""Generated NER data: templated sentences whose entity names come from lists, with the test split
using names never seen in training, so a tagger must read the context (and word shape)."""

from __future__ import annotations

import numpy as np

FIRST = ["Anna", "Bruno", "Carla", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kofi", "Lena",
         "Marco", "Nadia", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wanda", "Yusuf"]
LAST = ["Adler", "Brandt", "Costa", "Duval", "Engel", "Fischer", "Garcia", "Horvat", "Ivanova", "Jensen", "Kowalski",
        "Larsen", "Moreau", "Novak", "Okafor", "Petrov", "Quinn", "Rossi", "Silva", "Tanaka", "Ueda", "Vogel"]
CITY = ["Paris", "Lagos", "Lima", "Oslo", "Hanoi", "Quito", "Dakar", "Porto", "Kyoto", "Austin", "Leeds", "Graz",
        "Nairobi", "Denver", "Seville", "Tbilisi", "Bergen", "Cusco", "Malmo", "Turin", "Accra", "Perth"]
ORG_NAMES = ["Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay", "Soylent", "Cyberdyne",
             "Tyrell", "Oscorp", "Monarch", "Aperture", "Nakatomi", "Wonka", "Zorin", "Gringotts", "Krusty", "Dunder"]
ORG_SUFFIXES = ["Corp", "Group", "Labs", "Holdings", "Systems", "Industries", "Bank", "Airlines"]

TEMPLATES = [
    "PER visited LOC last week .", "PER works for ORG in LOC .", "The ORG office in LOC hired PER .",
    "PER said ORG will open a plant in LOC .", "Yesterday PER flew from LOC to LOC .", "ORG shares rose after PER spoke .",
    "PER and PER met in LOC on Monday .", "A spokesman for ORG confirmed that PER resigned .",
    "In LOC , PER founded ORG .", "PER , who lives in LOC , joined ORG .", "Officials in LOC praised ORG .",
    "The mayor of LOC thanked PER .",
]


def _split(values: list, test: bool) -> list:
    cut = int(len(values) * 0.7)
    return values[cut:] if test else values[:cut]


def make_ner_sentences(n: int, *, test: bool = False, seed: int = 0) -> tuple[list[list[str]], list[list[str]]]:
    """n (words, BIO tags) sentences; `test` draws every name from the 30% never used in training."""
    rng = np.random.default_rng(seed)
    first, last, city, org = (_split(v, test) for v in (FIRST, LAST, CITY, ORG_NAMES))
    sentences, tags = [], []
    for _ in range(n):
        words, labels = [], []
        for token in TEMPLATES[int(rng.integers(len(TEMPLATES)))].split():
            if token == "PER":
                name = [str(rng.choice(first))] + ([str(rng.choice(last))] if rng.random() < 0.7 else [])
                kind = "PER"
            elif token == "LOC":
                name, kind = [str(rng.choice(city))], "LOC"
            elif token == "ORG":
                name, kind = [str(rng.choice(org)), str(rng.choice(ORG_SUFFIXES))], "ORG"  # suffixes are shared
            else:
                words.append(token)
                labels.append("O")
                continue
            words.extend(name)
            labels.extend([f"B-{kind}"] + [f"I-{kind}"] * (len(name) - 1))
        sentences.append(words)
        tags.append(labels)
    return sentences, tags
