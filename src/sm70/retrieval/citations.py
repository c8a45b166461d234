"""What a retrieved chunk shows the model and the reader: its snippet and, in a served answer, its
citation. `sm70 eval rag=` and `sm70 serve rag=` both take snippets from here, so a served model
reads its sources in the layout it was evaluated with (numbered by `render.render_documents`)."""

from __future__ import annotations


def clean(text: str, chars: int) -> str:
    """The chunk's text on one line, cut at the last word that fits in `chars`."""
    text = " ".join(text.split())
    if len(text) > chars:
        text = text[:chars].rsplit(" ", 1)[0] + " …"
    return text


def snippet(hit: dict, chars: int) -> str:
    """What the model reads: the title, then the text (a question may name a guideline by its title)."""
    text = clean(hit["text"], chars)
    return f"{hit['title']}. {text}" if hit.get("title") else text


def citation(n: int, hit: dict, chars: int) -> dict:
    """Source [n] of an answer: where a clinician finds it (document relative to the indexed folder,
    location and character offsets as the chunk records them), what the model read, and its score."""
    return {"n": n, "chunk": hit["chunk"], "document": hit["document"], "title": hit["title"],
            "location": hit["location"], "start": hit["start"], "end": hit["end"],
            "snippet": clean(hit["text"], chars), "score": hit["score"]}
