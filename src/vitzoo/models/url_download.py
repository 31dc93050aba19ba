"""Plain-URL downloads into vitzoo's cache: one lock per file, a progress bar, the published hash checked,
an atomic rename, and a retry for a transfer that breaks off.

What the Hugging Face hub client does for hub files (:mod:`vitzoo.models.hub`), done here for release
URLs (DeiT's dl.fbaipublicfiles.com, T2T-ViT's GitHub releases, unilm's blob store, Google's bucket):

* the file lands at :func:`url_cache_path` (``<cache>/vitzoo-urls/<sha256(url)[:12]>/<file name>``),
  written as ``<name>.part`` and renamed only once whole and verified, so a reader never sees half a file;
* a transfer shorter than its ``Content-Length`` is retried (``RETRIES`` times); a hash mismatch is not
  (the server sent the wrong bytes): the file is removed and the error is one line;
* two processes asking for the same URL (torchrun ranks) take a file lock: one downloads, the others
  wait and then find the file in the cache;
* ``HF_HUB_OFFLINE=1`` (the hub client's switch, honoured for both sources) never touches the network.
"""
from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from pathlib import Path

from filelock import FileLock
from tqdm import tqdm

from vitzoo.errors import UserError

RETRIES = 3
CHUNK = 1 << 20
TIMEOUT_S = 30


def offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it (read at each call, so a test or a job can set it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def cache_root() -> Path:
    """The hub cache as huggingface_hub finds it (``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``~/.cache/huggingface/hub``): hub repos and URL files in one folder, to copy to a cluster whose compute
    nodes have no internet."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def url_cache_path(url: str) -> Path:
    """Where ``url`` is cached. The folder is named by the URL's hash, the file by the URL's last path
    part, which must be a plain name: ``..``, an empty name or a separator never reach the file system."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UserError(f"{url}: not an http(s) URL")
    name = urllib.parse.unquote(parsed.path.rsplit("/", 1)[-1])
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise UserError(f"{url}: the URL does not end in a file name")
    return cache_root() / "vitzoo-urls" / hashlib.sha256(url.encode()).hexdigest()[:12] / name


def download_url(url: str, sha256: str | None = None, dest: Path | None = None) -> Path:
    """The cached file for ``url``, downloaded first if needed; ``sha256`` (or its published prefix, as
    DeiT's file names carry) is checked before the file takes its name."""
    dest = dest or url_cache_path(url)
    if dest.is_file():
        return dest
    if offline():
        raise UserError(f"offline (HF_HUB_OFFLINE=1) and {url} is not in the cache: put the file at {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):  # torchrun ranks: the first downloads, the others wait here
        if dest.is_file():
            return dest
        last = ""
        for attempt in range(1, RETRIES + 1):
            try:
                _fetch(url, dest, sha256)
                return dest
            except _Broken as e:
                last = str(e)
                time.sleep(min(2 ** (attempt - 1), 4) * 0.1)
        raise UserError(f"{url}: download failed after {RETRIES} tries ({last}); nothing was kept")


class _Broken(Exception):
    """A transfer that may succeed when tried again (cut short, connection reset, 5xx)."""


def _fetch(url: str, dest: Path, sha256: str | None) -> None:
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    received = 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "vitzoo"})
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if total is not None and received != total:
            raise _Broken(f"received {received} of {total} bytes")
    except urllib.error.HTTPError as e:
        part.unlink(missing_ok=True)
        if e.code >= 500:
            raise _Broken(f"HTTP {e.code}") from e
        raise UserError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, HTTPException, ConnectionError, TimeoutError) as e:
        part.unlink(missing_ok=True)
        raise _Broken(f"{type(e).__name__}: {getattr(e, 'reason', e)}") from e
    except _Broken:
        part.unlink(missing_ok=True)
        raise
    got = digest.hexdigest()
    if sha256 and not got.startswith(sha256.lower()):
        part.unlink(missing_ok=True)
        raise UserError(f"{url}: sha256 {got[:16]}... does not match the published {sha256}; "
                        "the download was removed and nothing was loaded")
    os.replace(part, dest)  # atomic: the cache holds whole, verified files only
