"""The artifact cache: keyed records, stale and corrupt artifacts rebuilt with reasons, atomic writes, pruning."""

import hashlib
import json
import logging
import os
import re
import threading
import time

import numpy as np
import pytest

from lnbwd_iree import cache, compiler, targets
from lnbwd_iree.kernels import LAYERNORM_FORWARD, Specialization
from lnbwd_iree.targets import LLVM_CPU_HOST, VMVX

SPEC = Specialization(LAYERNORM_FORWARD, "f32")


@pytest.fixture
def store(tmp_path, iree_compiler):
    """A cache that builds what it lacks."""
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
        compiler.compile_artifact(SPEC, VMVX)


def runtime_only(monkeypatch):
    monkeypatch.setattr(compiler, "compiler_version", lambda: None)


def test_runtime_only_error_lists_every_folder_and_why(tmp_path, monkeypatch):
    empty, wrong_target, corrupt = (tmp_path / name for name in ("empty", "wrong_target", "corrupt"))
    empty.mkdir()
    cache.ArtifactStore.build(SPEC, LLVM_CPU_HOST, wrong_target)
    path = cache.ArtifactStore.build(SPEC, VMVX, corrupt)
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    runtime_only(monkeypatch)
    store = cache.ArtifactStore(tmp_path / "cache", [empty, wrong_target, corrupt])
    with pytest.raises(cache.ArtifactNotFoundError) as raised:
        store.get(SPEC, VMVX)
    message = str(raised.value)
    assert "iree-base-compiler is not installed" in message
    name = cache.artifact_name(SPEC, VMVX)
    assert f"{empty / name}: absent\n" in message
    assert f"{wrong_target / name}: absent (the folder has only layernorm_forward_DxDxf32_llvm-cpu-host.vmfb)" in message
    assert f"{path}: corrupt: its bytes do not match" in message
    assert f"{tmp_path / 'cache' / name}: absent" in message
    assert "lnbwd-iree compile --out DIR --target vmvx-generic --dtype f32`" in message


def host_artifact_of_another_cpu(tmp_path, monkeypatch):
    path = cache.ArtifactStore.build(SPEC, LLVM_CPU_HOST, tmp_path)
    monkeypatch.setattr(targets, "host_cpu_fingerprint", lambda: "another-cpu")
    return path


def test_host_artifact_from_another_cpu_is_named_as_such(tmp_path, monkeypatch):
    path = host_artifact_of_another_cpu(tmp_path, monkeypatch)
    with pytest.raises(cache.RejectedArtifact, match="built for another host CPU"):
        cache.check_artifact(path, SPEC, LLVM_CPU_HOST)


def edit_record(path, **fields):
    record = record_of(path)
    record.update(fields)
    cache.record_path(path).write_text(json.dumps(record))


@pytest.mark.parametrize("change, reason", [
    (lambda p: edit_record(p, compiler_version="3.12.0"), "built by iree-base-compiler 3.12.0; installed is 3"),
    (lambda p: edit_record(p, target_identity="cuda-sm_80"), "built for target cuda-sm_80, not vmvx-generic"),
    (lambda p: edit_record(p, source_sha256="0" * 64), "built from other MLIR source"),
    (lambda p: cache.record_path(p).write_text("{not json"), "its record is corrupt"),
    (lambda p: cache.record_path(p).unlink(), "its record layernorm_forward_DxDxf32_vmvx-generic.vmfb.json is missing"),
    (lambda p: (p.unlink(), p.mkdir()), "unreadable"),
])
def test_each_rejection_says_why(store, change, reason):
    path = store.get(SPEC, VMVX)
    change(path)
    with pytest.raises(cache.RejectedArtifact, match=reason):
        cache.check_artifact(path, SPEC, VMVX)


def test_a_missing_artifact_folder_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="artifact_dir .*nowhere does not exist"):
        cache.ArtifactStore(tmp_path / "cache", [tmp_path / "nowhere"])
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(cache.ARTIFACTS_ENV, str(tmp_path / "file"))
    with pytest.raises(FileNotFoundError, match=f"{cache.ARTIFACTS_ENV} .*file is not a folder"):
        cache.ArtifactStore(tmp_path / "cache")


def test_each_compile_logs_one_line_with_its_time(store, caplog):
    caplog.set_level(logging.INFO, logger="lnbwd_iree")
    path = store.get(SPEC, VMVX)
    store.get(SPEC, VMVX)  # found: no second compile
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and re.fullmatch(rf"compiled layernorm_forward_DxDxf32 for vmvx-generic in \d+\.\d s -> {path}", messages[0])


def test_a_rejected_artifact_rebuilt_says_why(store, caplog):
    path = store.get(SPEC, VMVX)
    edit_record(path, source_sha256="0" * 64)
    caplog.set_level(logging.INFO, logger="lnbwd_iree")
    store.get(SPEC, VMVX)
    assert "(replacing: " in caplog.text and "built from other MLIR source" in caplog.text


def test_unexpected_compiler_diagnostics_are_warnings_expected_ones_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="lnbwd_iree")
    stderr = (
        "<stdin>:263:23: warning: tiling is not thread safe at axis #3\n    %block_partials = linalg.generic {\n"
        "<stdin>:44:26: note: called from\n"
        "<stdin>:9:1: warning: something new\n  func.func @f()\n"
    )
    compiler.report_diagnostics(stderr, "x for y")
    levels = [(r.levelno, r.getMessage().splitlines()[0]) for r in caplog.records]
    assert levels == [
        (logging.DEBUG, "iree-compile on x for y: <stdin>:263:23: warning: tiling is not thread safe at axis #3"),
        (logging.WARNING, "iree-compile on x for y: <stdin>:9:1: warning: something new"),
    ]
    assert "note: called from" in caplog.records[0].getMessage()


def age(path, days):
    when = path.stat().st_mtime - days * 86400
    for p in (path, cache.record_path(path)):
        os.utime(p, (when, when))


def test_prune_by_size_removes_least_recently_used_first(tmp_path):
    paths = [cache.ArtifactStore.build(Specialization(LAYERNORM_FORWARD, "f32", m, 8), VMVX, tmp_path) for m in (1, 2, 3)]
    for days, path in zip((1, 3, 2), paths):
        age(path, days)
    sizes = {a.path: a.size for a in cache.stored_artifacts(tmp_path)}
    removed = cache.prune(tmp_path, max_bytes=sizes[paths[0]] + sizes[paths[2]])
    assert [a.path for a in removed] == [paths[1]]
    assert [a.path for a in cache.stored_artifacts(tmp_path)] == [paths[2], paths[0]]


def test_prune_removes_unusable_and_abandoned_files(tmp_path):
    kept = cache.ArtifactStore.build(SPEC, VMVX, tmp_path)
    (tmp_path / "orphan.vmfb").write_bytes(b"no record")
    stale = cache.ArtifactStore.build(Specialization(LAYERNORM_FORWARD, "f32", 2, 8), VMVX, tmp_path)
    edit_record(stale, compiler_version="3.12.0")
    abandoned, fresh = tmp_path / ".x.vmfb.1.tmp", tmp_path / ".y.vmfb.2.tmp"
    abandoned.write_bytes(b""), fresh.write_bytes(b"")
    os.utime(abandoned, (0, 0))
    removed = cache.prune(tmp_path, older_than_s=86400)
    assert {a.path.name for a in removed} == {"orphan.vmfb", stale.name}
    assert kept.exists() and fresh.exists() and not abandoned.exists()


def test_a_cache_hit_marks_the_artifact_used(store):
    path = store.get(SPEC, VMVX)
    age(path, 10)
    assert store.find(SPEC, VMVX) == path
    assert time.time() - path.stat().st_mtime < 60


@pytest.mark.parametrize("m, n, shape", [(None, None, "any MxN"), (None, 512, "any Mx512"), (64, 200, "64x200")])
def test_record_purpose_names_what_the_artifact_serves(m, n, shape):
    """`cache list` reads this: a per-N forward serves any M of that N, not any N."""
    fields = {name: "" for name in cache.ArtifactRecord.__dataclass_fields__}
    record = cache.ArtifactRecord(**{**fields, "kernel": "layernorm_forward", "dtype": "f32", "m": m, "n": n,
                                     "target": "llvm-cpu-host", "compiler_version": "3.13.0", "flags": ()})
    assert record.purpose() == f"layernorm_forward f32 {shape} on llvm-cpu-host (iree 3.13.0)"


def test_load_returns_the_bytes_that_were_checked(store, monkeypatch):
    path = store.get(SPEC, VMVX)
    good = path.read_bytes()
    assert store.load(SPEC, VMVX) == good
    # A file replaced after its check is not read again: load hands over the checked bytes.
    checked = cache.check_artifact

    def check_then_replace(p, spec, target):
        data = checked(p, spec, target)
        p.write_bytes(b"\0" * len(data))
        return data

    monkeypatch.setattr(cache, "check_artifact", check_then_replace)
    assert store.load(SPEC, VMVX) == good


def test_a_compile_that_hangs_once_runs_again(monkeypatch, iree_compiler):
    """A start-up hang is not the source's fault: the compile is run once more."""
    run = compiler.subprocess.run
    calls = []

    def hang_first(command, **kwargs):
        calls.append(command)
        if len(calls) == 1:
            raise compiler.subprocess.TimeoutExpired(command, kwargs["timeout"])
        return run(command, **kwargs)

    monkeypatch.setattr(compiler.subprocess, "run", hang_first)
    data = compiler.compile_spec(SPEC, VMVX)
    assert len(calls) == 2 and calls[0] == calls[1]
    assert data == compiler.compile_spec(SPEC, VMVX)  # the same artifact as a compile that did not hang


def test_a_compile_that_hangs_is_killed_and_named(monkeypatch, iree_compiler):
    """iree-compile 3.13 has hung at start-up now and then: a stuck compile ends with an error, not forever."""
    monkeypatch.setattr(compiler, "COMPILE_TIMEOUT_S", 0.001)
    with pytest.raises(compiler.CompilationTimeout, match=r"did not finish layernorm_forward_DxDxf32 for vmvx-generic within 0.001 s and was killed"):
        compiler.compile_spec(SPEC, VMVX)


def test_the_suite_never_uses_the_users_cache(cache_dir, monkeypatch):
    from lnbwd_iree import api

    session = cache.default_cache_dir()
    assert str(session) == cache_dir
    assert api.kernels_for("local-task").store.cache_dir == session
    monkeypatch.delenv(cache.CACHE_ENV)
    assert session != cache.default_cache_dir(), "the suite would write into the user's cache"


def test_bytes_that_match_their_record_but_are_no_module_are_named(tmp_path, iree_compiler):
    from lnbwd_iree.runtime import LayerNormKernels

    kernels = LayerNormKernels("local-task", backend="vmvx", cache_dir=tmp_path, static_shapes=False)
    path = cache.ArtifactStore.build(SPEC, VMVX, tmp_path)
    garbage = os.urandom(512)
    path.write_bytes(garbage)
    edit = record_of(path) | {"vmfb_sha256": hashlib.sha256(garbage).hexdigest()}
    cache.record_path(path).write_text(json.dumps(edit))
    with pytest.raises(RuntimeError, match=rf"{re.escape(str(path))} is not a loadable IREE module"):
        kernels.forward(np.ones((2, 8), np.float32), np.ones(8, np.float32), np.zeros(8, np.float32))


def test_a_cache_path_that_is_a_file_is_refused_up_front_by_its_source(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "file"))
    with pytest.raises(NotADirectoryError, match=f"{cache.CACHE_ENV} {tmp_path / 'file'} is a file, not a folder"):
        cache.ArtifactStore()
    with pytest.raises(NotADirectoryError, match=f"cache_dir {tmp_path / 'file'} is a file"):
        cache.ArtifactStore(tmp_path / "file")


def test_an_unwritable_cache_is_reported_by_folder_and_reason(tmp_path, monkeypatch, iree_compiler):
    real_open = os.open

    def read_only(path, *args, **kwargs):  # as a read-only folder answers (root ignores chmod)
        if str(path).startswith(str(tmp_path)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(cache.os, "open", read_only)
    with pytest.raises(PermissionError) as raised:
        cache.ArtifactStore(tmp_path).get(SPEC, VMVX)
    assert str(raised.value) == f"cannot write artifacts into {tmp_path}: Permission denied"
