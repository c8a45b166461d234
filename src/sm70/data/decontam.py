"""Benchmark decontamination: drop a training row that reproduces a test item's text.

Test items of every benchmark named in the recipe are indexed as word n-grams (13 by default, as
in GPT-3's contamination study) of case-folded words, so a copy is found however it was re-cased,
re-spaced or re-punctuated. Each part of an item is indexed on its own: the question with its
options, and each abstract section. A row is contaminated when it contains at least
`min_coverage` of some part's n-grams (default 0.3), or `SHARED_RUN` of them (about 60 words of
its text, for long parts), whichever is fewer.

Why not "any shared 13-gram": USMLE-style vignettes are written from templates. On the real
Medical Meadow MMMLU subset, one shared 13-gram flags 107 rows against MedQA + USMLE, and 69 of
them cover under 10% of any test question: stock phrases such as "year old woman comes to the
physician for a follow up examination". The copies cover 60-97% (a few reworded ones 28-51%).
N-grams found in many test items are boilerplate by definition and are not indexed at all.

Lookup stays cheap: a shared n-gram contains a shared k-gram (k = ceil(n/2)) starting at a
multiple of the stride n-k+1, so a row is probed at those positions first and only rows with a
hit are checked in full.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sm70.data.clean import gram_keys, match_words
from sm70.data.config import DecontamConfig

BOILERPLATE_ITEMS = 20  # an n-gram found in more test items than this is a phrase of the genre, not a leak
SHARED_RUN = 50         # this many shared n-grams is a copied passage, however long the test text is


@dataclass
class Benchmark:
    task: str
    n: int
    min_coverage: float
    items: int = 0
    ngrams: int = 0
    sha256: dict[str, str] = field(default_factory=dict)  # file -> sha256; empty for the bundled sample


class Decontaminator:
    def __init__(self):
        self.indexes: list[_Index] = []
        self.benchmarks: list[Benchmark] = []

    @classmethod
    def from_configs(cls, configs: list[DecontamConfig]) -> "Decontaminator":
        from sm70.data.datacard import sha256_tree
        from sm70.data.sources import resolve_path
        from sm70.eval.tasks import load_task

        self = cls()
        for cfg in configs:
            path = resolve_path(cfg.path) if cfg.path else None
            options = {"split": cfg.split} if cfg.task in ("medqa", "pubmedqa") else {}
            items = load_task(cfg.task, path, **options)
            parts = ([" ".join([it.question, *it.options.values()]), *it.context] for it in items)
            self.add(cfg.task, cfg.ngram, cfg.min_coverage, parts)
            self.benchmarks[-1].sha256 = sha256_tree(path) if path else {}
        self.finish()
        return self

    def add(self, task: str, n: int, min_coverage: float, items) -> None:
        """Index `items`, each a list of text parts (question with options, abstract sections)."""
        index = next((i for i in self.indexes if i.n == n and i.min_coverage == min_coverage), None)
        if index is None:
            index = _Index(n, min_coverage)
            self.indexes.append(index)
        bench = Benchmark(task, n, min_coverage)
        for parts in items:
            bench.items += 1
            bench.ngrams += sum(index.add(task, match_words(part)) for part in parts)
        self.benchmarks.append(bench)

    def finish(self) -> None:
        for index in self.indexes:
            index.finish()

    def match(self, words: list[bytes]) -> str | None:
        """The task a row leaks, or None."""
        for index in self.indexes:
            task = index.match(words)
            if task:
                return task
        return None


class _Index:
    def __init__(self, n: int, min_coverage: float):
        self.n, self.min_coverage = n, min_coverage
        self.k = (n + 1) // 2
        self.stride = n - self.k + 1
        self.ngrams: dict[int, int] = {}     # key of the n-gram (`gram_keys`) -> the first part that has it
        self.parts: list[tuple[str, int]] = []  # part -> (task, how many distinct n-grams it has)
        self.kgrams: set[int] = set()
        self.item_counts: Counter[int] = Counter()

    def add(self, task: str, words: list[bytes]) -> int:
        grams = set(gram_keys(words, self.n))
        if not grams:
            return 0
        part = len(self.parts)
        self.parts.append((task, len(grams)))
        self.ngrams.update(dict.fromkeys(grams.difference(self.ngrams), part))  # the first part keeps an n-gram
        self.item_counts.update(grams)
        self.kgrams.update(gram_keys(words, self.k))
        return len(grams)

    def finish(self) -> None:
        for g, count in self.item_counts.items():
            if count > BOILERPLATE_ITEMS:
                self.ngrams.pop(g, None)
        self.item_counts = Counter()

    def match(self, words: list[bytes]) -> str | None:
        k, kgrams = self.k, self.kgrams
        if len(words) < self.n or not self.ngrams:
            return None
        if kgrams.isdisjoint(gram_keys(words, k, self.stride)):
            return None
        get = self.ngrams.get
        shared = Counter(part for part in map(get, set(gram_keys(words, self.n))) if part is not None)
        for part, count in shared.most_common():
            task, total = self.parts[part]
            if count >= min(self.min_coverage * total, SHARED_RUN):
                return task
        return None
