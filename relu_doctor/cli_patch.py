"""relu-doctor patch: rewrite dead ReLUs to leak (SPEC 7)."""

from __future__ import annotations
