"""Alembic environment: online migrations only, against the URL migrate.py sets."""

from alembic import context
from sqlalchemy import engine_from_config, pool
from sqlmodel import SQLModel

import shelfproof.db.models  # noqa: F401  (registers the tables on SQLModel.metadata)

config = context.config
connectable = engine_from_config(
    config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=SQLModel.metadata)
    with context.begin_transaction():
        context.run_migrations()
