"""Alembic environment for the manager's schema.

Run programmatically by :func:`difs.manager.db.run_migrations`, which passes an
open connection in ``config.attributes["connection"]``. Run from the command
line (``alembic -c src/difs/manager/migrations/alembic.ini -x url=...``) it makes
its own engine. It never configures logging.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from difs.manager.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from difs.manager.db import make_engine

    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("give the database URL: alembic -x url=sqlite:///path/manager.db ...")
    engine = make_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
