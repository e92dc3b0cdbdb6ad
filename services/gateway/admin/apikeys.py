"""API keys as text: how one is made, recognised and reduced to what is stored.

A key is `mlk_` and 43 URL-safe characters (256 random bits). Only its SHA-256 digest is
stored: with that much entropy a plain digest cannot be reversed by guessing, and a
lookup by digest needs no per-key salt. The first 12 characters (`prefix`) are public,
shown in lists so an operator can tell keys apart.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_MARK = "mlk_"
PREFIX_LENGTH = 12


def generate_key() -> str:
    return KEY_MARK + secrets.token_urlsafe(32)


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def key_prefix(key: str) -> str:
    return key[:PREFIX_LENGTH]
