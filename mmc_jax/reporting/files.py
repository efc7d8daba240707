"""Result files written atomically, what a refused write raises, and the layout version of
the folders the library writes.

Every file is written to a temporary file beside it and renamed into place: a crash, a kill
or a full disk never leaves a truncated ``results.json``, readers see the old file or the
new one. A write the operating system refuses (disk full, no permission, read-only folder)
raises :class:`~mmc_jax.runtime.errors.WriteError` naming the file, after removing the temporary
file.

Folders also record the *layout version* of what they hold (:data:`LAYOUT_VERSION`, in
``layout.json``), so a folder written by a newer mmc_jax, whose files this one may misread,
is refused with one line rather than read wrongly. Folders written before versions existed
have no ``layout.json`` and count as version 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import tempfile
from typing import Any, Optional

from mmc_jax.runtime import distributed
from mmc_jax.runtime.errors import InputError, WriteError

#: The layout of the folders this mmc_jax writes; it reads every layout up to this one.
#: 1: folders without a version (flat configs, .npz models); 2: versioned folders.
LAYOUT_VERSION = 2
#: The file that records a folder's layout version.
LAYOUT_FILE = "layout.json"


def write_atomic(path, data: str | bytes) -> pathlib.Path:
    """Writes ``data`` to ``path`` atomically (same-folder temp file, fsync, rename).

    In a run of several processes (:mod:`mmc_jax.runtime.distributed`) only process 0
    writes; the others compute the same data and skip the write.

    Raises:
      WriteError: the OS refused the write; the previous file, if any, is unchanged and no
        temporary file is left.
    """
    path = pathlib.Path(path)
    if not distributed.is_main():
        return path
    mode = "wb" if isinstance(data, bytes) else "w"
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            raise WriteError(path, err) from err
        raise
    return path


def write_json(path, obj: Any) -> pathlib.Path:
    """Writes ``obj`` as indented JSON, atomically (raises WriteError as :func:`write_atomic`)."""
    return write_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def markdown_section(title: str, lines: list[str]) -> str:
    """A results.md section: ``## title``, a blank line, then ``lines``."""
    return "\n".join([f"## {title}", "", *lines]) + "\n"


def save_figure(path, fig) -> pathlib.Path:
    """Saves a matplotlib figure as PNG atomically and closes it (raises WriteError as
    :func:`write_atomic`)."""
    import io

    import matplotlib.pyplot as plt

    if not distributed.is_main():
        plt.close(fig)
        return pathlib.Path(path)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return write_atomic(path, buffer.getvalue())


def layout_version(folder) -> int:
    """The layout version recorded in ``folder`` (1 when none is: a folder written before
    versions existed, or one that does not exist yet).

    Raises:
      InputError: ``layout.json`` is there but holds no version.
    """
    path = pathlib.Path(folder) / LAYOUT_FILE
    if not path.is_file():
        return 1
    try:
        version = json.loads(path.read_text())["layout"]
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path} cannot be read as a layout version ({err})") from None
    if isinstance(version, bool) or not isinstance(version, int):
        raise InputError(f"{path} cannot be read as a layout version ({version!r})")
    return version


def check_layout(folder, version: Optional[int] = None, *, restart_hint: bool = False) -> int:
    """Returns the layout version of ``folder`` (``version`` when given, e.g. read from a
    model's ``model.json``, else :func:`layout_version`).

    Raises:
      InputError: a newer mmc_jax wrote it; the message names both versions and, with
        ``restart_hint`` (a workdir a run would resume), suggests ``--restart``.
    """
    folder = pathlib.Path(folder).expanduser().resolve()
    version = layout_version(folder) if version is None else version
    if version > LAYOUT_VERSION:
        remedy = (
            "update mmc_jax, or rerun with --restart to start over"
            if restart_hint
            else "update mmc_jax to read it"
        )
        raise InputError(
            f"{folder} was written by mmc_jax layout version {version}; this mmc_jax reads "
            f"layout versions 1-{LAYOUT_VERSION} ({remedy})"
        )
    return version


def write_layout(folder) -> pathlib.Path:
    """Records :data:`LAYOUT_VERSION` in ``folder/layout.json`` (raises WriteError as
    :func:`write_atomic`)."""
    return write_json(pathlib.Path(folder) / LAYOUT_FILE, {"layout": LAYOUT_VERSION})


def mark_layout(folder) -> int:
    """Checks the layout version of a workdir an entry point is about to use, and records the
    current one in a workdir that holds nothing yet; returns the folder's version.

    A folder that already holds files but no version (written before versions existed) stays
    at version 1 rather than being relabelled: its files keep the old layout.

    Raises:
      InputError: a newer mmc_jax wrote the folder (see :func:`check_layout`).
      WriteError: ``layout.json`` cannot be written.
    """
    folder = pathlib.Path(folder).expanduser().resolve()
    version = check_layout(folder, restart_hint=True)
    if (folder / LAYOUT_FILE).is_file():
        return version
    if folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir()):
        return version
    write_layout(folder)
    return LAYOUT_VERSION


__all__ = [
    "LAYOUT_FILE",
    "LAYOUT_VERSION",
    "check_layout",
    "layout_version",
    "mark_layout",
    "markdown_section",
    "save_figure",
    "write_atomic",
    "write_json",
    "write_layout",
]
