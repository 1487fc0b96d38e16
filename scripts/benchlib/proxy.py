"""A delaying TCP proxy on 127.0.0.1: a registry seen across a network with a round-trip time.

The model is a delay line, per connection and per direction: every byte the proxy reads is
written to the other side ``rtt / 2`` seconds later, in order. So

* a request/response turn costs one round trip (the request's bytes reach the registry
  ``rtt/2`` late, its answer reaches the client ``rtt/2`` late), however small it is;
* a new connection costs one more round trip (the TCP handshake): the client's first bytes
  leave no earlier than ``rtt`` after the proxy accepted the connection;
* bulk transfers keep their rate (nothing waits for an acknowledgement) up to the bytes in
  flight, which are bounded (``_QUEUE_CHUNKS`` reads of at most ``_CHUNK`` bytes a direction,
  16 MiB: about 800 MB/s at 40 ms, as a TCP window would bound it).

It forwards bytes, not HTTP: the ``Host`` header stays the proxy's address, so a registry's
upload ``Location`` URLs name the proxy and uploads stay behind it. Bandwidth limits, packet
loss and TLS are not modelled (the registries behind it speak plain HTTP). ``connections``
counts accepted connections and ``turns`` the request turns (client bytes after the server
last spoke, or the first on a connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

_CHUNK = 256 * 1024
_QUEUE_CHUNKS = 64


class _Connection:
    def __init__(self) -> None:
        self.client_turn = False  # the client is speaking (its turn was counted)


class DelayProxy:
    """``DelayProxy("127.0.0.1:5000", rtt_ms=40).start()``; ``address`` goes into references."""

    def __init__(self, upstream: str, rtt_ms: float) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.rtt = rtt_ms / 1000
        self.port = 0
        self.connections = 0
        self.turns = 0
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._error: BaseException | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> DelayProxy:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="delay-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        if self._error is not None or not self.port:
            raise RuntimeError(f"delay proxy did not start: {self._error}")
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._accept, "127.0.0.1", 0, limit=_CHUNK, backlog=256)
            )
            self.port = int(self._server.sockets[0].getsockname()[1])
        except BaseException as exc:  # reported by start()
            self._error = exc
            ready.set()
            return
        ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._loop.call_soon(self._loop.stop)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(client_r, client_w)
        except asyncio.CancelledError:
            pass  # stop(): asyncio's stream callback would report a cancelled handler as an error
        finally:
            self._tasks.discard(task)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        accepted = self._loop.time()
        self.connections += 1
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.upstream, limit=_CHUNK)
        except OSError:
            client_w.close()
            return
        writers = (client_w, upstream_w)
        for writer in writers:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        state = _Connection()
        directions = [
            asyncio.ensure_future(self._direction(client_r, upstream_w, accepted + self.rtt, state, True)),
            asyncio.ensure_future(self._direction(upstream_r, client_w, accepted, state, False)),
        ]
        try:
            # One direction ending cleanly (a half-close) leaves the other running; an error ends both.
            done, _ = await asyncio.wait(directions, return_when=asyncio.FIRST_EXCEPTION)
            if any(not task.cancelled() and task.exception() is not None for task in done):
                for writer in writers:
                    writer.transport.abort()
            await asyncio.gather(*directions, return_exceptions=True)
        finally:
            for task in directions:
                task.cancel()
            await asyncio.gather(*directions, return_exceptions=True)
            for writer in writers:
                writer.close()

    async def _direction(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        not_before: float,
        state: _Connection,
        from_client: bool,
    ) -> None:
        """Forward one direction through the delay line, then pass its end of stream on."""
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE_CHUNKS)
        half = self.rtt / 2

        async def feed() -> None:
            while True:
                try:
                    data = await reader.read(_CHUNK)
                except OSError:
                    data = b""
                if data and from_client and not state.client_turn:
                    state.client_turn = True
                    self.turns += 1
                elif data and not from_client:
                    state.client_turn = False
                await line.put((max(self._loop.time(), not_before) + half, data))
                if not data:
                    return

        feeder = asyncio.ensure_future(feed())
        try:
            while True:
                due, data = await line.get()
                wait = due - self._loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof() and not writer.transport.is_closing():
                        with contextlib.suppress(OSError):
                            writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await feeder
