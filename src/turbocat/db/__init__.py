"""Persistence: SQLAlchemy models, sessions, dialect specifics and migrations."""
