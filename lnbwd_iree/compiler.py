"""Compiles a specialisation for a target through the iree.compiler Python API.

iree.compiler is imported here only, and only when an artifact must be built:
a deployment that ships .vmfb files needs the runtime alone."""

from __future__ import annotations

from importlib import metadata

from .kernels import Specialization
from .targets import Target


class CompilationError(RuntimeError):
    """iree-compile rejected a source; the message carries the numbered MLIR."""


def compiler_version() -> str | None:
    """The installed iree-base-compiler version, or None when it is absent."""
    try:
        return metadata.version("iree-base-compiler")
    except metadata.PackageNotFoundError:
        return None


def numbered(source: str) -> str:
    return "\n".join(f"{i:4d}: {line}" for i, line in enumerate(source.splitlines(), start=1))


def compile_to_bytes(spec: Specialization, target: Target) -> bytes:
    try:
        from iree.compiler import tools
    except ImportError as e:
        raise RuntimeError(
            f"artifact {spec.stem} for {target.name} must be built, but iree-base-compiler is not "
            "installed: pip install 'lnbwd-iree[compile]', or point artifact_dir at a folder made by "
            "`lnbwd-iree compile --out DIR`"
        ) from e
    source = spec.source(target)
    try:
        return tools.compile_str(source, extra_args=list(target.flags()))
    except tools.CompilerToolError as e:
        raise CompilationError(
            f"iree-compile failed on {spec.stem} for {target.name}:\n{e}\n--- source ---\n{numbered(source)}"
        ) from e
