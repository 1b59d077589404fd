"""The artifact store: finds a valid .vmfb for a (specialisation, target) or builds one.

Each artifact ``<stem>_<target>.vmfb`` has a sidecar ``.vmfb.json`` recording
everything that decides its bytes (the hash of its MLIR source and transform
library, dtype, static dims, target, chip or host CPU, compiler version,
flags) and the SHA-256 of the bytes; GPU artifacts also have their launch plan, ``<stem>_<target>.plan.json``
(``lnbwd_iree.launch_plan``), whose SHA-256 the record holds too. An
artifact whose record disagrees with what would be built now, or whose bytes
do not match their hash, is stale or corrupt: it is rebuilt, never loaded.
Files are written to a temporary name and renamed, so concurrent builders
and interrupted builds never leave a half-written artifact in place.

The cache folder grows by one artifact per (kernel, signature, target): a
dtype and static dims, where per-N kernels (``Kernel.per_n``) have no static
M; ``stored_artifacts``, ``clear`` and ``prune`` (``lnbwd-iree cache``) list
and trim it. A load from the cache refreshes the artifact's modification
time, so that time is when it was last used."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import compiler
from .launch_plan import FORMAT as PLAN_FORMAT
from .launch_plan import LaunchPlan
from .specialization import Specialization
from .targets import Target

CACHE_ENV = "LNBWD_IREE_CACHE"
ARTIFACTS_ENV = "LNBWD_IREE_ARTIFACTS"
MANIFEST = "manifest.json"
RECORD_SUFFIX = ".json"
PLAN_SUFFIX = ".plan.json"

log = logging.getLogger("lnbwd_iree")


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lnbwd-iree"


class RejectedArtifact(Exception):
    """Why a candidate artifact file cannot be used (absent, unreadable, corrupt, built for something else)."""


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
    plan_sha256: str | None = None  # None: the target has no launch plans

    @classmethod
    def read(cls, path: Path) -> "ArtifactRecord":
        """The record at ``path``; RejectedArtifact says why there is none."""
        try:
            data = json.loads(path.read_text())
            data["flags"] = tuple(data["flags"])
            return cls(**data)
        except FileNotFoundError:
            raise RejectedArtifact(f"its record {path.name} is missing") from None
        except OSError as e:
            raise RejectedArtifact(f"its record is unreadable ({e.strerror or e})") from None
        except (ValueError, TypeError, KeyError) as e:
            raise RejectedArtifact(f"its record is corrupt ({type(e).__name__}: {e})") from None

    @classmethod
    def load(cls, path: Path) -> "ArtifactRecord | None":
        try:
            return cls.read(path)
        except RejectedArtifact:
            return None

    def purpose(self) -> str:
        """What the artifact computes and runs on, e.g. "layernorm_backward f32 64x200 on llvm-cpu-host"."""
        shape = f"{'any M' if self.m is None else self.m}x{'N' if self.n is None else self.n}"
        return f"{self.kernel} {self.dtype} {shape} on {self.target} (iree {self.compiler_version})"


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


def record_path(vmfb: Path) -> Path:
    return vmfb.with_name(vmfb.name + RECORD_SUFFIX)


def plan_path(vmfb: Path) -> Path:
    return vmfb.with_name(vmfb.name.removesuffix(".vmfb") + PLAN_SUFFIX)


def compiler_mismatch(record: ArtifactRecord) -> str | None:
    """Why ``record``'s artifact was built by another compiler than the one
    installed, or None. A runtime-only deployment cannot rebuild, so it
    trusts the recorded compiler."""
    installed = compiler.compiler_version()
    if installed is not None and record.compiler_version != installed:
        return f"built by iree-base-compiler {record.compiler_version}; installed is {installed}"
    return None


def check_artifact(path: Path, spec: Specialization, target: Target) -> bytes:
    """The bytes of ``path`` where it can serve ``spec`` on ``target`` (the
    bytes whose hash was checked, so that a caller loads exactly those);
    else raises RejectedArtifact saying why not."""
    if not path.exists():
        others = sorted(p.name for p in path.parent.glob(f"{spec.stem}_*.vmfb")) if path.parent.is_dir() else []
        raise RejectedArtifact("absent" + (f" (the folder has only {', '.join(others)})" if others else ""))
    record = ArtifactRecord.read(record_path(path))
    if record.target_identity != target.identity():
        # llvm-cpu "host" identities are "<name>:<CPU fingerprint>".
        if target.identity() != target.name and record.target_identity.split(":")[0] == target.name:
            raise RejectedArtifact("built for another host CPU (llvm-cpu artifacts are keyed to the CPU model and flags)")
        raise RejectedArtifact(f"built for target {record.target_identity}, not {target.identity()}")
    mismatch = compiler_mismatch(record)
    if mismatch:
        raise RejectedArtifact(mismatch)
    if record.source_sha256 != spec.source_hash(target):
        raise RejectedArtifact("built from other MLIR source (another lnbwd-iree version)")
    if record.flags != target.flags():
        raise RejectedArtifact(f"built with other compiler flags {list(record.flags)}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RejectedArtifact(f"unreadable ({e.strerror or e})") from None
    if hashlib.sha256(data).hexdigest() != record.vmfb_sha256:
        raise RejectedArtifact("corrupt: its bytes do not match the SHA-256 in its record")
    if target.has_launch_plans:
        read_plan_bytes(path, record)
    return data


def read_plan_bytes(vmfb: Path, record: ArtifactRecord) -> bytes:
    """The launch plan beside ``vmfb`` where it matches ``record``, else RejectedArtifact."""
    if record.plan_sha256 is None:
        raise RejectedArtifact("built without a launch plan (by an older lnbwd-iree)")
    try:
        plan = plan_path(vmfb).read_bytes()
    except FileNotFoundError:
        raise RejectedArtifact(f"its launch plan {plan_path(vmfb).name} is missing") from None
    except OSError as e:
        raise RejectedArtifact(f"its launch plan is unreadable ({e.strerror or e})") from None
    if hashlib.sha256(plan).hexdigest() != record.plan_sha256:
        raise RejectedArtifact("corrupt: its launch plan does not match the SHA-256 in its record")
    if not plan.startswith(b'{"format":%d,' % PLAN_FORMAT):  # LaunchPlan.to_json writes the format first
        raise RejectedArtifact(f"its launch plan is not in format {PLAN_FORMAT} (written by another lnbwd-iree)")
    return plan


class ArtifactNotFoundError(RuntimeError):
    """No usable artifact and no compiler to build one; the message lists every folder searched."""


class ArtifactStore:
    """Looks in ``artifact_dirs`` (read-only, e.g. a folder made by
    ``lnbwd-iree compile --out``) and then ``cache_dir``; builds into ``cache_dir``."""

    def __init__(self, cache_dir: str | os.PathLike | None = None, artifact_dirs=()):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        # Checked now: a file here would otherwise fail only after a compile, as "File exists".
        if self.cache_dir.exists() and not self.cache_dir.is_dir():
            source = "cache_dir" if cache_dir is not None else (
                CACHE_ENV if os.environ.get(CACHE_ENV) else "the default cache folder")
            raise NotADirectoryError(f"{source} {self.cache_dir} is a file, not a folder; name a folder for the "
                                     "artifact cache (created if missing)")
        named = [(Path(d), "artifact_dir") for d in artifact_dirs]
        if os.environ.get(ARTIFACTS_ENV):
            named += [(Path(d), ARTIFACTS_ENV) for d in os.environ[ARTIFACTS_ENV].split(os.pathsep) if d]
        for directory, source in named:
            # A mistyped folder would otherwise be skipped silently and everything compiled again.
            if not directory.is_dir():
                problem = "is not a folder" if directory.exists() else "does not exist"
                raise FileNotFoundError(
                    f"{source} {directory} {problem}; expected a folder made by `lnbwd-iree compile --out DIR`"
                )
        self.artifact_dirs = tuple(d for d, _ in named)

    def _first_valid(self, spec: Specialization, target: Target) -> tuple[Path | None, bytes | None, list]:
        """The first valid artifact and its checked bytes, and (path, reason)
        for each candidate rejected before it."""
        name = artifact_name(spec, target)
        rejected = []
        for directory in (*self.artifact_dirs, self.cache_dir):
            try:
                data = check_artifact(directory / name, spec, target)
            except RejectedArtifact as e:
                rejected.append((directory / name, str(e)))
                continue
            if directory == self.cache_dir:
                try:  # marks it used, for `lnbwd-iree cache prune --older-than`
                    os.utime(directory / name)
                except OSError:
                    pass
            return directory / name, data, rejected
        return None, None, rejected

    def search(self, spec: Specialization, target: Target) -> tuple[Path | None, list[tuple[Path, str]]]:
        """The first valid artifact, and (path, reason) for each candidate rejected before it."""
        found, _, rejected = self._first_valid(spec, target)
        return found, rejected

    def find(self, spec: Specialization, target: Target) -> Path | None:
        return self.search(spec, target)[0]

    def get(self, spec: Specialization, target: Target) -> Path:
        """A valid artifact's path, building it into the cache when none exists."""
        return self.obtain(spec, target)[0]

    def load(self, spec: Specialization, target: Target) -> bytes:
        """``get``'s artifact as bytes: those whose hash was checked (a file
        replaced after the check is not loaded unchecked), read once."""
        return self.obtain(spec, target)[1]

    def load_plan(self, spec: Specialization, target: Target) -> LaunchPlan:
        """The launch plan of ``get``'s artifact (built when missing), read once and checked
        against its record."""
        if not target.has_launch_plans:
            raise ValueError(f"{target.name} artifacts have no launch plans (only cuda and rocm ones do)")
        path = self.get(spec, target)
        try:
            return LaunchPlan.from_json(read_plan_bytes(path, ArtifactRecord.read(record_path(path))))
        except RejectedArtifact as e:  # changed on disk since it was checked
            raise ArtifactNotFoundError(f"{path} cannot be launched directly: {e}") from None

    def obtain(self, spec: Specialization, target: Target) -> tuple[Path, bytes]:
        """``get``'s path and ``load``'s bytes, together."""
        found, data, rejected = self._first_valid(spec, target)
        if found is not None:
            return found, data
        if compiler.compiler_version() is None:
            searched = "\n".join(f"  {path}: {reason}" for path, reason in rejected)
            raise ArtifactNotFoundError(
                f"no usable artifact {artifact_name(spec, target)} and iree-base-compiler is not installed to "
                f"build it. Searched:\n{searched}\nBuild it where the compiler is installed with "
                f"`lnbwd-iree compile --out DIR --target {target.name} --dtype {spec.dtype}"
                + (f" --shape {spec.m}x{spec.n}" if spec.m is not None else "")
                + f"` (for llvm-cpu, on a machine with this CPU model), then pass artifact_dir=DIR or set {ARTIFACTS_ENV}; "
                "or pip install 'lnbwd-iree[compile]'"
            )
        stale = [f"{path}: {reason}" for path, reason in rejected if not reason.startswith("absent")]
        path = self.build(spec, target, self.cache_dir, replaces=stale)
        try:
            return path, check_artifact(path, spec, target)
        except RejectedArtifact as e:  # changed on disk between its write and this read
            raise ArtifactNotFoundError(f"{path}, just built for {spec.stem} on {target.name}, was rejected: {e}") from None

    @staticmethod
    def build(spec: Specialization, target: Target, out_dir: Path, replaces=()) -> Path:
        """Compiles ``spec`` for ``target`` into ``out_dir``; logs one line with the time it took
        (and, in ``replaces``, why existing candidates were rejected)."""
        start = time.perf_counter()
        artifact = compiler.compile_artifact(spec, target)
        vmfb = artifact.vmfb
        seconds = time.perf_counter() - start
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
            plan_sha256=hashlib.sha256(artifact.plan).hexdigest() if artifact.plan is not None else None,
        )
        # Bytes first, record last: a record never vouches for files not yet in place.
        try:
            atomic_write(path, vmfb)
            if artifact.plan is not None:
                atomic_write(plan_path(path), artifact.plan)
            atomic_write(record_path(path), json.dumps(asdict(record), indent=2).encode())
        except OSError as e:  # its own message names a temporary file
            raise type(e)(f"cannot write artifacts into {path.parent}: {e.strerror or e}") from e
        log.info(
            "compiled %s for %s in %.1f s -> %s%s", spec.stem, target.name, seconds, path,
            f" (replacing: {'; '.join(replaces)})" if replaces else "",
        )
        return path


@dataclass(frozen=True)
class StoredArtifact:
    """One artifact in a folder, for listing and pruning."""

    path: Path  # the .vmfb (which may be missing when only its record is left)
    size: int  # bytes of the .vmfb, its record and its launch plan
    last_used: float  # modification time: when built, or last loaded from the cache
    record: ArtifactRecord | None  # None: no readable record, so it can never be loaded

    def unusable(self) -> str | None:
        """Why no later load can use it, or None. (Any other mismatch shows only
        against a given specialisation, when it is looked up.)"""
        if self.record is None:
            return "no readable record"
        if not self.path.exists():
            return "record only, its .vmfb is missing"
        return compiler_mismatch(self.record)

    def purpose(self) -> str:
        problem = self.unusable()
        if self.record is None:
            return f"unusable: {problem}"
        return self.record.purpose() + (f" (unusable: {problem})" if problem else "")

    def remove(self) -> None:
        for path in (self.path, record_path(self.path), plan_path(self.path)):
            path.unlink(missing_ok=True)


def stored_artifacts(folder: str | os.PathLike) -> list[StoredArtifact]:
    """The artifacts in ``folder`` (a cache or a ``compile --out`` folder), least recently used first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = {p.name for p in folder.glob("*.vmfb")}
    names |= {p.name[: -len(RECORD_SUFFIX)] for p in folder.glob("*.vmfb" + RECORD_SUFFIX)}
    found = []
    for name in names:
        files = [p for p in (folder / name, record_path(folder / name), plan_path(folder / name)) if p.exists()]
        stats = [p.stat() for p in files]
        found.append(StoredArtifact(
            folder / name,
            sum(s.st_size for s in stats),
            max(s.st_mtime for s in stats),
            ArtifactRecord.load(record_path(folder / name)),
        ))
    return sorted(found, key=lambda a: (a.last_used, a.path.name))


def _remove_abandoned_temporaries(folder: Path, now: float) -> None:
    """Removes atomic_write's temporary files left by killed processes. A
    builder holds one for about a second, so an hour-old one was abandoned."""
    for temporary in folder.glob(".*.tmp") if folder.is_dir() else ():
        if temporary.stat().st_mtime < now - 3600:
            temporary.unlink(missing_ok=True)


def _refresh_manifest(folder: Path) -> None:
    """After removals from a ``compile --out`` folder (one with a manifest),
    its manifest lists what is left, never artifacts that are gone."""
    if (folder / MANIFEST).exists():
        write_manifest(folder)


def clear(folder: str | os.PathLike) -> list[StoredArtifact]:
    """Removes every artifact (and abandoned temporary file) from ``folder``; returns the artifacts removed."""
    removed = stored_artifacts(folder)
    for artifact in removed:
        artifact.remove()
    _remove_abandoned_temporaries(Path(folder), time.time())
    _refresh_manifest(Path(folder))
    return removed


def prune(folder: str | os.PathLike, *, max_bytes: int | None = None, older_than_s: float | None = None,
          now: float | None = None) -> list[StoredArtifact]:
    """Removes unusable artifacts (``StoredArtifact.unusable``), those unused for
    ``older_than_s`` seconds, then the least recently used until the rest fit in
    ``max_bytes``; returns those removed."""
    now = time.time() if now is None else now
    kept, removed = [], []
    for artifact in stored_artifacts(folder):
        unused = older_than_s is not None and artifact.last_used < now - older_than_s
        (removed if unused or artifact.unusable() else kept).append(artifact)
    if max_bytes is not None:
        kept_bytes = sum(a.size for a in kept)
        while kept and kept_bytes > max_bytes:
            kept_bytes -= kept[0].size
            removed.append(kept.pop(0))  # least recently used first
    for artifact in removed:
        artifact.remove()
    _remove_abandoned_temporaries(Path(folder), now)
    _refresh_manifest(Path(folder))
    return removed


def write_manifest(out_dir: Path) -> Path:
    """Indexes every artifact of a ``compile --out`` folder in ``manifest.json``,
    those built by earlier runs included."""
    records = [asdict(a.record) for a in sorted(stored_artifacts(out_dir), key=lambda a: a.path.name)
               if a.unusable() is None]
    manifest = {
        "iree_compiler_version": compiler.compiler_version(),
        "artifacts": records,
    }
    path = Path(out_dir) / MANIFEST
    atomic_write(path, json.dumps(manifest, indent=2).encode())
    return path
