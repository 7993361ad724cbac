"""relu-doctor diff and merge: reports over time and across machines (SPEC 11)."""

from __future__ import annotations
