"""Many Journey processes on one PostgreSQL database."""
