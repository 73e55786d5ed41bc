"""Incremental reading of a process's stdout/stderr log through supervisord's tail offsets.

`supervisor.tailProcessStdoutLog(name, offset, length)` always returns the *last* `length` bytes of the
log (as text) and the log's size as the next offset; it does not return "what follows offset". So the
new part is the last (new offset - old offset) bytes of the answer, and when more than `length` bytes
arrived between two reads the rest was skipped (reported, not hidden). A smaller offset than before
means the log was cleared or rotated: start over from what came back.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from gateway.console.config import NodeConfig
from gateway.console.xmlrpc import RpcClient, RpcError, RpcFault

STREAMS = {"stdout": "supervisor.tailProcessStdoutLog", "stderr": "supervisor.tailProcessStderrLog"}
INITIAL_BYTES = 8 * 1024
CHUNK_BYTES = 64 * 1024


@dataclass
class Chunk:
    """New log text, and how many bytes were skipped before it (the log grew faster than we read)."""

    text: str
    skipped: int = 0
    reset: bool = False


class LogTail:
    """Follows one log of one process; `read()` returns what was written since the last read."""

    def __init__(self, rpc: RpcClient, node: NodeConfig, spec: str, stream: str, timeout: float) -> None:
        if stream not in STREAMS:
            raise ValueError("stream must be stdout or stderr")
        self.rpc, self.node, self.spec, self.timeout = rpc, node, spec, timeout
        self.stream = stream
        self.method = STREAMS[stream]
        self.offset: int | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    async def read(self) -> Chunk:
        """The next piece of the log (the last INITIAL_BYTES on the first call)."""
        first = self.offset is None
        data, new_offset = await self._tail(0 if first else self.offset, INITIAL_BYTES if first else CHUNK_BYTES)
        raw = data.encode("utf-8")  # supervisord decoded the bytes as UTF-8: this gets them back exactly
        old, self.offset = self.offset, new_offset
        if old is None:
            return Chunk(self._decoder.decode(raw))
        delta = new_offset - old
        if delta < 0:  # cleared or rotated
            self._decoder.reset()
            return Chunk(self._decoder.decode(raw), reset=True)
        if delta <= len(raw):
            return Chunk(self._decoder.decode(raw[len(raw) - delta :]))
        self._decoder.reset()
        return Chunk(self._decoder.decode(raw), skipped=delta - len(raw))

    async def _tail(self, offset: int, length: int) -> tuple[str, int]:
        # The window supervisord reads may begin inside a multi-byte character, which it fails to decode
        # (HTTP 500); a window one to three bytes shorter starts on a character boundary.
        for shorter in range(4):
            try:
                data, new_offset, _overflow = await self.rpc.call(
                    self.node, self.method, self.spec, offset, length - shorter, timeout=self.timeout
                )
                return str(data), int(new_offset)
            except RpcFault:
                raise
            except RpcError as exc:
                if not str(exc).startswith("HTTP 500") or shorter == 3:
                    raise
        raise AssertionError("unreachable")
