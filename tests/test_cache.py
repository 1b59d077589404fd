"""The artifact cache: keyed records, stale and corrupt artifacts rebuilt, atomic writes."""

import json
import threading

import pytest

from lnbwd_iree import cache, compiler
from lnbwd_iree.kernels import LAYERNORM_FORWARD, Specialization
from lnbwd_iree.targets import VMVX

SPEC = Specialization(LAYERNORM_FORWARD, "f32")


@pytest.fixture
def store(tmp_path):
    return cache.ArtifactStore(tmp_path / "cache")


def record_of(path):
    return json.loads(path.with_name(path.name + ".json").read_text())


def test_build_records_everything_that_decides_the_bytes(store):
    path = store.get(SPEC, VMVX)
    record = record_of(path)
    assert record["source_sha256"] == SPEC.source_hash(VMVX)
    assert record["dtype"] == "f32" and record["m"] is None and record["signature"] == "DxDxf32"
    assert record["target"] == "vmvx-generic" and tuple(record["flags"]) == VMVX.flags()
    assert record["compiler_version"] == compiler.compiler_version()
    assert store.find(SPEC, VMVX) == path


def test_corrupt_artifact_is_rebuilt_not_loaded(store):
    path = store.get(SPEC, VMVX)
    good = path.read_bytes()
    path.write_bytes(good[:-16] + b"\0" * 16)
    assert store.find(SPEC, VMVX) is None
    assert store.get(SPEC, VMVX).read_bytes() == good


@pytest.mark.parametrize("field, value", [("source_sha256", "0" * 64), ("compiler_version", "0.0.1"), ("flags", ["--x"])])
def test_stale_record_is_rebuilt(store, field, value):
    path = store.get(SPEC, VMVX)
    sidecar = path.with_name(path.name + ".json")
    record = record_of(path)
    record[field] = value
    sidecar.write_text(json.dumps(record))
    assert store.find(SPEC, VMVX) is None
    store.get(SPEC, VMVX)
    assert record_of(path)[field] != value


def test_concurrent_builds_leave_one_valid_artifact_and_no_temp_files(store):
    threads = [threading.Thread(target=store.get, args=(SPEC, VMVX)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.find(SPEC, VMVX) is not None
    assert not list(store.cache_dir.glob(".*.tmp"))


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    target = tmp_path / "a.vmfb"

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(cache.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        cache.atomic_write(target, b"bytes")
    assert list(tmp_path.iterdir()) == []


def test_cache_folder_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert cache.default_cache_dir() == tmp_path / "elsewhere"


def test_artifact_dirs_are_searched_before_the_cache(tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    path = cache.ArtifactStore.build(SPEC, VMVX, shipped)
    monkeypatch.setenv(cache.ARTIFACTS_ENV, str(shipped))
    store = cache.ArtifactStore(tmp_path / "cache")
    assert store.find(SPEC, VMVX) == path
    assert not (tmp_path / "cache").exists()


def test_compile_error_shows_numbered_source(monkeypatch):
    monkeypatch.setattr(Specialization, "source", lambda self, target: "func.func @f() {\n  bogus.op\n}\n")
    with pytest.raises(compiler.CompilationError, match=r"(?s)iree-compile failed on .*   2:   bogus.op"):
        compiler.compile_to_bytes(SPEC, VMVX)
