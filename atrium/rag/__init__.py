"""The RAG engine: knowledge bases, connectors, chunking, indexes, hybrid retrieval, answers.

connectors -> parsers -> chunkers -> embedder -> index -> retriever -> answerer; feedback
adjusts ranking.
"""
