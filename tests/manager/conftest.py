"""Fixtures of the manager tests; they live in ``mgr_support`` (a uniquely named module, so tests
can import its helpers without clashing with other directories' conftest modules)."""

from mgr_support import api, clock, pg_server, private_pg, sqlite_api, sqlite_template  # noqa: F401
