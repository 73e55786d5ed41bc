"""`python -m gateway` runs the gateway server."""

from gateway.server import main

main()
