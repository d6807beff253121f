"""The ui's HTTP/1.1 server: asyncio streams, GET and HEAD only, one request per
connection. Small on purpose: it serves a few pages to a browser and /metrics to
Prometheus, read-only, and every answer is built from the master's replies."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from dataclasses import dataclass
from typing import Optional
from urllib.parse import unquote, urlsplit

from ..errors import RemoteError
from . import metrics, pages, static
from .source import JobClock, MasterGone, MasterSource

log = logging.getLogger("blfs.ui")

HEAD_LIMIT = 8192  # bytes of a request line and headers together
READ_TIMEOUT = 10.0  # seconds a client has to send its request
HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
# Defence in depth behind the escaping: no inline script runs, nothing from elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; object-src 'none'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = TEXT


REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found",
           405: "Method Not Allowed", 421: "Misdirected Request", 500: "Internal Server Error",
           503: "Service Unavailable"}


def line(status: int, text: str) -> Reply:
    """An error as one line of text."""
    return Reply(status, (text.splitlines()[0] if text else REASONS[status]).encode() + b"\n")


class UiServer:
    """Serves the status page and /metrics on `host:port` from a MasterSource."""

    def __init__(self, source: MasterSource, host: str = "127.0.0.1", port: int = 8070):
        self.source = source
        self.host, self.port = host, port
        self.clock = JobClock()
        self.server: Optional[asyncio.AbstractServer] = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._connection, self.host, self.port,
                                                 limit=HEAD_LIMIT)
        self.port = self.server.sockets[0].getsockname()[1]  # port 0: the one we got

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        await self.source.close()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(read_head(reader), READ_TIMEOUT)
            reply = line(400, "bad request") if request is None else await self.answer(*request)
            head_only = request is not None and request[0] == "HEAD"
            await write_reply(writer, reply, head_only)
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def answer(self, method: str, target: str, headers: dict) -> Reply:
        """The reply to one request; never an exception (500 and a log line instead)."""
        if method not in ("GET", "HEAD"):
            return line(405, "read-only: GET and HEAD only")
        if not self._host_allowed(headers.get("host", "")):
            return line(421, "unexpected Host header (this page answers to localhost)")
        url = urlsplit(target)
        try:
            return await self.route(unquote(url.path), url.query)
        except MasterGone as exc:
            return line(503, f"blfs ui: {exc}")
        except RemoteError as exc:
            return line(404 if exc.code == "not_found" else 500, f"blfs ui: {exc}")
        except Exception:  # a bug here must not take the page down: logged, one line
            log.exception("cannot answer %s", target[:200])
            return line(500, "blfs ui: internal error (see its log)")

    def _host_allowed(self, host: str) -> bool:
        """Bound to loopback, only loopback names are answered: a web page elsewhere
        cannot read this one through DNS rebinding."""
        try:
            if not ipaddress.ip_address(self.host).is_loopback:
                return True
        except ValueError:
            return True
        if not host:  # an HTTP/1.0 client: no name to check (a rebound page sends one)
            return True
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name.strip("[]").lower() in ("localhost", "127.0.0.1", "::1", self.host)

    async def route(self, path: str, query: str) -> Reply:
        if path == "/metrics":
            return Reply(200, metrics.exposition(await self.source.snapshot()),
                         metrics.CONTENT_TYPE)
        if path == "/static/ui.js":
            return Reply(200, static.SCRIPT.encode(), "text/javascript; charset=utf-8")
        if path == "/static/ui.css":
            return Reply(200, static.STYLE.encode(), "text/css; charset=utf-8")
        if path == "/favicon.ico":
            return Reply(204, b"")
        page = await self.page(path)
        if page is None:
            return line(404, f"no page {path[:100]}")
        title, main, refresh = page
        if query == "part=main":
            body = json.dumps({"title": title, "main": main, "refresh": refresh})
            return Reply(200, body.encode(), "application/json")
        return Reply(200, pages.document(title, main, refresh).encode(), HTML)

    async def page(self, path: str) -> Optional[tuple[str, str, bool]]:
        """(title, <main> HTML, whether it should refresh) of a page, None if none."""
        if path == "/":
            return "blfs jobs", pages.jobs_page(await self.source.call("jobs")), True
        if path == "/workers":
            return "blfs workers", pages.workers_page(await self.source.call("workers")), True
        if path.startswith("/job/") and len(path) > 5:
            status = await self.source.call("status", job=path[5:])
            if not isinstance(status, dict) or "job" not in status:
                return None
            main = pages.job_page(status, self.clock.now(status))
            return f"blfs job {status['job']}", main, not pages.finished(status)
        return None


async def read_head(reader: asyncio.StreamReader) -> Optional[tuple[str, str, dict]]:
    """(method, target, headers) of a request, or None when it is not HTTP/1.x."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        return None
    if len(raw) > HEAD_LIMIT:
        return None
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        return None
    headers = {}
    for h in lines[1:]:
        name, sep, value = h.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], headers


async def write_reply(writer: asyncio.StreamWriter, reply: Reply, head_only: bool) -> None:
    head = [f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Error')}",
            f"Content-Type: {reply.content_type}", f"Content-Length: {len(reply.body)}",
            "Connection: close", *(f"{k}: {v}" for k, v in SECURITY_HEADERS.items())]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    if not head_only and reply.status != 204:
        writer.write(reply.body)
    await writer.drain()
