"""Metadata database: SQLAlchemy models, Alembic migrations, engine and sessions."""

from tsloom.db.engine import get_engine, session_scope
from tsloom.db.models import Base

__all__ = ["Base", "get_engine", "session_scope"]
