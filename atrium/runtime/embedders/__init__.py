"""Local embedding models that run in-process on the CPU."""

from atrium.runtime.embedders.minilm import EmbeddingBatch, MiniLMEmbedder, bundled_model_paths

__all__ = ["EmbeddingBatch", "MiniLMEmbedder", "bundled_model_paths"]
