"""Routes: api_keys (being built)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["api_keys"])
