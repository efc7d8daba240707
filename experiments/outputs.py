"""The end of every entry point: its results written and shown the same way.

A run's results are ``results.md`` (the human-readable table, also printed) and
``results.json`` (the machine-readable record). ``results.json`` is written last, so its
presence marks a finished run: a run killed in between is not taken for finished, and a rerun
of a finished one shows the stored table again instead of recomputing (:func:`finished`).
"""

from __future__ import annotations

import json
import pathlib
from typing import Optional

from absl import logging

from mmc_jax.reporting import files


def publish(workdir: pathlib.Path, results: dict, table: str, show: bool = True) -> str:
    """Writes ``results.md`` (``table``), then ``results.json`` (``results``) to
    ``workdir``, prints the table (with ``show``) and returns it."""
    files.write_atomic(pathlib.Path(workdir) / "results.md", table)
    files.write_json(pathlib.Path(workdir) / "results.json", results)
    if show:
        print(table)
    return table


def finished(workdir: pathlib.Path, stored: dict, show: bool = True) -> Optional[dict]:
    """The results of a run in ``workdir`` that finished with the same ``stored`` fields
    (config and models), its table printed again (with ``show``); else None."""
    previous = pathlib.Path(workdir) / "results.json"
    table = pathlib.Path(workdir) / "results.md"
    if not (previous.is_file() and table.is_file()):
        return None
    results = json.loads(previous.read_text())
    if {k: results.get(k) for k in stored} != json.loads(json.dumps(stored)):
        return None
    logging.info("finished earlier with this config; reusing its results")
    if show:
        print(table.read_text())
    return results
