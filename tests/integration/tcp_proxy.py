"""A TCP forwarder in front of a real service, to take the service away from a client and bring it
back without stopping it for everyone else."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit


class TcpProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # The next N answers are lost: the service did the work, the client never hears of it.
        self.cut_replies = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        if self._server is None:  # stopped while connecting upstream: cut both at once
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for src, dst, cut in ((reader, up_writer, None), (up_reader, writer, (writer, up_writer))):
            task = asyncio.create_task(self._pipe(src, dst, cut))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        cut: tuple[asyncio.StreamWriter, ...] | None = None,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                if cut is not None and self.cut_replies > 0:
                    self.cut_replies -= 1
                    for writer in cut:
                        writer.transport.abort()
                    return
                dst.write(data)
                await dst.drain()
        with contextlib.suppress(OSError):
            dst.close()

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones, as a crashed service would."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()


async def in_front_of(url: str, default_port: int) -> tuple[TcpProxy, str]:
    """A started proxy to the service at `url`, and the same URL through it."""
    parts = urlsplit(url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or default_port)
    port = await proxy.start()
    user = f"{parts.username}@" if parts.username else ""
    return proxy, urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))
