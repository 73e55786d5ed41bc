"""Console credentials that `checkgate run` hands to supervisord: from the environment, else generated once.

A generated password is written to `var/<name>-credentials` (mode 0600, `user:password`) and reused on
the next start, so operators find it in one place and nothing ships with a default password.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

DEFAULT_USER = "checkgate"


def ensure_credentials(home: Path, env: dict[str, str], prefix: str, name: str) -> tuple[dict[str, str], Path | None]:
    """Fill `<prefix>_USER` / `<prefix>_PASSWORD` in a copy of `env`; return it and the file used, if any."""
    env = dict(env)
    user_var, password_var = f"{prefix}_USER", f"{prefix}_PASSWORD"
    env.setdefault(user_var, DEFAULT_USER)
    if env.get(password_var):
        return env, None
    secret = home / "var" / f"{name}-credentials"
    if not secret.exists():
        secret.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL + 0600 at creation: the password is never readable by others, even for an instant.
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            # token_urlsafe has no ':' or ',' (Flower splits FLOWER_BASIC_AUTH on both).
            out.write(f"{env[user_var]}:{secrets.token_urlsafe(18)}\n")
    user, _, password = secret.read_text().strip().partition(":")
    env[user_var], env[password_var] = user, password
    return env, secret


def flower_env(home: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment the `[program:flower]` section needs: port, user and password."""
    env = dict(env)
    env.setdefault("CHECKGATE_FLOWER_PORT", "5555")
    env, secret = ensure_credentials(home, env, "CHECKGATE_FLOWER", "flower")
    user, password = env["CHECKGATE_FLOWER_USER"], env["CHECKGATE_FLOWER_PASSWORD"]
    # Flower splits FLOWER_BASIC_AUTH on ',' and compares "user:password"; supervisord quotes the value.
    if ":" in user or any(c in user + password for c in ',"'):
        raise ValueError("CHECKGATE_FLOWER_USER/_PASSWORD: no ',' or '\"' (and no ':' in the user)")
    where = f"user:password in {secret}" if secret else "user and password from CHECKGATE_FLOWER_USER/_PASSWORD"
    print(f"flower: http://127.0.0.1:{env['CHECKGATE_FLOWER_PORT']}/ ({where})")
    return env
