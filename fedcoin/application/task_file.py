"""The file where an FL server keeps its task id, so that a restart resumes the task."""

from __future__ import annotations

from pathlib import Path

from fedcoin.errors import ConfigError


def load_task_id(path: Path | None) -> bytes | None:
    """The task id saved by an earlier run, if any."""
    if path is None or not path.exists():
        return None
    text = path.read_text().strip()
    try:
        task_id = bytes.fromhex(text)
    except ValueError:
        task_id = b""
    if len(task_id) != 32:
        raise ConfigError(f"{path} does not hold a task id (64 hex digits): {text[:80]!r}")
    return task_id


def save_task_id(path: Path | None, task_id: bytes) -> None:
    """Keep the task id (written whole, then renamed: a crash leaves the old file or the new)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(task_id.hex() + "\n")
    tmp.replace(path)
