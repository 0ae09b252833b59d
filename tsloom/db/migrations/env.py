"""Alembic environment: migrations run on the connection tsloom hands over."""

from alembic import context

from tsloom.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("tsloom migrations run through tsloom.db.engine.migrate()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
