"""Compiles a specialisation for a target through the iree.compiler Python API.

iree.compiler is imported here only, and only when an artifact must be built:
a deployment that ships .vmfb files needs the runtime alone."""

from __future__ import annotations

import tempfile
from importlib import metadata
from pathlib import Path

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


def compile_spec(spec: Specialization, target: Target, extra_args=()) -> bytes:
    """Runs iree-compile on ``spec``'s source for ``target``: the target's
    flags, ``extra_args``, and the specialisation's transform library, if it
    has one, given as a file."""
    from iree.compiler import tools

    library = spec.transform_library(target)
    with tempfile.TemporaryDirectory() as tmp:
        flags = [*target.flags(), *extra_args]
        if library:
            path = Path(tmp) / f"{spec.stem}_configs.mlir"
            path.write_text(library)
            flags.append(f"--iree-codegen-transform-dialect-library={path}@__kernel_config")
        return tools.compile_str(spec.source(target), extra_args=flags)


def compile_to_bytes(spec: Specialization, target: Target) -> bytes:
    try:
        from iree.compiler import tools
    except ImportError as e:
        raise RuntimeError(
            f"artifact {spec.stem} for {target.name} must be built, but iree-base-compiler is not "
            "installed: pip install 'lnbwd-iree[compile]', or point artifact_dir at a folder made by "
            "`lnbwd-iree compile --out DIR`"
        ) from e
    try:
        return compile_spec(spec, target)
    except tools.CompilerToolError as e:
        raise CompilationError(
            f"iree-compile failed on {spec.stem} for {target.name}:\n{e}\n--- source ---\n{numbered(spec.source(target))}"
        ) from e
