"""Retrieval over a site's own documents: read files into text, chunk them, index the chunks with the
retrievers of a registry (BM25, dense, fused by reciprocal rank), and search the index.

    sm70 index build docs=DIR out=INDEX
    sm70 index search INDEX "question" k=10
"""
