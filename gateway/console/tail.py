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

from gateway.nodes import NodeConfig
from gateway.supervisor_rpc import LOG_STREAMS, RpcClient

INITIAL_BYTES = 8 * 1024
CHUNK_BYTES = 64 * 1024


@dataclass
class Chunk:
    """New log text, and how many bytes were skipped before it (the log grew faster than we read)."""

    text: str
    skipped: int = 0
    reset: bool = False


class LogTail:
    """Follows one log of one process; `read()` returns what was written since the last read.

    `spec` is the process's namespec, `stream` `stdout` or `stderr` (ValueError otherwise), `timeout`
    the seconds each read may take. `offset` is the log's size in bytes at the last read (None before
    the first): a browser reconnecting with Last-Event-ID sets it to continue where it was.
    """

    def __init__(self, rpc: RpcClient, node: NodeConfig, spec: str, stream: str, timeout: float) -> None:
        if stream not in LOG_STREAMS:
            raise ValueError("stream must be stdout or stderr")
        self.rpc, self.node, self.spec, self.timeout = rpc, node, spec, timeout
        self.stream = stream
        self.offset: int | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    async def read(self) -> Chunk:
        """The next piece of the log (the last INITIAL_BYTES on the first call).

        Raises RpcFault (BAD_NAME: no such process) or RpcError (the node could not be asked).
        """
        offset, length = (0, INITIAL_BYTES) if self.offset is None else (self.offset, CHUNK_BYTES)
        data, new_offset = await self.rpc.tail(self.node, self.spec, self.stream, offset, length, timeout=self.timeout)
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
