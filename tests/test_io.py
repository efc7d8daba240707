"""Atomic result files: a failed write leaves the previous file whole and no debris."""

import json
import os

import pytest

from mmc_jax.reporting import files


def test_write_json_round_trips_and_replaces(tmp_path):
    path = tmp_path / "sub" / "results.json"
    files.write_json(path, {"a": [1, 2.5]})
    files.write_json(path, {"a": 3})
    assert json.loads(path.read_text()) == {"a": 3}
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


def test_a_write_that_fails_midway_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    files.write_json(path, {"run": 1})

    def disk_full(fd):
        raise OSError("No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        files.write_json(path, {"run": 2})
    assert json.loads(path.read_text()) == {"run": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
