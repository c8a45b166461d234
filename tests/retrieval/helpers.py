"""A folder of real documents of every kind `sm70 index build` reads, and the bad ones it must name."""

from __future__ import annotations

import json
from pathlib import Path

GOOD = {
    "sepsis.md": "# Sepsis guideline\n\nHow to recognise sepsis early.\n\n## Antibiotics\n\nGive broad-spectrum "
                 "antibiotics within one hour of recognising septic shock.\n\n## Fluids\n\nGive 30 mL/kg of "
                 "crystalloid for hypotension or a lactate of 4 mmol/L or more.\n",
    "diabetes.txt": "Metformin is the first-line drug for type 2 diabetes unless the eGFR is below 30.\n",
    "asthma.html": "<!DOCTYPE html><html><head><title>Asthma care</title><style>p{color:red}</style>"
                   "<script>var x = 'inhaled';</script></head><body><h1>Asthma care</h1><p>Inhaled "
                   "corticosteroids are the controller treatment of persistent asthma.</p><h2>Attacks</h2>"
                   "<p>Salbutamol relieves an acute attack.</p></body></html>",
}
RECORDS = [{"id": "w1", "title": "Warfarin", "text": "Warfarin needs regular INR monitoring."},
           {"id": "h2", "title": "Heparin", "text": "Heparin-induced thrombocytopenia lowers platelets."},
           {"id": "e3", "title": "Empty", "text": "  "}]
PDF_PAGES = ["Tuberculosis is treated with isoniazid, rifampicin, pyrazinamide and ethambutol.",
             "Latent tuberculosis: nine months of isoniazid, or rifampicin for four months."]
BAD = {  # name -> (bytes, words the reason must hold)
    "broken.pdf": (b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage", "PDF"),
    "latin1.txt": ("Café au lait spots".encode("cp1252"), "UTF-8"),
    "empty.md": (b"", "empty"),
    "binary.txt": (b"\x00\x01\x02\x03binary", "binary"),
    "image.png": (b"\x89PNG\r\n\x1a\n\x00\x00", "unsupported"),
}


def write_pdf(path: Path, pages: list[str], title: str = "TB treatment") -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title(title)
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 10, text)
    pdf.output(str(path))


def make_docs(folder: Path, bad: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in GOOD.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "drugs").mkdir(exist_ok=True)
    (folder / "drugs" / "anticoagulants.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    write_pdf(folder / "drugs" / "tb.pdf", PDF_PAGES)
    if bad:
        for name, (data, _) in BAD.items():
            (folder / name).write_bytes(data)
    return folder
