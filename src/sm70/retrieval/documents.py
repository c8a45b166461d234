"""Files to text: one reader per file type, each returning the units a chunk may not cross.

A unit is a PDF page, a record of a JSON (Lines) file, or a whole text, Markdown or HTML file;
headings mark sections inside a unit. A chunk's character offsets count in its unit's text, and its
location names the unit ("page 3", "record 12345") and section, so a reader can find the passage.

A file that cannot be read raises `Sm70Error` with the reason (binary, not UTF-8, broken PDF, no
text); the index build lists it with that reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable

from sm70 import textfile
from sm70.errors import Sm70Error


@dataclass
class Unit:
    text: str
    location: str = ""                  # "page 3", "record 12345", "" for a whole file
    title: str | None = None            # a record's own title; None: the document's
    record: str | None = None           # a record's id
    sections: list[tuple[int, str]] = field(default_factory=list)  # (start offset, heading), increasing


@dataclass
class Document:
    title: str
    units: list[Unit]
    empty_records: int = 0              # records without text (counted in the manifest, not chunked)


class Unreadable(Sm70Error):
    """A document that cannot be indexed; the message is the reason, without the path."""


def _text(path: Path) -> str:
    try:
        text = textfile.read_text(path)
    except textfile.InputError as e:
        where = e.where.removeprefix(str(path)).lstrip(":").strip()
        raise Unreadable(f"{'line ' + where + ': ' if where.isdigit() else ''}{e.problem}") from None
    if not text.strip():
        raise Unreadable("empty: no text")
    return text


_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)


def read_text(path: Path) -> Document:
    return Document(path.stem, [Unit(_text(path))])


def read_markdown(path: Path) -> Document:
    text = _text(path)
    headings = [(m.start(), m.group(2).strip(), len(m.group(1))) for m in _MD_HEADING.finditer(text)]
    first_h1 = next((h for _, h, level in headings if level == 1), None)
    return Document(first_h1 or path.stem, [Unit(text, sections=[(s, h) for s, h, _ in headings])])


class _HtmlText(HTMLParser):
    """The visible text of a page, block elements on their own lines, headings as sections."""

    SKIP = {"script", "style", "noscript", "template", "head"}
    BLOCK = {"p", "div", "br", "li", "tr", "table", "section", "article", "header", "footer", "pre",
             "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dd", "dt"}
    HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.size = 0
        self.skip = 0
        self.title = ""
        self.in_title = False
        self.heading: tuple[str, int] | None = None   # (tag, start offset)
        self.sections: list[tuple[int, str]] = []

    def _add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self.in_title = True
        if tag in self.SKIP:
            self.skip += 1
        if tag in self.BLOCK and self.parts and not self.parts[-1].endswith("\n"):
            self._add("\n")
        if tag in self.HEADINGS and not self.skip:
            self.heading = (tag, self.size)

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        if tag in self.SKIP and self.skip:
            self.skip -= 1
        if self.heading and tag == self.heading[0]:
            start = self.heading[1]
            label = " ".join("".join(self.parts)[start:].split())
            if label:
                self.sections.append((start, label))
            self.heading = None
        if tag in self.BLOCK and self.parts and not self.parts[-1].endswith("\n"):
            self._add("\n")

    def handle_data(self, data):
        if self.in_title:
            self.title += data
        elif not self.skip:
            text = re.sub(r"\s+", " ", data)
            if text.strip() or (self.parts and not self.parts[-1].endswith((" ", "\n"))):
                self._add(text)


def read_html(path: Path) -> Document:
    parser = _HtmlText()
    parser.feed(_text(path))
    parser.close()
    text = "".join(parser.parts)
    if not text.strip():
        raise Unreadable("empty: the page has no visible text")
    title = " ".join(parser.title.split()) or next((h for _, h in parser.sections), "") or path.stem
    return Document(title, [Unit(text, sections=parser.sections)])


def read_pdf(path: Path) -> Document:
    import logging

    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings on a damaged file become the reason

    with path.open("rb") as f:
        head = f.read(1024)
    if b"%PDF" not in head:
        raise Unreadable("not a PDF: the file does not start with %PDF")
    try:  # pypdf raises many kinds of errors on damaged files; each becomes this file's reason
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unreadable("the PDF is encrypted with a password")
        title = (reader.metadata.title if reader.metadata else None) or path.stem
        pages = [page.extract_text() or "" for page in reader.pages]
    except Unreadable:
        raise
    except Exception as e:
        raise Unreadable(f"broken PDF: {type(e).__name__}: {e}") from None
    units = [Unit(text, location=f"page {n}") for n, text in enumerate(pages, start=1) if text.strip()]
    if not units:
        raise Unreadable(f"no text in its {len(pages)} page(s): a scanned PDF needs OCR first")
    return Document(str(title), units)


def _records(path: Path) -> Document:
    from sm70.retrieval.records import read_records

    return read_records(path)


READERS: dict[str, Callable[[Path], Document]] = {
    ".txt": read_text,
    ".text": read_text,
    ".md": read_markdown,
    ".markdown": read_markdown,
    ".html": read_html,
    ".htm": read_html,
    ".pdf": read_pdf,
    ".jsonl": _records,
    ".json": _records,
}


def reader_for(path: Path) -> Callable[[Path], Document] | None:
    return READERS.get(path.suffix.lower())


def read_document(path: Path) -> Document:
    reader = reader_for(path)
    if reader is None:
        raise Unreadable(f"unsupported file type {path.suffix or '(no extension)'!r}; readable: "
                         + ", ".join(sorted(READERS)))
    return reader(path)
