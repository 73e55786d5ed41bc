"""This test run's isolation: its own queue/exchange prefix and its own Redis db on the real services.

Imported before anything imports celeryconfig, so the test process builds the same names as its
workers. Override the services with CHECKGATE_TEST_BROKER_URL / CHECKGATE_TEST_RESULT_BACKEND.

The check tests' targets all listen on loopback, which the target policy refuses by default: the test
deployment opens it, as an operator would (the stack's own endpoints stay refused all the same).
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
# The suite's workers consume with py-amqp, what every remote worker host uses (tasks/transport.py), unless
# the runner says otherwise: CHECKGATE_BROKER_TRANSPORT=librabbitmq runs them all over librabbitmq. The
# librabbitmq tests (tests/test_worker_transport.py, tests/checks/test_e2e_librabbitmq.py) set it per stack.
os.environ.setdefault("CHECKGATE_BROKER_TRANSPORT", "pyamqp")
os.environ["CHECKGATE_ALLOW_NETWORKS"] = TEST_ALLOW_NETWORKS = "127.0.0.0/8,::1/128"
