# PostgreSQL test mode in subprocesses of the suite (see renkei_pg_test_mode.py).
import os

if os.environ.get("RENKEI_TEST_RUN_DATABASE"):
    import renkei_pg_test_mode
    renkei_pg_test_mode.install()
