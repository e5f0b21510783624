"""Install a ggml model: convert CTranslate2 weights, re-quantize a ggml file, or download one."""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from appliance.errors import CorruptModelError, SourceMissingError, UsageError
from appliance.models import catalog
from appliance.models import convert
from appliance.models import ctranslate2
from appliance.models import ggml
from appliance.models import mel
from appliance.models import quantize
from appliance.models import store

Progress = Callable[[str, int, int], None]
_DOWNLOAD_CHUNK = 1 << 20
# A model name becomes part of a file name in the models folder: no separators, no dot-dot.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _silent(stage: str, done: int, total: int) -> None:
    """The default progress callback: say nothing."""


@dataclass
class Prepared:
    """Everything needed to write a model file, from whatever source."""

    hparams: ggml.Hparams
    filters: np.ndarray
    tokens: list[bytes]
    tensors: Iterator[tuple[str, np.ndarray]]
    source: str
    raw: Path | None = None  # a ggml file already in the wanted quant: copied as it is


def _from_ct2(parts: list[Path], vocabulary: Path, q: ggml.Quant, name: str, source: str) -> Prepared:
    model = ctranslate2.load(parts, vocabulary)
    hp = convert.hparams(model, q)
    catalog.check_fits(name, hp.n_audio_state, q)
    return Prepared(
        hp,
        mel.filterbank(hp.n_mels),
        convert.token_bytes(model.vocabulary),
        convert.tensors(model, hp),
        source,
    )


def _from_ggml(path: Path, q: ggml.Quant, name: str, source: str) -> Prepared:
    found = ggml.read_model(path)
    have = found.hparams.quant
    catalog.check_fits(name, found.hparams.n_audio_state, q)
    if have is q:
        return Prepared(found.hparams, found.filters, found.tokens, iter(()), source, raw=path)
    if have is not ggml.F16:
        raise UsageError(
            f"{path} is {have.name}: only an f16 ggml file can be re-quantized "
            f"(install it as it is with --quant {have.name})"
        )
    hp = dataclasses.replace(found.hparams, ftype=ggml.header_ftype(q))
    return Prepared(hp, found.filters, found.tokens, ggml.iter_tensors(path, found), source)


def _from_path(path: Path, q: ggml.Quant, name: str) -> Prepared:
    """A local CTranslate2 folder or ggml file (a fine-tuned model, say)."""
    source = f"path:{path.resolve()}"
    if path.is_dir():
        return _from_ct2([path / "model.bin"], path, q, name, source)
    if path.is_file():
        return _from_ggml(path, q, name, source)
    raise SourceMissingError(f"{path}: no such file or folder")


def _from_pypi(entry: catalog.CatalogModel, q: ggml.Quant) -> Prepared:
    if not entry.pypi:
        packages = ", ".join(dict.fromkeys(p.package for p in entry.parts))
        raise SourceMissingError(
            f"{entry.name} has no usable PyPI source ({packages} are truncated upstream): "
            "use --source official or --from PATH"
        )
    catalog.check_fits(entry.name, entry.width, q)
    parts = [part.path() for part in entry.parts]
    return _from_ct2(parts, entry.vocabulary.path(), q, entry.name, entry.source_label())


def _read_chunk(response: http.client.HTTPResponse, url: str) -> bytes:
    """The next chunk; a dropped connection is the source's fault, not the disk's."""
    try:
        return response.read(_DOWNLOAD_CHUNK)
    except (OSError, http.client.HTTPException) as err:
        raise SourceMissingError(f"{url}: download interrupted ({err})") from err


def download(url: str, expected_sha256: str, target: Path, progress: Progress = _silent) -> None:
    """Fetch url into target (atomically), refusing it unless its sha256 matches."""
    try:
        response = urllib.request.urlopen(url, timeout=60)
    except (urllib.error.URLError, OSError) as err:
        raise SourceMissingError(f"{url}: cannot download ({err})") from err
    total = int(response.headers.get("Content-Length") or 0)
    digest = hashlib.sha256()
    with response, store.atomic_file(target) as out:
        while chunk := _read_chunk(response, url):
            digest.update(chunk)
            out.write(chunk)
            progress("downloading", out.bytes, total)
        if total and out.bytes != total:
            raise CorruptModelError(f"{url}: download ended after {out.bytes} of {total} bytes")
        if digest.hexdigest() != expected_sha256:
            raise CorruptModelError(f"{url}: sha256 {digest.hexdigest()} is not the pinned one")


def _official(entry: catalog.CatalogModel, q: ggml.Quant, directory: Path, progress: Progress):
    """Download the official file for q, or the official f16 file to re-quantize."""
    base = os.environ.get("MEETING_APPLIANCE_MODEL_URL", catalog.OFFICIAL_URL).rstrip("/")
    pick = q.name if q.name in entry.official else "f16"
    if pick not in entry.official:
        raise SourceMissingError(f"no official ggml file is pinned for {entry.name}")
    url = f"{base}/{entry.official_file(pick)}"
    fetched = directory / f".download-{entry.official_file(pick)}"
    download(url, entry.official[pick], fetched, progress)
    return fetched, f"official:{url}"


def install(
    name: str,
    quant_name: str,
    directory: Path,
    source: str = "pypi",
    from_path: Path | None = None,
    progress: Progress = _silent,
) -> tuple[Path, bool]:
    """Install NAME as QUANT into directory; return the file and whether anything was written."""
    if not _NAME.fullmatch(name):
        raise UsageError(f"model name {name!r}: use letters, digits, '.', '_' and '-' only")
    q = catalog.quant(quant_name)
    target = store.model_path(directory, name, q.name)
    if target.is_file():
        try:
            if store.Sidecar.load(target) is not None:
                store.verify(target)
                return target, False
        except CorruptModelError:
            pass  # reinstall over a damaged file or install record
    fetched = None
    try:
        if from_path is not None:
            prepared = _from_path(from_path, q, name)
        elif source == "official":
            entry = catalog.lookup(name)
            catalog.check_fits(name, entry.width, q)
            fetched, label = _official(entry, q, directory, progress)
            prepared = _from_ggml(fetched, q, name, label)
        else:
            prepared = _from_pypi(catalog.lookup(name), q)
        _write(target, prepared, q, name, progress)
    finally:
        if fetched is not None:
            fetched.unlink(missing_ok=True)
    return target, True


def _write(target: Path, prepared: Prepared, q: ggml.Quant, name: str, progress: Progress) -> None:
    with store.atomic_file(target) as out:
        if prepared.raw is not None:
            with open(prepared.raw, "rb") as source:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
        else:
            ggml.write_model(
                out,
                prepared.hparams,
                prepared.filters,
                prepared.tokens,
                prepared.tensors,
                quantize.encode,
                lambda done, total: progress(f"writing {target.name}", done, total),
            )
    record = store.Sidecar(
        name=name,
        quant=q.name,
        source=prepared.source,
        sha256=out.digest.hexdigest(),
        bytes=out.bytes,
        multilingual=prepared.hparams.multilingual,
        created=store.Sidecar.now(),
    )
    try:
        # A model without its record would pass a later install unchecked: keep both or neither
        # (the disk can fill between the model and its sidecar).
        record.save(target)
        store.verify(target)
    except BaseException:
        target.unlink(missing_ok=True)
        store.sidecar_path(target).unlink(missing_ok=True)
        raise
