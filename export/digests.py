"""Content digests of an export's files, and a record of which files were already verified.

The manifest records the sha256 of every file it names. Hashing is the only
reliable way to notice a graph whose weights had a few bytes flipped, but it
costs a read of every byte (about 1.5 GB/s here: seconds for a 7B export), so a
verified file is recorded in the cache under its identity: device, inode, size,
modification and change times. The change time (``st_ctime``) moves with any
write to the file and cannot be set back by a user, so a file that matches its
record is the very file that was hashed. Only a file without a matching record
is hashed again: the first load after an export or a copy, and every load after
the file changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

from holitom.errors import ManifestError

DIGEST_ALGORITHM = "sha256"
_CHUNK = 1 << 20
_RECORD_DIR = "verified"


def file_digest(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.new(DIGEST_ALGORITHM)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def record_path(folder: Path) -> Path:
    """Where the verification record of an export folder lives: in the cache, keyed by the folder's real path."""
    from holitom.paths import cache_root

    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:32]
    return cache_root() / _RECORD_DIR / f"{key}.json"


def _load_record(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}  # a damaged record only costs a re-hash; it is rewritten below
    return data if isinstance(data, dict) else {}


def _save_record(path: Path, record: dict) -> None:
    """Write atomically (a concurrent reader sees the old or the new record); a failure to write only costs a re-hash."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        tmp.write_text(json.dumps(record, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # the cache root was checked writable; losing a race or a full disk must not fail a run


def verify_files(folder: Path, files: dict[str, dict], manifest_path: Path, fix: str) -> int:
    """Check every file's size and sha256 against ``files`` (name -> {"bytes", "sha256"}).

    Returns the number of bytes hashed (0 when every file matched its record).
    Raises ManifestError naming the first file that is missing, of another size
    or of other content; ``fix`` is the advice appended to the message.
    """
    where = record_path(folder)
    record = _load_record(where)
    hashed = 0
    changed = False
    for name, want in files.items():
        path = folder / name
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ManifestError(f"file '{path}' named in {manifest_path.name} is missing; {fix}") from None
        except OSError as exc:
            from holitom.paths import describe_os_error

            raise ManifestError(f"file '{path}' named in {manifest_path.name} cannot be read: {describe_os_error(exc)}; {fix}") from None
        if st.st_size != want["bytes"]:
            raise ManifestError(
                f"file '{path}' has {st.st_size} bytes but {manifest_path.name} records {want['bytes']}: it is truncated or "
                f"was modified; {fix}"
            )
        seen = record.get(name)
        if isinstance(seen, dict) and seen.get("identity") == _identity(st) and seen.get(DIGEST_ALGORITHM) == want[DIGEST_ALGORITHM]:
            continue
        try:
            digest = file_digest(path)
        except OSError as exc:
            from holitom.paths import describe_os_error

            raise ManifestError(f"file '{path}' named in {manifest_path.name} cannot be read: {describe_os_error(exc)}; {fix}") from None
        hashed += st.st_size
        if digest != want[DIGEST_ALGORITHM]:
            raise ManifestError(
                f"file '{path}' does not have the content {manifest_path.name} records ({DIGEST_ALGORITHM} {digest[:12]}..., "
                f"expected {want[DIGEST_ALGORITHM][:12]}...): it is corrupt or was replaced by another file; {fix}"
            )
        record[name] = {"identity": _identity(st), DIGEST_ALGORITHM: digest}
        changed = True
    if changed:
        _save_record(where, {k: v for k, v in record.items() if k in files})
    return hashed


__all__ = ["DIGEST_ALGORITHM", "file_digest", "record_path", "verify_files"]
