"""A PHI scrubber for audit content: identifiers replaced by typed placeholders.

Applied only when the operator turns on `audit_content=true`, in the audit writer's thread. The
checklist is HIPAA Safe Harbor's 18 identifiers. Names are found the way Philter finds them
(vocab.py, names.py): every word that is not on an allow-list of English and clinical words is
masked, and ordinary words that are also names (Rose, Hope, Will) are masked where the context
makes them one. Identifiers with a shape (dates, phones, addresses, record numbers) are patterns
(patterns.py). bench/phi.py measures recall and clinical retention on the case table of
tests/serve/phi_cases.py.

This is a safety net for a log file, not certified de-identification.
"""

from .scrubber import Scrubber

__all__ = ["Scrubber"]
