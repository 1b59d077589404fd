"""The artifact store: finds a valid .vmfb for a (specialisation, target) or builds one.

Each artifact ``<stem>_<target>.vmfb`` has a sidecar ``.vmfb.json`` recording
everything that decides its bytes (MLIR source hash, dtype, static dims,
target, chip, compiler version, flags) and the SHA-256 of the bytes. An
artifact whose record disagrees with what would be built now, or whose bytes
do not match their hash, is stale or corrupt: it is rebuilt, never loaded.
Files are written to a temporary name and renamed, so concurrent builders
and interrupted builds never leave a half-written artifact in place."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from . import compiler
from .kernels import Specialization
from .targets import Target

CACHE_ENV = "LNBWD_IREE_CACHE"
ARTIFACTS_ENV = "LNBWD_IREE_ARTIFACTS"
MANIFEST = "manifest.json"


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lnbwd-iree"


@dataclass(frozen=True)
class ArtifactRecord:
    file: str
    kernel: str
    signature: str
    dtype: str
    m: int | None
    n: int | None
    target: str
    backend: str
    chip: str
    target_identity: str
    flags: tuple[str, ...]
    source_sha256: str
    compiler_version: str
    vmfb_sha256: str

    @classmethod
    def load(cls, path: Path) -> "ArtifactRecord | None":
        try:
            data = json.loads(path.read_text())
            data["flags"] = tuple(data["flags"])
            return cls(**data)
        except (OSError, ValueError, TypeError, KeyError):
            return None


def atomic_write(path: Path, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path`` and renames it into
    place. The file gets the permissions of any file the user creates (0666
    less the umask), not mkstemp's 0600: a compile --out folder or a shared
    cache must be readable by the others it is meant for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def artifact_name(spec: Specialization, target: Target) -> str:
    return f"{spec.stem}_{target.name}.vmfb"


class ArtifactStore:
    """Looks in ``artifact_dirs`` (read-only, e.g. a folder made by
    ``lnbwd-iree compile --out``) and then ``cache_dir``; builds into ``cache_dir``."""

    def __init__(self, cache_dir: str | os.PathLike | None = None, artifact_dirs=()):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        dirs = [Path(d) for d in artifact_dirs]
        if os.environ.get(ARTIFACTS_ENV):
            dirs += [Path(d) for d in os.environ[ARTIFACTS_ENV].split(os.pathsep) if d]
        self.artifact_dirs = tuple(dirs)

    def _is_valid(self, path: Path, spec: Specialization, target: Target) -> bool:
        record = ArtifactRecord.load(path.with_name(path.name + ".json"))
        if record is None or not path.exists():
            return False
        installed = compiler.compiler_version()
        return (
            record.source_sha256 == spec.source_hash(target)
            and record.flags == target.flags()
            and record.target_identity == target.identity()
            # A runtime-only deployment cannot rebuild, so it trusts the recorded compiler.
            and (installed is None or record.compiler_version == installed)
            and hashlib.sha256(path.read_bytes()).hexdigest() == record.vmfb_sha256
        )

    def find(self, spec: Specialization, target: Target) -> Path | None:
        name = artifact_name(spec, target)
        for directory in (*self.artifact_dirs, self.cache_dir):
            if self._is_valid(directory / name, spec, target):
                return directory / name
        return None

    def get(self, spec: Specialization, target: Target) -> Path:
        """A valid artifact's path, building it into the cache when none exists."""
        return self.find(spec, target) or self.build(spec, target, self.cache_dir)

    @staticmethod
    def build(spec: Specialization, target: Target, out_dir: Path) -> Path:
        vmfb = compiler.compile_to_bytes(spec, target)
        path = Path(out_dir) / artifact_name(spec, target)
        record = ArtifactRecord(
            file=path.name,
            kernel=spec.kernel.name,
            signature=spec.signature,
            dtype=spec.dtype,
            m=spec.m,
            n=spec.n,
            target=target.name,
            backend=target.backend,
            chip=target.chip,
            target_identity=target.identity(),
            flags=target.flags(),
            source_sha256=spec.source_hash(target),
            compiler_version=compiler.compiler_version() or "unknown",
            vmfb_sha256=hashlib.sha256(vmfb).hexdigest(),
        )
        # Bytes first, record second: a record never vouches for bytes not yet in place.
        atomic_write(path, vmfb)
        atomic_write(path.with_name(path.name + ".json"), json.dumps(asdict(record), indent=2).encode())
        return path


def write_manifest(out_dir: Path, paths: list[Path]) -> Path:
    """Indexes the artifacts of a ``compile --out`` folder in ``manifest.json``."""
    records = [asdict(ArtifactRecord.load(p.with_name(p.name + ".json"))) for p in sorted(paths)]
    manifest = {
        "iree_compiler_version": compiler.compiler_version(),
        "artifacts": records,
    }
    path = Path(out_dir) / MANIFEST
    atomic_write(path, json.dumps(manifest, indent=2).encode())
    return path
