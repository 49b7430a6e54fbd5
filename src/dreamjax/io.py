"""File I/O: the only place that writes files. Atomic writes, JSON, JSONL and npz helpers.

Every write goes to a uniquely named temporary file in the target's folder (`.<name>.<pid>.<rand>
.tmp<suffix>`), is flushed and fsynced, and then `os.replace`d onto the target, so a reader sees
the old file or the new one, never a part; the temporary file is removed if the write fails. A
process killed mid-write leaves only a hidden temporary file, which `remove_stale_tmp` deletes.
JSONL logs are appended line by line; `read_jsonl` drops a torn last line (a kill during an
append) and refuses a corrupt line anywhere else. Nothing here unpickles: `load_npz` passes
`allow_pickle=False`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dreamjax.errors import ArtifactError

__all__ = ["ArtifactError"]

TMP_TAG = ".tmp"


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_TAG}"
                          f"{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix) for a writer that wants a file name;
    on success it is fsynced and moved onto `path`, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes | str) -> Path:
    """Atomically write `data` (str is UTF-8 encoded) to `path`."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
    return path


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2,
               sort_keys: bool = False) -> Path:
    """Atomically write `obj` as JSON (with a trailing newline)."""
    return write_bytes(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's value; `ArtifactError("<path>: ...")` if missing or unreadable."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: unreadable JSON ({type(e).__name__}: {e})") from None


def save_npz(path: str | os.PathLike, *, compressed: bool = False, **arrays: Any) -> Path:
    """Atomically write arrays to an .npz (compressed or not)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)
        f.flush()
    return path


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an .npz (never unpickling); `ArtifactError` for a missing or corrupt one."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, zlib.error) as e:
        raise ArtifactError(f"{path}: unreadable npz ({type(e).__name__}: {e})") from None


def append_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Append records, one JSON object a line, then flush and fsync."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records)
    with open(path, "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    """Atomically replace a JSONL file with `records`."""
    return write_bytes(path, "".join(json.dumps(r) + "\n" for r in records))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every record of a JSONL file ([] if it does not exist). A torn last line (a kill during
    an append) is dropped; a corrupt line before the last raises `ArtifactError`."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ArtifactError(f"{path}: corrupt line {i + 1}") from None
    return out


def truncate_jsonl(path: str | os.PathLike, key: str, upto: int) -> list[dict]:
    """Keep only the records with `record[key] <= upto` (a resumed run's log is cut back to its
    checkpoint); returns them."""
    kept = [r for r in read_jsonl(path) if int(r.get(key, 0)) <= upto]
    if Path(path).exists():
        write_jsonl(path, kept)
    return kept


def remove_stale_tmp(folder: str | os.PathLike) -> None:
    """Delete temporary files that a killed writer left in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for p in folder.glob(f".*{TMP_TAG}*"):
        if p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
