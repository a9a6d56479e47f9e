"""The file-system boundary: paths the user names, places the toolkit writes, and its cache.

Every path from a flag, an argument or ``HOLITOM_CACHE`` goes through here once, so
a bad one is a typed error that names the real cause (no such user, a name too
long, a symlink loop, a FIFO, no permission...) instead of a traceback or a
misleading message from the library that reads the file later.

Outputs are written through a staging folder next to the target
(:func:`staged_output`): created with the user's umask, locked while its owner
lives (an ``flock`` the kernel drops when the process dies, even on SIGKILL),
renamed into place when complete, removed on any failure or interruption, and
recognised and removed by the next write into the same place when its owner was
killed.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from holitom.errors import ConfigError, HolitomError, OutputError, raise_if_stopped

CACHE_ENV = "HOLITOM_CACHE"
STAGING_INFIX = ".partial-"
_LOCK_NAME = ".holitom-staging.lock"
# Seconds between a staging folder's mkdir and its owner's flock, during which it is never judged stale.
_STAGING_GRACE_S = 2.0

# errno -> what the user should read, for the failures a path itself can cause.
_PATH_ERRNOS = {
    errno.ENAMETOOLONG: "the path (or one of its names) is too long for the file system",
    errno.ELOOP: "it is a symbolic-link loop (a link that points back to itself)",
    errno.EACCES: "permission denied on it or on a folder above it",
    errno.EPERM: "the operation is not permitted there",
    errno.ENOTDIR: "a part of the path above it is a file, not a folder",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
}


def describe_os_error(exc: OSError) -> str:
    """The reason an OSError gives about a path, in words (not the library's wording)."""
    return _PATH_ERRNOS.get(exc.errno, exc.strerror or str(exc))


def expand_user(value: str | os.PathLike, what: str, error: type[HolitomError] = ConfigError) -> Path:
    """``Path(value).expanduser()`` where an unknown ``~user`` is a typed error, not a RuntimeError."""
    text = os.fspath(value)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text:
        raise error(f"{what} is empty; pass a path.")
    if "\x00" in text:
        raise error(f"{what} {text!r} contains a NUL character, which no path may hold.")
    try:
        return Path(text).expanduser()
    except RuntimeError:  # pathlib: "Could not determine home directory"
        user = text[1:].split("/", 1)[0]
        raise error(
            f"{what} '{text}' starts with '~{user}', but there is no user '{user}' on this machine (or no home folder "
            "for the current user); spell the path out."
        ) from None


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def existing_path(value: str | os.PathLike, what: str, want: str = "file", error: type[HolitomError] = ConfigError) -> Path:
    """Check that ``value`` names a readable regular file (``want="file"``) or folder (``"dir"``).

    Raises ``error`` naming the real cause: unknown ``~user``, missing, a name too
    long, a symlink loop, no permission, a FIFO / socket / device, the wrong kind.
    """
    path = expand_user(value, what, error)
    try:
        st = path.stat()  # follows links: a dangling or looping link fails here
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            if path.is_symlink():
                raise error(f"{what} '{path}' is a symbolic link to '{os.readlink(path)}', which does not exist; fix the link.") from None
            where = "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"
            raise error(f"{what} '{path}' does not exist{where}; check the path.") from None
        raise error(f"{what} '{path}' cannot be used: {describe_os_error(exc)}.") from None
    kind = _kind(st.st_mode)
    expected = "a directory" if want == "dir" else "a file"
    if kind != expected:
        hint = "pass the folder itself" if want == "dir" else "pass a regular file (a pipe or device cannot be read twice or measured)"
        raise error(f"{what} '{path}' is {kind}, not {expected}; {hint}.")
    mode = os.R_OK | (os.X_OK if want == "dir" else 0)
    if not os.access(path, mode):
        raise error(f"{what} '{path}' is not readable by this user (permission denied); fix its permissions (chmod) or copy it.")
    return path


# ---- outputs ---------------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output_dir(value: str | os.PathLike, what: str, replace: bool = False, replaceable=None) -> Path:
    """Check, before any work, that a folder can be created (or, with ``replace``, replaced) at ``value``.

    ``replaceable(path) -> bool`` says whether an existing folder may be replaced
    (e.g. it is an earlier export); anything else there is refused, so nothing the
    user did not make with this toolkit is ever deleted.
    """
    out = expand_user(value, what, OutputError)
    resolved = Path(os.path.abspath(out))
    if resolved == Path(resolved.anchor) or resolved in (Path.home().resolve(),):
        raise OutputError(f"{what} '{out}' is the file-system root or the home folder; choose a new folder.")
    cwd = Path.cwd().resolve()
    if replace and (resolved == cwd or resolved in cwd.parents):
        raise OutputError(f"{what} '{out}' is the working directory or a folder above it; replacing it is refused, choose a new folder.")
    try:
        st = os.stat(out)
    except (FileNotFoundError, NotADirectoryError):
        st = None  # check_writable_parent names the file in the way, if any
    except OSError as exc:
        raise OutputError(f"{what} '{out}' cannot be used: {describe_os_error(exc)}.") from None
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{what} '{out}' exists and is {_kind(st.st_mode)}; choose a folder path that does not exist.")
        if not replace:
            raise OutputError(f"{what} '{out}' exists; choose another path or pass --force to replace it.")
        if replaceable is not None and not replaceable(out) and any(out.iterdir()):
            raise OutputError(
                f"{what} '{out}' exists and is not an earlier output of this command; --force replaces only those. "
                "Choose another path, or remove the folder yourself."
            )
    check_writable_parent(out, what)
    return out


def check_writable_dir(value: str | os.PathLike, what: str) -> Path:
    """A folder that files will be written into: an existing writable folder, or one that can be created."""
    out = expand_user(value, what, OutputError)
    _writable_folder_at_or_above(Path(os.path.abspath(out)), out, what)
    return out


def check_writable_parent(out: Path, what: str) -> Path:
    """The nearest existing folder above ``out`` must be a writable folder (``out``'s parents are created)."""
    return _writable_folder_at_or_above(Path(os.path.abspath(out)).parent, out, what)


def _writable_folder_at_or_above(start: Path, out: Path, what: str) -> Path:
    """The nearest existing path from ``start`` upwards, checked to be a folder this user can write into."""
    folder = start
    while True:
        try:
            st = os.stat(folder)
            break
        except (FileNotFoundError, NotADirectoryError):
            folder = folder.parent
        except OSError as exc:
            raise OutputError(f"{what} '{out}' cannot be used: {describe_os_error(exc)} ('{folder}').") from None
    here = folder == Path(os.path.abspath(out))
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(
            f"{what} '{out}' exists and is {_kind(st.st_mode)}, not a folder; pass a folder path." if here
            else f"{what} '{out}' cannot be created: '{folder}' is {_kind(st.st_mode)}, not a folder."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(
            f"{what} '{out}' is not writable by this user; choose another folder." if here
            else f"{what} '{out}' cannot be created: the folder '{folder}' is not writable by this user; choose another place."
        )
    return folder


def _try_lock(fd: int) -> bool:
    import fcntl  # POSIX; the toolkit runs on Linux and macOS

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove staging folders of ``out`` left by killed processes (their lock is free); return them.

    A staging folder whose owner still runs holds its lock and is left alone.
    """
    removed = []
    prefix = f".{out.name}{STAGING_INFIX}"
    try:
        candidates = [p for p in out.parent.iterdir() if p.name.startswith(prefix)]
    except FileNotFoundError:
        return removed
    for folder in candidates:
        lock = folder / _LOCK_NAME
        try:
            fd = os.open(lock, os.O_RDONLY)
        except FileNotFoundError:
            fd = None
        except OSError:
            continue  # not ours to judge (permissions): leave it
        try:
            if fd is not None and not _try_lock(fd):
                continue  # a live process owns it
            # A folder (or lock) made this instant may belong to a process between mkdir and flock.
            try:
                age = time.time() - (os.fstat(fd).st_mtime if fd is not None else folder.stat().st_mtime)
            except FileNotFoundError:
                continue
            if age < _STAGING_GRACE_S:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            if fd is not None:
                os.close(fd)
    return removed


@contextmanager
def staged_output(out: Path, what: str) -> Iterator[Path]:
    """A locked staging folder next to ``out``; the caller fills it and then calls :func:`move_into_place`.

    The folder is created with the user's umask (``mkdtemp`` would make it 0700) and
    is removed when the block raises, including KeyboardInterrupt and the SIGTERM
    the CLI turns into one.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{what} '{out}' cannot be created: {describe_os_error(exc)}.") from None
    remove_stale_staging(out)
    while True:
        tmp = out.parent / f".{out.name}{STAGING_INFIX}{secrets.token_hex(4)}"
        try:
            tmp.mkdir(mode=0o777)  # the umask applies, as for any folder the user makes
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"{what} '{out}' cannot be created: {describe_os_error(exc)} ('{out.parent}').") from None
    fd = None
    try:
        fd = os.open(tmp / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        _try_lock(fd)
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if fd is not None:
            os.close(fd)


def move_into_place(tmp: Path, out: Path, replace: bool, what: str, keep_existing: bool = False) -> bool:
    """Rename the finished staging folder to ``out``. Returns False when ``out`` was kept instead.

    ``keep_existing``: another process completed ``out`` meanwhile (a shared cache
    entry): keep its copy and drop ours. Otherwise an existing ``out`` is replaced
    only with ``replace`` (checked before the work; it may have appeared meanwhile).
    A command asked to stop publishes nothing, even if its stop was swallowed on the way.
    """
    raise_if_stopped()  # the caller's staged_output then removes tmp
    (tmp / _LOCK_NAME).unlink(missing_ok=True)
    if out.exists():
        if keep_existing:
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        if not replace:
            shutil.rmtree(tmp, ignore_errors=True)
            raise OutputError(f"{what} '{out}' appeared while this command ran; nothing was replaced, run it again with --force to replace it.")
        old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
        try:
            out.rename(old)
        except FileNotFoundError:  # another process removed or replaced it meanwhile
            old = None
        try:
            os.replace(tmp, out)
        except OSError:
            # Another process put its own complete copy there between the two renames: keep that one.
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return True
    try:
        os.rename(tmp, out)
    except OSError as exc:
        if not out.is_dir():  # not a lost race: the file system refused the rename itself
            shutil.rmtree(tmp, ignore_errors=True)
            raise OutputError(f"{what} '{out}' cannot be created: {describe_os_error(exc)}.") from None
        shutil.rmtree(tmp, ignore_errors=True)  # lost a race: another process put its copy there first
        if keep_existing or replace:
            return False
        raise OutputError(f"{what} '{out}' appeared while this command ran; nothing was replaced, run it again with --force to replace it.") from None
    return True


# ---- the cache -------------------------------------------------------------------------------


def cache_root() -> Path:
    """``$HOLITOM_CACHE`` (an empty value counts as unset), else ``~/.cache/holitom``; checked to be usable.

    Never the working directory by accident: a relative ``HOLITOM_CACHE`` is made
    absolute so the message shows where it points.
    """
    value = os.environ.get(CACHE_ENV, "")
    if value.strip():
        root = Path(os.path.abspath(expand_user(value, f"{CACHE_ENV}", ConfigError)))
        origin = f"{CACHE_ENV}='{value}'"
    else:
        root = Path.home() / ".cache" / "holitom"
        origin = f"the cache folder (set {CACHE_ENV} to move it)"
    try:
        st = os.stat(root)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise ConfigError(f"{origin} cannot be used: {describe_os_error(exc)}; point {CACHE_ENV} at a writable folder.") from None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{origin} points at '{root}', which is {_kind(st.st_mode)}; point {CACHE_ENV} at a folder.")
    if st is not None and not os.access(root, os.W_OK | os.X_OK):
        raise ConfigError(f"{origin} points at '{root}', which is not writable by this user; point {CACHE_ENV} at a writable folder.")
    if st is None:
        try:
            check_writable_parent(root, CACHE_ENV)
        except OutputError as exc:
            raise ConfigError(f"{origin} cannot be created ({exc}); point {CACHE_ENV} at a writable folder.") from None
    return root


__all__ = [
    "CACHE_ENV",
    "cache_root",
    "check_output_dir",
    "check_writable_dir",
    "check_writable_parent",
    "describe_os_error",
    "existing_path",
    "expand_user",
    "move_into_place",
    "remove_stale_staging",
    "staged_output",
]
