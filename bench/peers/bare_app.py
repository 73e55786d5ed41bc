"""The floor of a Python front end: Tornado on uvloop answering with no work behind it.

    python -m bench.peers.bare_app PORT

`GET /check/add?x=…&y=…` answers the sum at once; `GET /check/sleep?ms=…` answers after `ms` ms (an
event-loop timer, no thread and no task); the bodies are those of checkgate's answers (id, type, state,
result). No broker, no Redis, no validation beyond reading two numbers. Its CPU per answer is what the
HTTP part alone costs a Python process at that rate and concurrency — what checkgate's CPU per answer
is to be read against. Same server setup as checkgate's (Tornado's HTTPServer, backlog 4096, uvloop).
"""

from __future__ import annotations

import asyncio
import itertools
import sys

import tornado.httpserver
import tornado.netutil
import tornado.web
import uvloop

_ids = itertools.count()


class Health(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write({"status": "ok"})


class Check(tornado.web.RequestHandler):
    async def get(self, type_name: str) -> None:
        if type_name == "add":
            result: object = int(self.get_query_argument("x")) + int(self.get_query_argument("y"))
        elif type_name == "sleep":
            ms = int(self.get_query_argument("ms"))
            await asyncio.sleep(ms / 1000)
            result = {"ok": True, "slept_ms": ms}
        else:
            raise tornado.web.HTTPError(404)
        self.write({"id": f"bare-{next(_ids)}", "type": type_name, "state": "SUCCESS", "result": result})


async def serve(port: int) -> None:
    app = tornado.web.Application([(r"/health", Health), (r"/check/([a-z_]+)", Check)])
    server = tornado.httpserver.HTTPServer(app, xheaders=False)
    server.add_sockets(tornado.netutil.bind_sockets(port, "127.0.0.1", backlog=4096))
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
