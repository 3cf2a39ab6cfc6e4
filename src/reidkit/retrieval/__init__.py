"""Gallery search: exact torch search and faiss indexes (flat, IVF, HNSW), saved to one file."""

from reidkit.retrieval.index import BACKENDS, GalleryIndex, SearchResult, recall_at_k

__all__ = ["BACKENDS", "GalleryIndex", "SearchResult", "recall_at_k"]
