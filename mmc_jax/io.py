"""Atomic result files: written to a temporary file, then renamed into place.

A crash or a kill never leaves a truncated ``results.json``: readers see the old file or the
new one.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any


def write_atomic(path, data: str | bytes) -> pathlib.Path:
    """Writes ``data`` to ``path`` atomically (same-folder temp file, fsync, rename)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path, obj: Any) -> pathlib.Path:
    """Writes ``obj`` as indented JSON, atomically."""
    return write_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def markdown_section(title: str, lines: list[str]) -> str:
    """A results.md section: ``## title``, a blank line, then ``lines``."""
    return "\n".join([f"## {title}", "", *lines]) + "\n"


def save_figure(path, fig) -> pathlib.Path:
    """Saves a matplotlib figure as PNG atomically and closes it."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return write_atomic(path, buffer.getvalue())
