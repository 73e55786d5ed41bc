"""`python -m gateway.console hash-password [--pbkdf2]`: a password hash for the console config."""

from __future__ import annotations

import argparse
import getpass
import sys

from gateway.console.auth import hash_password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.console")
    commands = parser.add_subparsers(dest="command", required=True)
    hashing = commands.add_parser("hash-password", help="print a salted hash for a [[users]] entry")
    hashing.add_argument("--pbkdf2", action="store_true", help="PBKDF2-SHA256 instead of scrypt")
    args = parser.parse_args(argv)
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the two passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("empty password", file=sys.stderr)
        return 1
    print(f'password_hash = "{hash_password(password, "pbkdf2_sha256" if args.pbkdf2 else "scrypt")}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
