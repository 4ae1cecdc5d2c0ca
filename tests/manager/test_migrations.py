"""The migrations build exactly the schema the models describe, and seed the default tiers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from difs.manager.db import MIGRATIONS_DIR, make_engine, run_migrations
from difs.manager.models import Base
from difs.policy import DEFAULT_TIERS, PolicyServices


def test_migrated_schema_matches_models(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    run_migrations(engine)
    run_migrations(engine)  # idempotent
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    engine.dispose()
    assert diff == []


def test_seeded_tiers_equal_the_policy_package():
    spec = importlib.util.spec_from_file_location("seed", MIGRATIONS_DIR / "versions" / "0002_seed_tiers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    seeded = {t["name"]: t for t in mod.TIERS}
    assert set(seeded) == set(DEFAULT_TIERS)
    for name, doc in DEFAULT_TIERS.items():
        assert PolicyServices.model_validate(seeded[name]["services"]) == doc.services
        assert seeded[name]["description"] == doc.description
