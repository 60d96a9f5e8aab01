"""Alembic's environment and revisions for Journey's schema; journey.storage.migrate runs them."""

from pathlib import Path

# Alembic's script_location: env.py, the revision template and versions/ are package data.
DIRECTORY = Path(__file__).resolve().parent
