"""Journey's schema revisions, oldest first by their numbers (Alembic reads these by path)."""
