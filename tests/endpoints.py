"""Real local endpoints for notification tests: an HTTP server and an SMTP sink, each in a
thread on a loopback port the kernel picks."""

import http.server
import json
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpSink:
    """Records every POST; answers the statuses in ``answers`` first, then 200."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    #: every request, answered or not (``requests`` holds those answered 2xx)
    attempts: int = 0


@contextmanager
def http_sink() -> Iterator[HttpSink]:
    sink = HttpSink()
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                sink.attempts += 1
                status = sink.answers.pop(0) if sink.answers else 200
                if status < 300:
                    sink.requests.append(Request(self.path, dict(self.headers), body))
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class SmtpSink:
    port: int = 0
    mails: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)


@contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    """A minimal SMTP server (RFC 5321's EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT)."""
    sink = SmtpSink()

    class Handler(socketserver.StreamRequestHandler):
        def reply(self, line: str) -> None:
            self.wfile.write(line.encode() + b"\r\n")

        def handle(self) -> None:
            self.reply("220 sink ESMTP")
            sender, rcpts = "", list[str]()
            while line := self.rfile.readline():
                verb = line.decode().strip()
                upper = verb.upper()
                if upper.startswith("EHLO"):
                    self.reply("250-sink")
                    self.reply("250 8BITMIME")
                elif upper.startswith("HELO") or upper in ("NOOP", "RSET"):
                    self.reply("250 ok")
                elif upper.startswith("MAIL FROM:"):
                    sender, rcpts = verb[10:].strip().strip("<>"), list[str]()
                    self.reply("250 ok")
                elif upper.startswith("RCPT TO:"):
                    rcpts.append(verb[8:].strip().strip("<>"))
                    self.reply("250 ok")
                elif upper == "DATA":
                    self.reply("354 go on")
                    data = b""
                    while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                        data += chunk[1:] if chunk.startswith(b"..") else chunk
                    sink.mails.append(message_from_bytes(data))
                    sink.envelopes.append((sender, rcpts))
                    self.reply("250 queued")
                elif upper == "QUIT":
                    self.reply("221 bye")
                    return
                else:
                    self.reply("502 not implemented")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    sink.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
