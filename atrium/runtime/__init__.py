"""Model runtime: the ``ModelBackend`` protocol, its backends and the model catalog."""

from atrium.runtime.base import Capability, Health, ModelBackend, StreamEvent
from atrium.runtime.catalog import CatalogEntry, ModelCatalog

__all__ = ["Capability", "CatalogEntry", "Health", "ModelBackend", "ModelCatalog", "StreamEvent"]
