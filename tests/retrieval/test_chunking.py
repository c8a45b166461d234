"""Chunks end at text breaks, overlap, keep offsets into their unit, never cross a section or a page."""

from __future__ import annotations

import pytest

from sm70.retrieval.chunking import ChunkSettings, chunk_document, split
from sm70.retrieval.documents import Document, Unit

WORDS = " ".join(f"word{i}." if i % 9 == 8 else f"word{i}" for i in range(600))


@pytest.mark.parametrize("size,overlap", [(100, 0), (200, 40), (500, 100), (5000, 200)])
def test_spans_cover_the_text_and_end_on_words(size, overlap):
    spans = split(WORDS, 0, len(WORDS), size, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == len(WORDS)
    for (s, e), (s2, _) in zip(spans, spans[1:]):
        assert e - s <= size
        assert s < s2 and not WORDS[e:s2].strip()      # forward, and nothing but spaces skipped
        assert WORDS[e - 1] != " " and (e == len(WORDS) or WORDS[e] == " ")  # ends on a word
        assert s2 == 0 or WORDS[s2 - 1] == " "         # starts on a word
        if overlap:
            assert e - s2 <= overlap + 20


def test_sections_pages_and_records_keep_their_location():
    text = "# Guide\n\nintro\n\n## Dosing\n\n" + "dose " * 100 + "\n## Monitoring\n\nlevels\n"
    sections = [(0, "Guide"), (text.index("## Dosing"), "Dosing"), (text.index("## Monitoring"), "Monitoring")]
    doc = Document("Guide", [Unit(text, sections=sections), Unit("page two text", location="page 2"),
                             Unit("r" * 3000, location="record 7", record="7", title="Seven")])
    chunks = chunk_document(doc, "g.md", ChunkSettings(size=200, overlap=20, record_max=4000))
    for c in chunks[:-2]:
        assert c.text == text[c.start:c.end]
    assert {c.location for c in chunks} == {"section: Guide", "section: Dosing", "section: Monitoring", "page 2",
                                           "record 7"}
    assert not any("Monitoring" in c.text for c in chunks if c.location == "section: Dosing")
    assert chunks[-1].text == "r" * 3000 and chunks[-1].record == "7" and chunks[-1].title == "Seven"


def test_overlap_must_be_under_half_the_size():
    with pytest.raises(ValueError, match="overlap"):
        ChunkSettings(size=100, overlap=60)
