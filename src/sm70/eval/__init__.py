"""Benchmark evaluation: tasks (MedQA, PubMedQA, USMLE), the scoring engine and `sm70 eval`."""
