"""This test run's isolation: its own queue/exchange prefix and its own Redis db on the real services.

Imported before anything imports celeryconfig, so the test process builds the same names as its
workers. Override the services with CHECKGATE_TEST_BROKER_URL / CHECKGATE_TEST_RESULT_BACKEND.
"""

import os
import secrets

BROKER_URL = os.environ.get("CHECKGATE_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
BACKEND_URL = os.environ.get("CHECKGATE_TEST_RESULT_BACKEND", "redis://127.0.0.1:6379/13")
RUN_PREFIX = f"cgt{secrets.token_hex(3)}_"

os.environ["CHECKGATE_QUEUE_PREFIX"] = RUN_PREFIX
os.environ["CHECKGATE_BROKER_URL"] = BROKER_URL
os.environ["CHECKGATE_RESULT_BACKEND"] = BACKEND_URL
os.environ["CHECKGATE_CHECK_MODULES"] = "tests.support.extra_checks"
