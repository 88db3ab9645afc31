"""Alembic migrations: one tree for SQLite and PostgreSQL (run through ``turbocat.db.migrate``)."""
