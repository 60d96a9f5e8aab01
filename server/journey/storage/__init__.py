"""Storage: the tables, the group-commit writer and the read queries (SQLite, PostgreSQL)."""
