"""One benchmark question, as every task loader returns it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Item:
    id: str                      # MedQA: row index; PubMedQA: PMID; USMLE: "step1-12" (step + number)
    question: str
    options: dict[str, str]      # letter -> text; PubMedQA: {"yes": "yes", "no": "no", "maybe": "maybe"}
    gold: str                    # a key of options (or, for an excluded defective item, whatever the key says)
    context: tuple[str, ...] = ()  # PubMedQA abstract sections
    excluded: str | None = None  # reason this item is not scored (listed in results.json)
    documents: tuple[str, ...] = ()  # retrieved snippets put before the question (`eval rag=INDEX`)
    meta: dict = field(default_factory=dict)
