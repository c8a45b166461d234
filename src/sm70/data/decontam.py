"""Benchmark decontamination: drop a training row that shares a long word n-gram with a test item.

Test items (question, options and abstract) of every benchmark named in the recipe are indexed
as n-grams of case-folded words (13 by default, as in GPT-3's contamination study), so a copied
question is found however it was re-cased, re-spaced or re-punctuated. N-grams that occur in many
different test items are boilerplate ("which of the following is the most appropriate next step
in management") rather than evidence of a leak, and are not indexed.

Lookup is exact but cheap: a shared n-gram contains a shared k-gram (k = ceil(n/2)) starting at a
multiple of the stride n-k+1, so a row is first probed at those positions only, and checked in
full only on a hit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sm70.data.clean import match_words
from sm70.data.config import DecontamConfig

BOILERPLATE_ITEMS = 20  # an n-gram found in more test items than this is a phrase of the genre, not a leak


@dataclass
class Benchmark:
    task: str
    n: int
    items: int = 0
    ngrams: int = 0
    sha256: dict[str, str] = field(default_factory=dict)  # file -> sha256; empty for the bundled sample


class Decontaminator:
    def __init__(self):
        self.by_n: dict[int, _Index] = {}
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
            self.add(cfg.task, cfg.ngram, ([it.question, *it.options.values(), *it.context] for it in items))
            self.benchmarks[-1].sha256 = sha256_tree(path) if path else {}
        self.finish()
        return self

    def add(self, task: str, n: int, items) -> None:
        index = self.by_n.setdefault(n, _Index(n))
        bench = Benchmark(task, n)
        for parts in items:
            bench.items += 1
            bench.ngrams += index.add(task, match_words("\n".join(parts)))
        self.benchmarks.append(bench)

    def finish(self) -> None:
        for index in self.by_n.values():
            index.finish()

    def match(self, words: list[str]) -> str | None:
        """The task a row leaks, or None."""
        for index in self.by_n.values():
            task = index.match(words)
            if task:
                return task
        return None


class _Index:
    def __init__(self, n: int):
        self.n = n
        self.k = (n + 1) // 2
        self.stride = n - self.k + 1
        self.ngrams: dict[int, str] = {}    # hash of the n-gram -> first task that has it
        self.kgrams: set[int] = set()
        self.item_counts: Counter[int] = Counter()

    def add(self, task: str, words: list[str]) -> int:
        n, k = self.n, self.k
        grams = {hash(" ".join(words[i:i + n])) for i in range(len(words) - n + 1)}
        for g in grams:
            self.ngrams.setdefault(g, task)
        self.item_counts.update(grams)
        self.kgrams.update(hash(" ".join(words[i:i + k])) for i in range(len(words) - k + 1))
        return len(grams)

    def finish(self) -> None:
        for g, count in self.item_counts.items():
            if count > BOILERPLATE_ITEMS:
                self.ngrams.pop(g, None)
        self.item_counts = Counter()

    def match(self, words: list[str]) -> str | None:
        n, k, kgrams = self.n, self.k, self.kgrams
        if len(words) < n or not self.ngrams:
            return None
        last = len(words) - k
        if not any(hash(" ".join(words[i:i + k])) in kgrams for i in range(0, last + 1, self.stride)):
            return None
        for i in range(len(words) - n + 1):
            task = self.ngrams.get(hash(" ".join(words[i:i + n])))
            if task:
                return task
        return None
