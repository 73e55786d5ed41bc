"""`pip install` of the built wheel gives a working checkgate without the checkout (issue #16).

The sdist is built from the checkout and the wheel from the sdist (`python -m build`, as a release is
made), then installed with its dependencies into a fresh virtual environment (pip's cache and configured
index). Everything then runs from that environment in a directory that is not the checkout, with no
PYTHONPATH: the packages, the console's assets and the node's default supervisord.conf must all come
from the wheel.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import time
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import BACKEND_URL, BROKER_URL
from tests.support.infra import require
from tests.support.stack import ROOT, cleanup_deployment, free_port, http_get, stop_processes

# What a node is made of and where the wheel must carry it.
CONSOLE_ASSETS = sorted(
    f"gateway/console/{p.relative_to(ROOT / 'gateway' / 'console')}"
    for folder in ("templates", "static")
    for p in (ROOT / "gateway" / "console" / folder).iterdir()
)
NODE_FILES = ("supervisord.conf", "schedule.example.toml")


def run(argv: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{argv[:4]} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel built from it."""
    if importlib.util.find_spec("build") is None:
        require("the `build` package (the [dev] extra: re-run scripts/bootstrap.sh)")
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT])
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob("checkgate-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel and its dependencies installed; its bin/ directory."""
    env_dir = tmp_path_factory.mktemp("venv")
    # pip from this environment installs into it (--python): ensurepip would add ~15 s for nothing.
    venv.create(env_dir, with_pip=False)
    bin_dir = env_dir / "bin"
    run([sys.executable, "-m", "pip", "--python", bin_dir / "python", "install", "--disable-pip-version-check", wheel])
    return bin_dir


def test_the_wheel_carries_the_package_and_its_assets_and_no_bench_or_tests(dist: Path, wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        shipped = {name: archive.read(f"gateway/node/{name}") for name in NODE_FILES}
        entry_points = archive.read(next(n for n in names if n.endswith("dist-info/entry_points.txt"))).decode()
    assert not [n for n in names if n.startswith(("bench/", "tests/"))]
    dist_info = wheel.name.split("-py3")[0] + ".dist-info"
    assert {n.split("/")[0] for n in names} == {"gateway", "tasks", "celeryconfig.py", dist_info}
    assert set(CONSOLE_ASSETS) <= set(names)
    assert "gateway/console/console.example.toml" in names
    assert shipped == {name: (ROOT / name).read_bytes() for name in NODE_FILES}
    assert "checkgate = gateway.cli:main" in entry_points

    (sdist,) = dist.glob("checkgate-*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = [m.split("/", 1)[1] for m in archive.getnames() if "/" in m]
    assert {*NODE_FILES, "setup.py", "MANIFEST.in"} <= set(members)
    assert not [m for m in members if m.startswith(("bench/", "tests/"))]


INSPECT = """
import json, os, sys
from pathlib import Path
import celeryconfig, gateway, tasks
from gateway.cli import node_env
from gateway.home import node_home, supervisord_conf
from supervisor.options import ServerOptions

home = node_home()
conf = supervisord_conf(home)
(home / "var" / "log").mkdir(parents=True, exist_ok=True)
env = node_env(home, dict(os.environ))
os.environ.update(env)
options = ServerOptions()
options.realize(["-c", str(conf)])
programs = {
    p.name: {"command": p.command, "directory": p.directory}
    for group in options.process_group_configs
    for p in group.process_configs
}
print(json.dumps({
    "modules": [celeryconfig.__file__, gateway.__file__, tasks.__file__],
    "home": str(home), "conf": str(conf), "programs": programs,
    "sockets": [c["file"] for c in options.server_configs if "file" in c],
    "console": env["CHECKGATE_CONSOLE_CONFIG"],
}))
"""


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """The environment of the installed checkgate (own queue prefix, the tests' Redis db, no checkout on
    the path) and a working directory that is not the checkout; cleaned up afterwards."""
    prefix = f"cgw{os.getpid()}_"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHECKGATE_", "PYTHON"))}
    env.update(
        CHECKGATE_QUEUE_PREFIX=prefix,
        CHECKGATE_BROKER_URL=BROKER_URL,
        CHECKGATE_RESULT_BACKEND=BACKEND_URL,
        CHECKGATE_PORT=str(free_port()),
        CHECKGATE_SUPERVISOR_PORT=str(free_port()),
        CHECKGATE_FLOWER_PORT=str(free_port()),
        CHECKGATE_ID_PREFIX=f"{prefix}gw-",
        PYTHONUNBUFFERED="1",
    )
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    try:
        yield env, cwd
    finally:
        cleanup_deployment(prefix, BROKER_URL, BACKEND_URL, ["add"])


def test_the_installed_package_runs_a_check_without_the_checkout(
    installed: Path, deployment: tuple[dict[str, str], Path]
) -> None:
    env, cwd = deployment
    # What `checkgate run` would start, as supervisord itself reads the shipped config: every program from
    # the environment's bin/, in the home (here the current directory), the console generated under var/.
    seen = json.loads(run([installed / "python", "-c", INSPECT], cwd=cwd, env=env).stdout.splitlines()[-1])
    site = installed.parent / "lib"
    assert all(Path(m).is_relative_to(site) for m in seen["modules"]), seen["modules"]
    assert seen["home"] == str(cwd.resolve())
    assert seen["conf"] == str(next(site.glob("python*/site-packages/gateway/node/supervisord.conf")))
    assert seen["sockets"] == [str(cwd.resolve() / "var" / "supervisor.sock")]
    assert seen["console"] == str(cwd.resolve() / "var" / "console.toml")
    assert "gateway-0" in seen["programs"] and "worker-add" in seen["programs"]  # gateway:gateway-0, …
    assert "redis" not in seen["programs"]  # CHECKGATE_RESULT_BACKEND given
    for name, program in seen["programs"].items():
        executable = Path(program["command"].split()[0])
        assert executable.parent == installed and executable.is_file(), (name, program)
        assert program["directory"] == str(cwd.resolve()), (name, program)

    procs: list[subprocess.Popen[bytes]] = []
    log = cwd / "processes.log"
    try:
        with log.open("ab") as out:
            worker = [installed / "celery", "-A", "tasks", "worker", "-Q", f"{env['CHECKGATE_QUEUE_PREFIX']}add"]
            worker += ["-P", "threads", "-c", "2", "-n", f"{env['CHECKGATE_QUEUE_PREFIX']}wheel@%h"]
            worker += ["--without-gossip", "--without-mingle", "-l", "info"]
            procs.append(subprocess.Popen([str(a) for a in worker], cwd=cwd, env=env, stdout=out, stderr=out))
            gateway_env = {**env, "CHECKGATE_CONSOLE_CONFIG": seen["console"]}
            gateway = [str(installed / "checkgate"), "gateway"]
            procs.append(subprocess.Popen(gateway, cwd=cwd, env=gateway_env, stdout=out, stderr=out))
        base = f"http://127.0.0.1:{env['CHECKGATE_PORT']}"
        deadline = time.monotonic() + 60
        while True:
            assert all(p.poll() is None for p in procs), log.read_text(errors="replace")[-3000:]
            try:
                code, body, _ = http_get(base + "/check/add?x=1&y=2", timeout=10)
                if code == 200 or time.monotonic() > deadline:
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        assert (code, body.get("result") if isinstance(body, dict) else body) == (200, 3), body
        # The console's templates and static files come from the wheel too.
        code, page, _ = http_get(base + "/console/login")
        assert code == 200 and 'id="password"' in page
        code, css, _ = http_get(base + "/console/static/console.css")
        assert code == 200 and css == (ROOT / "gateway" / "console" / "static" / "console.css").read_text()
    finally:
        stop_processes(procs)
