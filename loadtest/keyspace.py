"""The bounded, seeded key universe the load users draw from, with a Zipf-like skew.

Real RAG traffic repeats a few questions and documents very often and most others rarely; a Zipf
distribution (weight of rank k = 1 / k**s) over a fixed universe reproduces that, so the hit ratio
climbs as the hot keys fill the cache while the long tail keeps producing misses.
"""

from __future__ import annotations

import itertools
import os
import random
from dataclasses import dataclass

from rag_api.config import DEMO_ADMIN_KEY as DEMO_ADMIN_KEY
from rag_api.config import DEMO_TENANT_KEYS as _DEMO_TENANT_KEYS

# run.py puts the running stack's tenant keys here for the Locust processes (`key:school,key:school`).
KEYS_VARIABLE = "LOADTEST_TENANT_KEYS"


def parse_tenant_keys(text: str) -> dict[str, int]:
    """`key:school,key:school` (TENANT_API_KEYS' format) as {key: school}."""
    pairs = (item.rsplit(":", 1) for item in text.split(",") if item.strip())
    return {key.strip(): int(school) for key, school in pairs}


DEMO_TENANT_KEYS = parse_tenant_keys(_DEMO_TENANT_KEYS)
# The users' keys: the stack's (handed over by run.py), else the demo keys.
TENANT_KEYS: dict[str, int] = parse_tenant_keys(os.environ.get(KEYS_VARIABLE, "")) or DEMO_TENANT_KEYS

_SUBJECTS = (
    "photosynthesis",
    "the French revolution",
    "quadratic equations",
    "plate tectonics",
    "the water cycle",
    "Shakespeare's sonnets",
    "cell division",
    "supply and demand",
    "the periodic table",
    "Newton's laws",
    "the Roman republic",
    "climate zones",
    "prime numbers",
    "the nervous system",
    "electric circuits",
    "medieval castles",
    "the Pythagorean theorem",
    "volcanoes",
    "the solar system",
    "poetry meter",
)
_ANGLES = (
    "a summary of",
    "key facts about",
    "an exam question on",
    "a worksheet about",
    "common mistakes in",
    "a lesson plan for",
    "a quiz on",
    "the history of",
    "a diagram description of",
    "homework help with",
)
_LEVELS = ("year 5", "year 7", "year 9", "year 11", "sixth form")


def texts(n: int) -> list[str]:
    """`n` distinct, deterministic, realistic-looking passages (the embedding inputs)."""
    combos = itertools.product(_ANGLES, _SUBJECTS, _LEVELS)
    out = [
        f"{angle} {subject} for {level} students (passage {i})"
        for i, (angle, subject, level) in zip(range(n), itertools.cycle(combos), strict=False)
    ]
    return out


def questions(n: int) -> list[str]:
    """`n` distinct, deterministic student questions (the chat prompts)."""
    return [f"Explain {t.replace('(passage', '(question')} in three sentences." for t in texts(n)]


def stream_questions(n: int) -> list[str]:
    """`n` distinct questions asked with `stream: true`, none equal to a `questions()` prompt: a streamed and a
    plain request with the same body share one cache entry, and the sharing verdict counts each kind apart."""
    return [f"Walk me through {t.replace('(passage', '(stream')} step by step." for t in texts(n)]


class ZipfSampler:
    """Draws ranks 0..n-1 with probability proportional to 1 / (rank + 1) ** s, from its own seeded RNG."""

    def __init__(self, n: int, s: float, seed: int) -> None:
        weights = [1.0 / (k**s) for k in range(1, n + 1)]
        self._cum = list(itertools.accumulate(weights))
        self._ranks = range(n)
        self._rng = random.Random(seed)

    def draw(self) -> int:
        return self._rng.choices(self._ranks, cum_weights=self._cum)[0]

    def draw_distinct(self, k: int) -> list[int]:
        """Up to `k` distinct ranks (a batch never repeats an input), bounded in attempts."""
        picked: dict[int, None] = {}
        for _ in range(k * 10):
            picked[self.draw()] = None
            if len(picked) == k:
                break
        return list(picked)

    def choice(self, seq: list[str]) -> str:
        return self._rng.choice(seq)


@dataclass(frozen=True)
class KeyspaceConfig:
    """How big and how skewed the universe is, and the models requested."""

    n_texts: int = 500
    n_questions: int = 200
    n_stream_questions: int = 100
    zipf_s: float = 1.1
    seed: int = 20240601
    embedding_model: str = "text-embedding-3-small"
    chat_model: str = "gpt-4o-mini"


def chat_body(model: str, question: str) -> dict[str, object]:
    """A deterministic (temperature 0) chat request, the kind a cache may answer."""
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a patient teaching assistant for school students."},
            {"role": "user", "content": question},
        ],
        "temperature": 0,
        "max_tokens": 64,
    }
