"""Weights by name: what ``pretrained`` / ``--pretrained`` / ``--checkpoint`` / ``teacher_path`` may say,
resolved into a local file or folder that the layout readers (:mod:`vitzoo.models.convert`) then read.

Accepted, in this order (:func:`resolve`):

* an existing path: itself (a file in the working directory wins over a tag of the same name);
* ``hf-hub:org/repo`` (``@revision`` optional): the repo's ``config.json`` and weights, timm or
  transformers layout, through ``huggingface_hub``;
* an ``http(s)://`` URL: :func:`vitzoo.models.url_download.download_url`;
* a tag of :mod:`vitzoo.models.weights_table` (``deit_small_patch16_224.fb_in1k``) or an architecture with
  one (``deit_small_patch16_224``: its default tag): the hub copy first, so that ``HF_ENDPOINT`` mirrors
  and offline hub caches work, then the release URL with its published hash.

Hub files go through ``huggingface_hub.hf_hub_download``: its cache (the same folder
:func:`~vitzoo.models.url_download.cache_root` puts URL files under), resumed transfers, ``HF_HUB_OFFLINE``,
``HF_ENDPOINT`` and ``HF_TOKEN``. Both are read at each call, not when the module was imported.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from vitzoo.errors import UserError, nearest
from vitzoo.models.registry import get_entry, list_models
from vitzoo.models.url_download import cache_root, download_url, offline, url_cache_path
from vitzoo.models.weights_table import TAGS, Tag, default_tag, find_tag, tags_for

log = logging.getLogger("vitzoo")

HF_HUB = "hf-hub:"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]+)*")  # refs/pr/1, v1.0, main, a sha
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # preferred first, as convert.hub reads them


def resolve(source: str | os.PathLike) -> str:
    """A local path for ``source`` (see the module doc); a string that is none of those is returned as
    is, and the reader reports it as a missing file."""
    text = os.fspath(source)
    if os.path.exists(text):
        return text
    if text.startswith(HF_HUB):
        repo, _, revision = text[len(HF_HUB):].partition("@")
        return str(hub_folder(repo, revision or None))
    if text.startswith(("http://", "https://")):
        return str(download_url(text))
    tag = find_tag(text)
    if tag is not None:
        return str(fetch_tag(tag))
    _refuse_unknown_name(text)
    return text


def arch_of(source: object) -> str | None:
    """The architecture a tag or architecture name implies (None for paths, URLs and hub repos)."""
    if not isinstance(source, str) or os.path.exists(source):
        return None
    tag = find_tag(source)
    return tag.arch if tag is not None else None


def tag_data_config(source: object) -> dict | None:
    """The eval preprocessing of a tag's release (its top-1 was measured with it); None for other sources."""
    tag = find_tag(source) if isinstance(source, str) and not os.path.exists(source) else None
    if tag is None:
        return None
    return {"crop_pct": tag.crop_pct, "interpolation": tag.interpolation, "mean": tag.mean, "std": tag.std}


def resolve_pretrained(name: str, pretrained: object, img_size: int | None) -> tuple[str, object, int | None]:
    """``create_model``'s arguments as timm takes them -> (architecture, weights source or None, img_size).

    ``name`` may carry a tag (``deit_small_patch16_224.fb_in1k``, loaded when ``pretrained`` is True);
    ``pretrained=True`` picks the architecture's default tag; a string is kept for :func:`resolve`. A tag
    trained at another resolution than the architecture's default (``t2t_vit_14.in1k_384``) sets
    ``img_size`` unless the caller gave one.
    """
    arch, tag = name, None
    if "." in name:
        tag = TAGS.get(name)
        if tag is None:
            arch = name.split(".", 1)[0]
            known = [t.tag for t in tags_for(arch)]
            raise UserError(f"unknown weights tag '{name}'{nearest(name, known or list(TAGS))}; "
                            "`vitzoo models --pretrained` lists them")
        arch = tag.arch
    if pretrained is True:
        tag = tag or default_tag(arch)
        if tag is None:
            raise UserError(f"{arch} has no published weights in vitzoo's table; "
                            "`vitzoo models --pretrained` lists the names that have")
        pretrained = tag.tag
    elif isinstance(pretrained, str) and pretrained:
        tag = find_tag(pretrained) if not os.path.exists(pretrained) else None
    else:
        return arch, (pretrained or None), img_size
    default_size = int(get_entry(arch).data_config["input_size"][-1])
    if tag is not None and img_size is None and tag.arch == arch and tag.input_size != default_size:
        img_size = tag.input_size
    return arch, pretrained, img_size


def fetch_tag(tag: Tag) -> Path:
    """The local copy of ``tag``: the hub folder, else the release file; one line when neither comes."""
    failures = []
    if tag.hub:
        try:
            return hub_folder(tag.hub, weights=(tag.hub_weights,))
        except UserError as e:
            failures.append(str(e))
            if tag.url and not offline():  # offline: the one line below names both
                log.warning(f"{tag.tag}: hub copy unavailable ({e}); trying the release URL")
    if tag.url:
        if offline() and not url_cache_path(tag.url).is_file():
            where = f" or the hub repo {tag.hub} in {cache_root()}" if tag.hub else ""
            raise UserError(f"offline (HF_HUB_OFFLINE=1) and {tag.tag} is not in the cache: put {tag.url} at "
                            f"{url_cache_path(tag.url)}{where} (`vitzoo download {tag.tag}` fills it)")
        return download_url(tag.url, tag.sha256)
    if failures and offline():
        raise UserError(f"offline (HF_HUB_OFFLINE=1) and {tag.tag} (hub repo {tag.hub}) is not in the cache "
                        f"{cache_root()}: run `vitzoo download {tag.tag}` where there is internet and copy that "
                        "folder here")
    raise UserError(f"{tag.tag}: {failures[-1]}" if failures else f"{tag.tag}: no source")


def hub_folder(repo: str, revision: str | None = None, weights: tuple[str, ...] = WEIGHT_FILES) -> Path:
    """The snapshot folder holding ``config.json`` and the first of ``weights`` that hub repo ``repo`` has."""
    check_repo_id(repo, revision)
    config = _hub_file(repo, "config.json", revision)
    for name in weights:
        try:
            _hub_file(repo, name, revision)
            break
        except _Missing:
            continue
    else:
        raise UserError(f"hf-hub:{repo} has none of {', '.join(WEIGHT_FILES)} (sharded repos: download "
                        "the folder and pass its path)")
    return config.parent


def check_repo_id(repo: str, revision: str | None = None) -> None:
    """``org/name`` and a plain revision, nothing else: ``..``, an absolute path or extra ``/`` never name a
    cache folder (huggingface_hub writes ``refs/<revision>`` into the cache)."""
    if not _REPO.fullmatch(repo) or ".." in repo:
        raise UserError(f"hf-hub:{repo}: not a hub repo id (expected org/name)")
    if revision is not None and (not _REVISION.fullmatch(revision) or ".." in revision):
        raise UserError(f"hf-hub:{repo}@{revision}: not a revision (a branch, tag or commit)")


class _Missing(UserError):
    """The repo exists but has no such file (another weight file may be there)."""


def _hub_file(repo: str, filename: str, revision: str | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if filename.startswith("/") or ".." in filename.split("/"):
        raise UserError(f"hf-hub:{repo}: refusing file name {filename!r}")
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now: huggingface_hub reads it once, at import
    kwargs = {"revision": revision, "cache_dir": str(cache_root()), "endpoint": endpoint}
    try:  # the cache first, without a request: released weights do not change under their name
        return Path(hf_hub_download(repo, filename, local_files_only=True, **kwargs))
    except (LocalEntryNotFoundError, EntryNotFoundError):
        pass
    try:
        return _verified(Path(hf_hub_download(repo, filename, local_files_only=offline(), **kwargs)), repo)
    except GatedRepoError as e:
        raise UserError(f"hf-hub:{repo} is gated: accept its terms on the hub, then set HF_TOKEN") from e
    except RepositoryNotFoundError as e:
        raise UserError(f"hf-hub:{repo}: no such repo, or it is private (set HF_TOKEN to a token that "
                        "can read it)") from e
    except RevisionNotFoundError as e:
        raise UserError(f"hf-hub:{repo}: no revision {revision!r}") from e
    except LocalEntryNotFoundError as e:
        why = "offline (HF_HUB_OFFLINE=1)" if offline() else "the hub cannot be reached"
        raise UserError(f"{why} and hf-hub:{repo} {filename} is not in the cache {cache_root()}") from e
    except EntryNotFoundError as e:
        raise _Missing(f"hf-hub:{repo} has no {filename}") from e
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise UserError(f"hf-hub:{repo}: HTTP {status}: the repo is private or gated (set HF_TOKEN to a "
                            "token that can read it)") from e
        raise UserError(f"hf-hub:{repo} {filename}: {_first_line(e)}") from e
    except (OSError, ValueError) as e:
        raise UserError(f"hf-hub:{repo} {filename}: {_first_line(e)}") from e


def _verified(path: Path, repo: str) -> Path:
    """A fresh hub download checked against its name: the cache names a large (LFS) file's blob by the
    hub's ETag, its sha256. A mismatch (a corrupt transfer or mirror) removes it; nothing is loaded."""
    blob = path.resolve()
    if not _SHA256.fullmatch(blob.name):
        return path  # a small (git) file: its ETag is a git hash, not a checksum of the bytes
    digest = hashlib.sha256()
    with open(blob, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != blob.name:
        blob.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        raise UserError(f"hf-hub:{repo} {path.name}: sha256 {digest.hexdigest()[:16]}... does not match the "
                        f"hub's {blob.name[:16]}...; the download was removed and nothing was loaded")
    return path


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _refuse_unknown_name(text: str) -> None:
    """A registered architecture without weights, or ``arch.unknown_tag``: say so instead of 'not found'."""
    arch = text.split(".", 1)[0]
    if arch not in list_models() or os.sep in text:
        return
    if "." in text and not text.endswith((".pth", ".pt", ".tar", ".npz", ".safetensors", ".bin", ".ckpt")):
        known = [t.tag for t in tags_for(arch)]
        raise UserError(f"unknown weights tag '{text}'{nearest(text, known or list(TAGS))}; "
                        "`vitzoo models --pretrained` lists them")
    if text == arch:
        raise UserError(f"{arch} has no published weights in vitzoo's table; "
                        "`vitzoo models --pretrained` lists the names that have")
