"""checkgate: an asynchronous HTTP gateway that runs checks on distributed Celery workers."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="checkgate",
    version="0.1.0",
    description="Non-blocking Tornado gateway that runs checks on Celery workers over RabbitMQ and Redis",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["gateway", "gateway.*", "tasks", "tasks.*", "bench", "bench.*"]),
    py_modules=["celeryconfig"],
    install_requires=[
        "celery[redis,msgpack]>=5.4,<6",
        "kombu>=5.4,<6",
        "tornado>=6.4,<7",
        # The AMQP frame codec of the gateway's publishing connection (gateway/aiocelery/amqp.py).
        "pamqp>=3.2,<5",
        "redis>=5.0",
        # Back-off of the gateway's reconnects and of a publish sent again (gateway/aiocelery/publisher.py).
        "tenacity>=8.2",
        # Caller-supplied regular expressions run on RE2: linear time (tasks/checks/_pattern.py).
        "google-re2>=1.1",
        "msgpack>=1.0",
        "supervisor>=4.2,<5",
        "dnspython>=2.6,<3",
        "celery-redbeat>=2.4,<3",
        "flower>=2.0,<3",
        # Speed only: the gateway runs on uvloop when it imports.
        "uvloop>=0.19; sys_platform != 'win32'",
        # Parses the result stream (gateway/aiocelery/resp.py), and redis-py's replies.
        "hiredis>=2.3",
        "idna>=3.4",
        # X.509 decoding of every certificate a TLS peer presents (tasks/checks/_x509.py); the test PKI too.
        "cryptography>=42",
        # The target policy: this host's interface addresses, and its short-lived caches (tasks/checks/_guard.py).
        "psutil>=5.9",
        "cachetools>=5.3",
        # The http check (tasks/checks/http.py): httpcore frames HTTP/1.1 (h11) and HTTP/2 (h2) over the
        # check's guarded connections; urllib3 >= 2.7 decodes content codings with bounded output (its
        # decompression-bomb fixes), br and zstd through brotli >= 1.2 and backports.zstd.
        "httpcore[http2]>=1.0.9,<2",
        "urllib3>=2.7,<3",
        "brotli>=1.2",
        "backports.zstd>=1.0; python_version < '3.14'",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "ruff>=0.5",
            "prometheus_client>=0.20",
            "hypothesis>=6.100",
            "schemathesis>=4.3,<5",
            "selenium>=4.20",
            "requests>=2.31",
        ],
        # `make bench`: the peers checkgate is measured against (Flask+gunicorn, Flower) and the plots.
        "bench": ["flask>=3.0", "gunicorn>=22", "matplotlib>=3.8"],
        # librabbitmq's last release (2018) only builds on old Pythons; kombu and celery gate
        # their own extras the same way.
        "librabbitmq": ["librabbitmq>=2.0; python_version < '3.11'"],
    },
    entry_points={
        "console_scripts": ["checkgate=gateway.cli:main"],
    },
    include_package_data=True,
    package_data={
        "bench": ["jmeter/*.jmx", "jmeter/*.java", "jmeter/MANIFEST.MF", "wrk_report.lua"],
        "gateway.console": ["templates/*.html", "static/*.css", "static/*.js", "console.example.toml"],
    },
)
