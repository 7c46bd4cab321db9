"""A small HTTP server on 127.0.0.1 that speaks the Hugging Face Hub's resolve protocol.

It serves HEAD and GET /{owner}/{repo}/resolve/{revision}/{file} with the headers huggingface_hub reads
(X-Repo-Commit, ETag, X-Linked-Etag, X-Linked-Size, Content-Length), honours Range requests, answers
unknown repos and files with 404 and the Hub's X-Error-Code, and can drop a connection mid-file.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeHub:
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    # Cut the body of the next N GETs after this many bytes (then close the connection).
    drop_after: int | None = None
    drops_left: int = 0
    url: str = ""
    commit: str = COMMIT  # change it with the files, as the real Hub does

    def add(self, repo: str, filename: str, data: bytes) -> None:
        self.files[(repo, filename)] = data


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def _route(self):
            hub.requests.append((self.command, self.path, self.headers.get("Range")))
            m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.path.split("?")[0])
            if not m:
                return self._error(404, "RepoNotFound")
            repo, revision, filename = m.groups()
            if not any(r == repo for r, _ in hub.files):
                return self._error(404, "RepoNotFound")
            if revision not in ("main", hub.commit):
                return self._error(404, "RevisionNotFound")
            data = hub.files.get((repo, filename))
            if data is None:
                return self._error(404, "EntryNotFound", commit=True)
            return data

        def _error(self, status: int, code: str, commit: bool = False):
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            if commit:
                self.send_header("X-Repo-Commit", hub.commit)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None

        def _headers(self, data: bytes, status: int = 200, start: int = 0):
            sha = hashlib.sha256(data).hexdigest()
            self.send_response(status)
            self.send_header("X-Repo-Commit", hub.commit)
            self.send_header("ETag", f'"{sha}"')
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data) - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()

        def do_HEAD(self):
            data = self._route()
            if data is not None:
                self._headers(data)

        def do_GET(self):
            data = self._route()
            if data is None:
                return
            start = 0
            rng = self.headers.get("Range")
            if rng and (m := re.fullmatch(r"bytes=(\d+)-", rng.strip())):
                start = int(m.group(1))
            self._headers(data, 206 if start else 200, start)
            body = data[start:]
            if hub.drops_left > 0 and hub.drop_after is not None:
                hub.drops_left -= 1
                self.wfile.write(body[: hub.drop_after])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

    return Handler


class HubServer:
    def __init__(self):
        self.hub = FakeHub()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.hub))
        self.hub.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self.hub

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
