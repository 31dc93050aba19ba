"""A local stand-in for the Hugging Face hub and for release URLs, so weight downloads are tested offline.

Hub side (what ``huggingface_hub.hf_hub_download`` asks, huggingface_hub 2.x ``file_download.py``):
``HEAD`` / ``GET /{org}/{name}/resolve/{revision}/{file}`` answered with ``X-Repo-Commit``, ``ETag`` and
``Content-Length``; a missing file is a 404 with ``X-Error-Code: EntryNotFound``, a missing repo a 404
with ``X-Error-Code: RepoNotFound``, a private repo without ``Authorization: Bearer <token>`` a 401.
URL side: ``GET /files/{name}`` serves a file; ``cut`` files send half their bytes (with the full
``Content-Length``) the first ``cut`` times, ``slow`` files trickle. Every request is logged.
"""
from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from safetensors.torch import save as save_safetensors

from vitzoo import create_model
from vitzoo.models import weights_table
from vitzoo.models.weights_table import Tag

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.private: dict[str, str] = {}  # repo -> the token that reads it
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}  # file -> how many more times to cut the transfer
        self.slow: set[str] = set()  # file names (URL or hub) sent in 8 slices, 0.1 s apart
        self.corrupt: set[str] = set()  # hub file names whose bytes differ from their ETag
        self.log: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                server._answer(self, body=False)

            def do_GET(self):
                server._answer(self, body=True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def requests(self, method: str | None = None) -> list[str]:
        with self._lock:
            return [p for m, p in self.log if method in (None, m)]

    def _answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        with self._lock:
            self.log.append((h.command, h.path))
        parts = h.path.split("?")[0].strip("/").split("/")
        if parts[0] == "files" and len(parts) == 2:
            return self._send_file(h, parts[1], body)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, filename = f"{parts[0]}/{parts[1]}", "/".join(parts[4:])
            return self._send_hub(h, repo, filename, body)
        self._status(h, 404, {})

    def _send_hub(self, h, repo: str, filename: str, body: bool) -> None:
        if repo not in self.repos:
            return self._status(h, 404, {"X-Error-Code": "RepoNotFound"})
        token = self.private.get(repo)
        if token is not None and h.headers.get("Authorization") != f"Bearer {token}":
            return self._status(h, 401, {"X-Error-Code": "RepoNotFound"})  # as the hub answers it
        data = self.repos[repo].get(filename)
        if data is None:
            return self._status(h, 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
        etag = hashlib.sha256(data).hexdigest()
        if filename in self.corrupt:  # the bytes change in transit, the ETag (the sha256) still names the original
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"', "Content-Length": str(len(data))}
        if filename.endswith(".safetensors"):  # LFS files: the hub's headers for them
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
        self._status(h, 200, headers)
        if body:
            self._write(h, filename, data)

    def _send_file(self, h, name: str, body: bool) -> None:
        data = self.files.get(name)
        if data is None:
            return self._status(h, 404, {})
        headers = {"Content-Length": str(len(data))}
        if not body:
            return self._status(h, 200, headers)
        with self._lock:
            cut = self.cut.get(name, 0) > 0
            if cut:
                self.cut[name] -= 1
        h.send_response(200)
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if cut:
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        self._write(h, name, data)

    def _write(self, h, name: str, data: bytes) -> None:
        step = max(len(data) // 8, 1)
        for i in range(0, len(data), step):
            h.wfile.write(data[i:i + step])
            if name in self.slow:
                time.sleep(0.1)

    @staticmethod
    def _status(h, code: int, headers: dict[str, str], data: bytes | None = None) -> None:
        h.send_response(code)
        for k, v in headers.items():
            h.send_header(k, v)
        if "Content-Length" not in headers:
            h.send_header("Content-Length", str(len(data or b"")))
        h.end_headers()
        if data:
            h.wfile.write(data)


# ----- a tiny DeiT served both ways, and the fixtures the tests share
ARCH = "deit_tiny_patch16_224"
TINY = {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}
REPO = "test-org/deit-tiny-test"
TAG = f"{ARCH}.test_in1k"


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(ARCH, num_classes=10, img_size=32, **TINY).eval()


def timm_folder_files(model: torch.nn.Module) -> dict[str, bytes]:
    """What ``timm.models.push_to_hub`` uploads: config.json (architecture, model_args) + model.safetensors."""
    config = {"architecture": ARCH, "num_classes": 10, "model_args": TINY,
              "pretrained_cfg": {"input_size": [3, 32, 32]}}
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    return {"config.json": json.dumps(config).encode(), "model.safetensors": save_safetensors(sd)}


def release_file(model: torch.nn.Module) -> bytes:
    """A DeiT release ``.pth`` (``{"model": state_dict}``)."""
    buf = io.BytesIO()
    torch.save({"model": model.state_dict()}, buf)
    return buf.getvalue()


@pytest.fixture(name="server")
def server_fixture(tmp_path, monkeypatch):
    with HubServer() as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
        for var in ("HF_HUB_OFFLINE", "HF_TOKEN"):
            monkeypatch.delenv(var, raising=False)
        yield srv


@pytest.fixture(name="model")
def model_fixture(server, monkeypatch):
    """A tiny DeiT on the server as a hub repo and as a release file, and a tag naming both."""
    m = tiny_model()
    data = release_file(m)
    server.repos[REPO] = timm_folder_files(m)
    server.files["tiny.pth"] = data
    tag = Tag(TAG, f"{server.url}/files/tiny.pth", REPO, hashlib.sha256(data).hexdigest()[:8], None, None,
              "apache-2.0", "written by the test", input_size=32, num_classes=10)
    monkeypatch.setitem(weights_table.TAGS, TAG, tag)
    return m
