"""Where a node's files are: its home directory, and the defaults shipped with checkgate.

A node's **home** holds what is its own: `var/` (generated credentials, logs, sockets, the console's
config and audit log), `supervisord.d/*.conf` (programs it adds), `schedule.toml`, and optionally a
`supervisord.conf` of its own. It is, in this order:

1. `CHECKGATE_HOME`;
2. the directory of the supervisord.conf given with `checkgate run -c`;
3. the checkout checkgate runs from (a source checkout or an editable install: the directory of
   celeryconfig.py when it holds supervisord.conf), so `make run` keeps everything in the checkout;
4. the current directory (an installed package).

The **shipped defaults** (supervisord.conf, schedule.example.toml) are the top-level files of a checkout;
a wheel carries them as `gateway/node/<name>` (setup.py copies them there at build time), so an
installed checkgate needs no checkout. `checkgate run` uses `<home>/supervisord.conf` when there is
one, else the shipped one; its paths all come from `CHECKGATE_HOME` and `CHECKGATE_BIN` (the bin/ of
the Python environment checkgate runs from), which `checkgate run` sets.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

HOME_ENV = "CHECKGATE_HOME"
BIN_ENV = "CHECKGATE_BIN"
SUPERVISORD_CONF = "supervisord.conf"
# Where a wheel carries the shipped defaults, inside the `gateway` package.
PACKAGED = Path(__file__).with_name("node")


def checkout() -> Path | None:
    """The source checkout checkgate runs from (where celeryconfig.py and supervisord.conf are), or None."""
    import celeryconfig

    here = Path(celeryconfig.__file__).resolve().parent
    return here if (here / SUPERVISORD_CONF).is_file() else None


def node_home(env: Mapping[str, str] | None = None, config: str | Path | None = None) -> Path:
    """The node's home, absolute (see the module's docstring for the order).

    :arg env: the environment (default: os.environ), for `CHECKGATE_HOME`.
    :arg config: the supervisord.conf given on the command line, if any.
    """
    env = os.environ if env is None else env
    if env.get(HOME_ENV):
        return Path(env[HOME_ENV]).expanduser().resolve()
    if config:
        return Path(config).resolve().parent
    return checkout() or Path.cwd().resolve()


def shipped(name: str) -> Path:
    """The shipped default file `name` (`supervisord.conf`, `schedule.example.toml`): the wheel's copy
    under gateway/node/, else the checkout's. Raises FileNotFoundError when neither exists."""
    for folder in (PACKAGED, checkout()):
        if folder is not None and (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{name} is not shipped with this checkgate (looked in {PACKAGED} and the checkout)")


def supervisord_conf(home: Path, config: str | Path | None = None) -> Path:
    """The supervisord.conf `checkgate run` uses: `config` if given, else `<home>/supervisord.conf`
    when it exists, else the shipped one."""
    if config:
        return Path(config).resolve()
    own = home / SUPERVISORD_CONF
    return own if own.is_file() else shipped(SUPERVISORD_CONF)


def bin_dir() -> Path:
    """The bin/ directory of the Python environment running this (checkgate, celery, supervisord…)."""
    return Path(sys.executable).parent
