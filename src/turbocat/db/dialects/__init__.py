"""What differs between PostgreSQL and SQLite lives here and nowhere else."""

from turbocat.db.dialects import postgres, sqlite

__all__ = ["postgres", "sqlite"]
