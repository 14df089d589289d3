"""A weights host on 127.0.0.1 for the download tests: files the test writes, served at the
paths the real hosts use (torchvision's /models/<file>, the Hugging Face Hub's
/<repo>/resolve/<revision>/<file>), optionally cut off mid-file."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import threading


class Host:
    def __init__(self):
        self.files: dict[str, bytes] = {}  # URL path -> bytes
        self.cut_after: int | None = None  # close the connection after this many bytes
        self.requests: list[str] = []

    def add(self, path: str, data: bytes) -> None:
        self.files[path] = data

    def add_hub(self, repo: str, filename: str, data: bytes) -> None:
        self.files[f"/{repo}/resolve/main/{filename}"] = data


def _handler(host: Host):
    class Handler(http.server.BaseHTTPRequestHandler):
        def _headers(self):
            self.requests_path = self.path.split("?")[0]
            host.requests.append(f"{self.command} {self.requests_path}")
            data = host.files.get(self.requests_path)
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", "0" * 40)
            self.end_headers()
            return data

        def do_HEAD(self):  # noqa: N802
            self._headers()

        def do_GET(self):  # noqa: N802
            data = self._headers()
            if data is None:
                return
            if host.cut_after is not None:
                self.wfile.write(data[: host.cut_after])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


@contextlib.contextmanager
def serve(host: Host):
    """Serves ``host`` on an ephemeral port; yields its base URL ``http://127.0.0.1:PORT``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(host))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
