"""Adapters for cryptographic primitives (password hashing)."""
