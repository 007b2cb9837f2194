"""The audit trail: who did what, to what, when, from where, and how it ended.

Entries are hash-chained rows (``atrium.store.audit``) written off the hot path by
:class:`AuditRecorder`; :class:`AuditMiddleware` is the one place API calls are
recorded, and the recorder's bus consumer records inference requests.
"""

from atrium.audit.middleware import AuditMiddleware, audited
from atrium.audit.recorder import AuditRecorder, inference_entry, outcome_of
from atrium.store.audit import (
    AuditEntry,
    AuditFilter,
    AuditRepository,
    ChainReport,
    NewAuditEntry,
)

__all__ = [
    "AuditEntry",
    "AuditFilter",
    "AuditMiddleware",
    "AuditRecorder",
    "AuditRepository",
    "ChainReport",
    "NewAuditEntry",
    "audited",
    "inference_entry",
    "outcome_of",
]
