"""Alembic environment for the store's fixed tables.

Run programmatically by `engine.store.Store.migrate()`: the caller passes an
open connection in `config.attributes["connection"]`, so no alembic.ini and
no URL are needed in the user's working directory. The declared entity
columns are not migrations' business (see `engine.store.sync_entities`);
`include_object` hides them from autogenerate so it never proposes dropping them.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import engine_from_config, pool

from engine.schema import ENTITY_TABLES, Base

config = context.config
target_metadata = Base.metadata
_ENTITY_TABLE_NAMES = set(ENTITY_TABLES.values())


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    if type_ == "column" and reflected and compare_to is None:
        # A column in the database but not in the models: a declared field.
        return getattr(obj.table, "name", None) not in _ENTITY_TABLE_NAMES
    return True


def _configure(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=include_object,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engine_from_config(config.get_section(config.config_ini_section) or {}, prefix="sqlalchemy.",
                                poolclass=pool.NullPool)
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
