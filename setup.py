"""checkgate: an asynchronous HTTP gateway that runs checks on distributed Celery workers."""

from pathlib import Path

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py

# The node's defaults kept at the top of the checkout, where operators of a checkout edit and run them;
# a wheel carries them as gateway/node/<name>, where `checkgate run` finds them (gateway/home.py).
NODE_FILES = ("supervisord.conf", "schedule.example.toml")


class BuildPyWithNodeFiles(build_py):
    """build_py, plus the node's top-level default files copied into the built `gateway` package."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "gateway" / "node"
        self.mkpath(str(target))
        for name in NODE_FILES:
            self.copy_file(name, str(target / name))


setup(
    name="checkgate",
    version="0.1.0",
    description="Non-blocking Tornado gateway that runs checks on Celery workers over RabbitMQ and Redis",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # Namespace discovery lists the console's templates/ and static/ too, so their files are package data
    # of a package setuptools knows. The benchmark and the tests stay in the checkout.
    packages=find_namespace_packages(include=["gateway", "gateway.*", "tasks", "tasks.*"], exclude=["*__pycache__"]),
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
        # Every check's name lookup, bounded by its deadline and cancelled there (tasks/checks/_resolver.py).
        "pycares>=5.0,<6",
        "celery-redbeat>=2.4,<3",
        "flower>=2.0,<3",
        # Speed only: the gateway runs on uvloop when it imports.
        "uvloop>=0.19; sys_platform != 'win32'",
        # Parses the result stream (gateway/aiocelery/resp.py), and redis-py's replies.
        "hiredis>=2.3",
        "idna>=3.4",
        # Renders /metrics and format=prometheus answers (gateway/metrics.py, gateway/prometheus.py).
        "prometheus_client>=0.20",
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
        # Body text read as browsers read it: the Encoding Standard's labels and decode (tasks/checks/http.py).
        "webencodings>=0.5.1",
        "brotli>=1.2",
        "backports.zstd>=1.0; python_version < '3.14'",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "ruff>=0.5",
            "hypothesis>=6.100",
            "schemathesis>=4.3,<5",
            "selenium>=4.20",
            "requests>=2.31",
            # tests/test_wheel.py builds the sdist and the wheel (python -m build --no-isolation).
            "build>=1.2",
            "setuptools>=70.1",
            # The library's usage tests (tests/test_library.py): a FastAPI app and an aiohttp one awaiting
            # Celery tasks through gateway.aiocelery, driven in process by httpx.
            "fastapi>=0.110",
            "httpx>=0.27",
            "aiohttp>=3.9",
        ],
        # `make bench`: the peers checkgate is measured against (Flask+gunicorn, Flower, FastAPI+uvicorn as
        # its docs install it: uvicorn[standard], i.e. with uvloop and httptools) and the plots.
        "bench": ["flask>=3.0", "gunicorn>=22", "fastapi>=0.110", "uvicorn[standard]>=0.30", "matplotlib>=3.8"],
        # The C AMQP client for workers (tasks/transport.py, issue #17). librabbitmq's own last release (2018)
        # does not build on Python 3.11; its maintained fork installs the same `librabbitmq` module and
        # ships wheels only for CPython on glibc Linux x86_64 (2.0.2.dev3: cp310-cp314 manylinux2014;
        # no aarch64, musllinux, macOS or Windows wheel), so the extra asks for it only there: elsewhere it
        # would need a C toolchain and rabbitmq-c's sources (no sdist is published), and the workers stay
        # on py-amqp. (Markers cannot tell musl from glibc: on Alpine x86_64 the install fails; bootstrap
        # installs it with --only-binary and goes on without it.)
        "librabbitmq": [
            "librabbitmq-fork>=2.0.2.dev3; platform_system == 'Linux' and platform_machine == 'x86_64'"
            " and platform_python_implementation == 'CPython'"
        ],
    },
    entry_points={
        "console_scripts": ["checkgate=gateway.cli:main"],
    },
    package_data={
        "gateway.console": ["console.example.toml"],
        "gateway.console.templates": ["*.html"],
        "gateway.console.static": ["*.css", "*.js"],
    },
    cmdclass={"build_py": BuildPyWithNodeFiles},
)
