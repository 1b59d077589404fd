"""Compiles a specialisation for a target through iree-compile.

iree.compiler is imported here only, and only when an artifact must be built:
a deployment that ships .vmfb files needs the runtime alone."""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .launch_plan import read_plan
from .specialization import Specialization
from .targets import Target

log = logging.getLogger("lnbwd_iree")

# Diagnostics iree-compile prints for code that is correct by design; they are
# logged at DEBUG level instead of shown on every compile. The row-block
# pass's row loop is a reduction run in order by each workgroup
# (docs/design.md), which IREE's serial tiling reports as not thread safe.
EXPECTED_DIAGNOSTICS = (re.compile(r"warning: tiling is not thread safe at axis #\d+"),)
# The first line of a diagnostic (its "note:" lines and source excerpts follow it).
_DIAGNOSTIC_START = re.compile(r"^\S[^\n]*?: (?:error|warning|remark): ", re.MULTILINE)


class CompilationError(RuntimeError):
    """iree-compile rejected a source; the message carries the numbered MLIR."""


class CompilationTimeout(CompilationError):
    """iree-compile did not finish in time, twice, and was killed (3.13 hangs
    at start-up now and then, waiting on a futex with no CPU time)."""


# Our kernels compile in 0.3-5 s; far beyond that, iree-compile is stuck.
COMPILE_TIMEOUT_S = 120
# A hang is a start-up race, not the source's fault: a second run goes
# through (3.13 hung on a few compiles in a thousand here, several times in
# a row on a loaded machine).
COMPILE_TRIES = 2


def compiler_version() -> str | None:
    """The installed iree-base-compiler version, or None when it is absent."""
    try:
        return metadata.version("iree-base-compiler")
    except metadata.PackageNotFoundError:
        return None


def numbered(source: str) -> str:
    return "\n".join(f"{i:4d}: {line}" for i, line in enumerate(source.splitlines(), start=1))


def split_diagnostics(stderr: str) -> list[str]:
    """iree-compile's stderr as one text per diagnostic, each with its notes and excerpts."""
    starts = [m.start() for m in _DIAGNOSTIC_START.finditer(stderr)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    return [stderr[a:b].strip() for a, b in zip(starts, starts[1:] + [len(stderr)]) if stderr[a:b].strip()]


def report_diagnostics(stderr: str, what: str) -> None:
    """Logs a successful compile's diagnostics: expected ones at DEBUG, the rest as warnings."""
    for diagnostic in split_diagnostics(stderr):
        expected = any(p.search(diagnostic.splitlines()[0]) for p in EXPECTED_DIAGNOSTICS)
        log.log(logging.DEBUG if expected else logging.WARNING, "iree-compile on %s: %s", what, diagnostic)


def run_compiler(source: str, flags, what: str) -> bytes:
    """iree-compile on ``source`` with ``flags``: the command line
    iree.compiler.tools.compile_str builds, run here with stderr captured,
    because compile_str copies the compiler's stderr to sys.stderr on success,
    expected diagnostics included. ``what`` names the source in messages."""
    from iree.compiler.tools import core

    with core.TempFileSaver.implicit() as temps:
        command = core.build_compile_command_line("-", temps, core.CompilerOptions(extra_args=list(flags)))
        for attempt in range(COMPILE_TRIES):
            try:
                process = subprocess.run(command, input=source.encode(), capture_output=True, timeout=COMPILE_TIMEOUT_S)
                break
            except subprocess.TimeoutExpired:
                log.warning("iree-compile did not finish %s within %s s (try %d of %d)",
                            what, COMPILE_TIMEOUT_S, attempt + 1, COMPILE_TRIES)
        else:
            raise CompilationTimeout(
                f"iree-compile did not finish {what} within {COMPILE_TIMEOUT_S} s and was killed, "
                f"{COMPILE_TRIES} times; command: {' '.join(command)}"
            )
    stderr = process.stderr.decode(errors="replace")
    if process.returncode != 0:
        raise CompilationError(
            f"iree-compile failed on {what} (exit code {process.returncode}):\n{stderr}\n"
            f"command: {' '.join(command)}\n--- source ---\n{numbered(source)}"
        )
    report_diagnostics(stderr, what)
    return process.stdout


def compile_spec(spec: Specialization, target: Target, extra_args=()) -> bytes:
    """iree-compile on ``spec``'s source for ``target``: the target's flags,
    ``extra_args``, and the specialisation's transform library, if it has
    one, given as a file."""
    library = spec.transform_library(target)
    with tempfile.TemporaryDirectory() as tmp:
        flags = [*target.flags(), *extra_args]
        if library:
            path = Path(tmp) / f"{spec.stem}_configs.mlir"
            path.write_text(library)
            flags.append(f"--iree-codegen-transform-dialect-library={path}@__kernel_config")
        return run_compiler(spec.source(target), flags, f"{spec.stem} for {target.name}")


@dataclass(frozen=True)
class Artifact:
    vmfb: bytes
    plan: bytes | None  # the launch plan's JSON, for targets that have them


def compile_artifact(spec: Specialization, target: Target) -> Artifact:
    """``spec`` built for ``target``: its .vmfb and, where the target has
    them, its launch plan. Those are read from the VM assembly, which is then
    compiled on to the .vmfb: one code generation for both, and the .vmfb is
    byte-identical to a direct compile."""
    if compiler_version() is None:
        raise RuntimeError(
            f"artifact {spec.stem} for {target.name} must be built, but iree-base-compiler is not "
            "installed: pip install 'lnbwd-iree[compile]', or point artifact_dir at a folder made by "
            "`lnbwd-iree compile --out DIR`"
        )
    if not target.has_launch_plans:
        return Artifact(compile_spec(spec, target), None)
    what = f"{spec.stem} for {target.name}"
    asm = compile_spec(spec, target, ["--compile-to=vm", "--output-format=vm-asm"]).decode()
    plan = read_plan(asm, spec.kernel.functions, what)
    vmfb = run_compiler(asm, [*target.flags(), "--compile-from=vm"], f"{what} (from its VM assembly)")
    return Artifact(vmfb, plan.to_json())
