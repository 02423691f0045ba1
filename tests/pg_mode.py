"""Which store mode this run tests (see tests/pg_site/renkei_pg_test_mode.py)."""
from renkei_pg_test_mode import active, schema_for, url_for  # noqa: F401
