"""Launch plans: what a GPU artifact's entry points dispatch, as data.

IREE compiles an entry point into a VM function that records dispatches into
a command buffer and submits it, or, where every shape is static, submits a
command buffer recorded once at load time (``__init`` calls its recorder)
with a binding table of the call's buffers (``queue.execute.indirect``). A
launch plan is that function read once, when the artifact is built, from its
VM assembly (``iree-compile --compile-to=vm --output-format=vm-asm``): for
each entry, its steps in order, dispatches (which kernel, its grid, its
32-bit constants, and its bindings as (buffer, offset)) and buffer copies,
with every number an expression over the call's tensor dims and f32 scalars;
and for each executable, its kernels as the driver loads them (PTX or HSACO,
names, block dims, dynamic shared memory).
With a plan, a caller that has a stream (torch's) launches the same kernels
there directly, bypassing IREE's runtime (``lnbwd_iree.direct_launch``).

The reader knows the VM ops our entry points use. Any other op, or a value it
cannot express, is a ``PlanError`` when the artifact is built, naming the op
and the entry: never a guess at run time.

Expressions are JSON: an int; ``["dim", arg, axis]`` (a dim of the
function's tensor argument ``arg``); ``["bits", arg]`` (the f32 scalar
argument ``arg`` as its 32 bits); ``["transients"]`` (the transients
buffer's size); or ``[op, operand, ...]`` for an op of ``_EVALUATE``.
Buffers are ``["arg", k]`` (tensor argument k's buffer), ``["transients"]``
and ``["alloc", j]`` (the j-th buffer the function allocates on its queue)."""

from __future__ import annotations

import base64
import functools
import json
import re
import struct
from dataclasses import dataclass

FORMAT = 2

# The executable formats whose kernels can be launched directly, and how their
# images are kept in JSON.
_IMAGE_FORMATS = {
    "cuda-nvptx-fb": ("CDA1", "ptx"),
    "rocm-hsaco-fb": ("HIP1", "hsaco"),
}
# IREE's executable file header (iree_flatbuffer_file_header_t) before the flatbuffer.
_FILE_HEADER_SIZE = 64


class PlanError(ValueError):
    """The VM function does something a launch plan cannot express."""


# ---- expressions -------------------------------------------------------------------------------

_MASK = {32: (1 << 32) - 1, 64: (1 << 64) - 1}


def _signed(value: int, bits: int) -> int:
    value &= _MASK[bits]
    return value - (1 << bits) if value >> (bits - 1) else value


def _divide(a: int, b: int) -> int:
    if b == 0:
        raise ZeroDivisionError("launch plan: division by zero")
    quotient = abs(a) // abs(b)
    return quotient if (a >= 0) == (b >= 0) else -quotient


# op -> (number of operands, function over Python ints of the given width).
# Widths: results are kept as unsigned ints of their VM type's width.
_EVALUATE = {
    "add.i32": (2, lambda a, b: (a + b) & _MASK[32]),
    "add.i64": (2, lambda a, b: (a + b) & _MASK[64]),
    "sub.i32": (2, lambda a, b: (a - b) & _MASK[32]),
    "sub.i64": (2, lambda a, b: (a - b) & _MASK[64]),
    "mul.i32": (2, lambda a, b: (a * b) & _MASK[32]),
    "mul.i64": (2, lambda a, b: (a * b) & _MASK[64]),
    "div.i32.u": (2, lambda a, b: a // b),
    "div.i64.u": (2, lambda a, b: a // b),
    "div.i32.s": (2, lambda a, b: _divide(_signed(a, 32), _signed(b, 32)) & _MASK[32]),
    "div.i64.s": (2, lambda a, b: _divide(_signed(a, 64), _signed(b, 64)) & _MASK[64]),
    "rem.i32.u": (2, lambda a, b: a % b),
    "rem.i64.u": (2, lambda a, b: a % b),
    "and.i32": (2, lambda a, b: a & b),
    "and.i64": (2, lambda a, b: a & b),
    "or.i32": (2, lambda a, b: a | b),
    "or.i64": (2, lambda a, b: a | b),
    "xor.i32": (2, lambda a, b: a ^ b),
    "xor.i64": (2, lambda a, b: a ^ b),
    "shl.i32": (2, lambda a, b: (a << (b & 31)) & _MASK[32]),
    "shl.i64": (2, lambda a, b: (a << (b & 63)) & _MASK[64]),
    "shr.i32.u": (2, lambda a, b: a >> (b & 31)),
    "shr.i64.u": (2, lambda a, b: a >> (b & 63)),
    "shr.i64.s": (2, lambda a, b: (_signed(a, 64) >> (b & 63)) & _MASK[64]),
    "min.i32.u": (2, min),
    "min.i64.u": (2, min),
    "max.i32.u": (2, max),
    "max.i64.u": (2, max),
    "min.i64.s": (2, lambda a, b: min(_signed(a, 64), _signed(b, 64)) & _MASK[64]),
    "max.i64.s": (2, lambda a, b: max(_signed(a, 64), _signed(b, 64)) & _MASK[64]),
    "fma.i32": (3, lambda a, b, c: (a * b + c) & _MASK[32]),
    "fma.i64": (3, lambda a, b, c: (a * b + c) & _MASK[64]),
    "rem.i64.s": (2, lambda a, b: (_signed(a, 64) - _divide(_signed(a, 64), _signed(b, 64)) * _signed(b, 64)) & _MASK[64]),
    "cmp.lt.i32.s": (2, lambda a, b: int(_signed(a, 32) < _signed(b, 32))),
    "cmp.lt.i32.u": (2, lambda a, b: int(a < b)),
    "trunc.i64.i32": (1, lambda a: a & _MASK[32]),
    "ext.i32.i64.u": (1, lambda a: a),
    "ext.i32.i64.s": (1, lambda a: _signed(a, 32) & _MASK[64]),
    "cmp.eq.i32": (2, lambda a, b: int(a == b)),
    "cmp.eq.i64": (2, lambda a, b: int(a == b)),
    "cmp.ne.i32": (2, lambda a, b: int(a != b)),
    "cmp.ne.i64": (2, lambda a, b: int(a != b)),
    "cmp.nz.i32": (1, lambda a: int(a != 0)),
    "cmp.nz.i64": (1, lambda a: int(a != 0)),
    "cmp.lt.i64.u": (2, lambda a, b: int(a < b)),
    "cmp.lt.i64.s": (2, lambda a, b: int(_signed(a, 64) < _signed(b, 64))),
    "cmp.lte.i64.u": (2, lambda a, b: int(a <= b)),
    "cmp.lte.i64.s": (2, lambda a, b: int(_signed(a, 64) <= _signed(b, 64))),
    "select.i32": (3, lambda c, a, b: a if c else b),
    "select.i64": (3, lambda c, a, b: a if c else b),
}


def evaluate(expression, dims, scalar_bits, transients: int = 0) -> int:
    """The value of ``expression`` for a call: ``dims[arg][axis]`` the tensor
    arguments' dims, ``scalar_bits[arg]`` the f32 scalars' bits."""
    if isinstance(expression, int):
        return expression
    head = expression[0]
    if head == "dim":
        return dims[expression[1]][expression[2]]
    if head == "bits":
        return scalar_bits[expression[1]]
    if head == "transients":
        return transients
    _, function = _EVALUATE[head]
    return function(*(evaluate(e, dims, scalar_bits, transients) for e in expression[1:]))


def _apply(op: str, operands: list):
    """``op`` over ``operands``, folded when they are all constants."""
    if all(isinstance(o, int) for o in operands):
        return _EVALUATE[op][1](*operands)
    return [op, *operands]


def f32_bits(value: float) -> int:
    return struct.unpack("<I", struct.pack("<f", value))[0]


# ---- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    """One exported kernel of an executable, as the driver launches it."""

    name: str
    module: int  # index into the executable's images
    block: tuple[int, int, int]
    shared_memory: int  # dynamic shared memory per block, bytes
    constants: int  # 32-bit constants after the bindings
    bindings: int  # 64-bit device pointers first


@dataclass(frozen=True)
class Executable:
    format: str  # "cuda-nvptx-fb" or "rocm-hsaco-fb"
    images: tuple[bytes, ...]  # PTX text (NUL-terminated for the driver) or HSACO
    kernels: dict  # name -> Kernel


@dataclass(frozen=True)
class Dispatch:
    executable: str
    kernel: str
    grid: tuple  # three expressions
    constants: tuple  # expressions, 32-bit values
    bindings: tuple  # (buffer, offset expression) per binding


@dataclass(frozen=True)
class Copy:
    source: tuple  # (buffer, offset expression)
    target: tuple  # (buffer, offset expression)
    length: object  # expression, bytes


@dataclass(frozen=True)
class EntryPlan:
    arguments: int  # the VM function's arguments before the transients buffer and fences
    transients_size: object  # expression
    allocations: tuple  # size expressions of the buffers the function allocates
    steps: tuple  # Dispatch and Copy, in order


@dataclass(frozen=True)
class LaunchPlan:
    executables: dict  # name -> Executable
    entries: dict  # function name -> EntryPlan

    def to_json(self) -> bytes:
        def image(executable: Executable, data: bytes) -> str:
            if _IMAGE_FORMATS[executable.format][1] == "ptx":
                return data.rstrip(b"\0").decode()
            return base64.b64encode(data).decode()

        return json.dumps({
            "format": FORMAT,
            "executables": {
                name: {
                    "format": e.format,
                    "images": [image(e, data) for data in e.images],
                    "kernels": {k.name: [k.module, list(k.block), k.shared_memory, k.constants, k.bindings]
                                for k in e.kernels.values()},
                }
                for name, e in self.executables.items()
            },
            "entries": {
                name: {
                    "arguments": p.arguments,
                    "transients_size": p.transients_size,
                    "allocations": list(p.allocations),
                    "steps": [_step_json(step) for step in p.steps],
                }
                for name, p in self.entries.items()
            },
        }, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "LaunchPlan":
        raw = json.loads(data)
        if raw.get("format") != FORMAT:
            raise PlanError(f"launch plan format {raw.get('format')!r}; this lnbwd-iree reads format {FORMAT}")
        executables = {}
        for name, e in raw["executables"].items():
            kind = _IMAGE_FORMATS[e["format"]][1]
            images = tuple(i.encode() + b"\0" if kind == "ptx" else base64.b64decode(i) for i in e["images"])
            kernels = {k: Kernel(k, m, tuple(b), s, c, n) for k, (m, b, s, c, n) in e["kernels"].items()}
            executables[name] = Executable(e["format"], images, kernels)
        entries = {
            name: EntryPlan(
                p["arguments"], p["transients_size"], tuple(p["allocations"]),
                tuple(_step_from_json(step) for step in p["steps"]),
            )
            for name, p in raw["entries"].items()
        }
        return cls(executables, entries)


def _step_json(step):
    if isinstance(step, Copy):
        return {"copy": [list(step.source), list(step.target), step.length]}
    return {"dispatch": [step.executable, step.kernel, list(step.grid), list(step.constants),
                         [[b, o] for b, o in step.bindings]]}


def _step_from_json(raw):
    if "copy" in raw:
        source, target, length = raw["copy"]
        return Copy(tuple(source), tuple(target), length)
    executable, kernel, grid, constants, bindings = raw["dispatch"]
    return Dispatch(executable, kernel, tuple(grid), tuple(constants), tuple((b, o) for b, o in bindings))


# ---- reading executables (IREE's CDA1 / HIP1 flatbuffers) ----------------------------------------


class _Table:
    """A flatbuffer table: just the accessors the executable schemas need."""

    def __init__(self, data: bytes, position: int):
        self.data, self.position = data, position
        vtable = position - struct.unpack_from("<i", data, position)[0]
        self._vtable_size = struct.unpack_from("<H", data, vtable)[0]
        self._vtable = vtable

    def _field(self, index: int) -> int | None:
        slot = 4 + 2 * index
        if slot >= self._vtable_size:
            return None
        offset = struct.unpack_from("<H", self.data, self._vtable + slot)[0]
        return self.position + offset if offset else None

    def scalar(self, index: int, fmt: str, default=0):
        at = self._field(index)
        return default if at is None else struct.unpack_from("<" + fmt, self.data, at)[0]

    def struct_(self, index: int, fmt: str):
        at = self._field(index)
        return None if at is None else struct.unpack_from("<" + fmt, self.data, at)

    def _indirect(self, index: int) -> int | None:
        at = self._field(index)
        return None if at is None else at + struct.unpack_from("<I", self.data, at)[0]

    def string(self, index: int) -> bytes | None:
        at = self._indirect(index)
        if at is None:
            return None
        length = struct.unpack_from("<I", self.data, at)[0]
        return self.data[at + 4: at + 4 + length]

    def vector_length(self, index: int) -> int:
        at = self._indirect(index)
        return 0 if at is None else struct.unpack_from("<I", self.data, at)[0]

    def tables(self, index: int) -> list["_Table"]:
        at = self._indirect(index)
        if at is None:
            return []
        count = struct.unpack_from("<I", self.data, at)[0]
        elements = [at + 4 + 4 * i for i in range(count)]
        return [_Table(self.data, e + struct.unpack_from("<I", self.data, e)[0]) for e in elements]


def read_executable(format_name: str, data: bytes) -> Executable:
    """The kernels of an embedded executable (IREE's file header, then its flatbuffer)."""
    if format_name not in _IMAGE_FORMATS:
        raise PlanError(f"executable format {format_name!r} cannot be launched directly; known: {sorted(_IMAGE_FORMATS)}")
    identifier = _IMAGE_FORMATS[format_name][0]
    if data[:4] != identifier.encode():
        raise PlanError(f"{format_name} executable does not start with {identifier!r}")
    size = struct.unpack_from("<Q", data, 8)[0]
    flatbuffer = data[_FILE_HEADER_SIZE:_FILE_HEADER_SIZE + size]
    if len(flatbuffer) != size or flatbuffer[4:8] != identifier.encode():
        raise PlanError(f"{format_name} executable: its flatbuffer is truncated or not {identifier}")
    root = _Table(flatbuffer, struct.unpack_from("<I", flatbuffer, 0)[0])
    images = tuple(module.string(0) for module in root.tables(1))
    kernels = {}
    for export in root.tables(0):
        name = export.string(1).decode()
        kernels[name] = Kernel(
            name=name,
            module=export.scalar(0, "I"),
            block=tuple(export.struct_(2, "III") or (1, 1, 1)),
            shared_memory=export.scalar(3, "I"),
            constants=export.scalar(4, "I"),
            bindings=export.vector_length(5),
        )
    if _IMAGE_FORMATS[format_name][1] == "ptx":
        images = tuple(i if i.endswith(b"\0") else i + b"\0" for i in images)
    return Executable(format_name, images, kernels)


# ---- reading the VM assembly --------------------------------------------------------------------

_LOC = re.compile(r"\s*loc\((?:[^()]|\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\))*\)")
_RODATA = re.compile(r'^\s*vm\.rodata private @(?P<sym>[\w.$-]+) <[^>]*> (?:"(?P<text>[^"]*)"|dense<"0x(?P<hex>[0-9A-Fa-f]*)">)')
_FUNC = re.compile(r"^\s*vm\.func private @(?P<name>[\w.$-]+)\((?P<args>.*?)\)(?: ->|\s*(?:attributes|\{))")
_ASSIGN = re.compile(r"^\s*(?P<result>%[\w.$-]+)(?::\d+)?\s*=\s*(?P<op>[\w.]+)\s*(?P<rest>.*)$")
_STATEMENT = re.compile(r"^\s*(?P<op>[\w.]+)\s*(?P<rest>.*)$")
_BLOCK = re.compile(r"^\s*\^(?P<label>\w+)(?:\((?P<args>[^)]*)\))?:")
_CALL = re.compile(r"@(?P<callee>[\w.]+)\((?P<operands>.*)\)")
_VALUE = re.compile(r"%[\w.$-]+")


def _split_top(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current.strip())
    return parts


def _closing(text: str, start: int) -> int:
    """The index of the bracket closing the one at ``text[start]``."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] in "([":
            depth += 1
        elif text[i] in ")]":
            depth -= 1
            if depth == 0:
                return i
    raise PlanError(f"unbalanced brackets in {text!r}")


class _Module:
    """The parts of a VM assembly module a plan is read from."""

    def __init__(self, asm: str):
        self.strings: dict[str, str] = {}
        self.blobs: dict[str, bytes] = {}
        self.functions: dict[str, tuple[list[str], list[str]]] = {}  # name -> (arg types, body lines)
        lines = [_LOC.sub("", line) for line in asm.splitlines()]
        i = 0
        while i < len(lines):
            line = lines[i]
            rodata = _RODATA.match(line)
            if rodata:
                if rodata["text"] is not None:
                    self.strings[rodata["sym"]] = rodata["text"]
                else:
                    self.blobs[rodata["sym"]] = bytes.fromhex(rodata["hex"])
            function = _FUNC.match(line)
            if function and line.rstrip().endswith("{"):
                indent = len(line) - len(line.lstrip())
                body = []
                i += 1
                while not (lines[i].strip() == "}" and len(lines[i]) - len(lines[i].lstrip()) == indent):
                    body.append(lines[i])
                    i += 1
                arg_types = [a.split(":", 1)[1].strip() for a in _split_top(function["args"])]
                self.functions[function["name"]] = (arg_types, body)
            i += 1

    @functools.cached_property
    def recorders(self) -> dict[str, str]:
        """Command-buffer globals that ``__init`` fills by calling a function (IREE's
        memoized command buffers) -> that function's name."""
        _, body = self.functions.get("__init", ([], []))
        called, found = {}, {}
        for line in body:
            assign = _ASSIGN.match(line)
            if assign and assign["op"] == "vm.call":
                call = _CALL.search(assign["rest"])
                if call and call["callee"] in self.functions:
                    called[assign["result"]] = call["callee"]
                continue
            statement = _STATEMENT.match(line)
            if statement and statement["op"] == "vm.global.store.ref":
                value, target = [p.strip() for p in statement["rest"].split(":")[0].split(",")]
                if value in called:
                    found[target.lstrip("@")] = called[value]
        return found

    def executables(self) -> dict[str, Executable]:
        """Executable globals (as the entry functions load them) -> their kernels, from ``__init``."""
        _, body = self.functions.get("__init", ([], []))
        rodata_of, created = {}, {}
        found = {}
        for line in body:
            assign = _ASSIGN.match(line)
            if assign and assign["op"] == "vm.const.ref.rodata":
                rodata_of[assign["result"]] = assign["rest"].split()[0].lstrip("@")
            elif assign and assign["op"] == "vm.call" and "@hal.executable.create(" in assign["rest"]:
                operands = _split_top(_CALL.search(assign["rest"])["operands"])
                format_name = self.strings[rodata_of[operands[2]]]
                created[assign["result"]] = (format_name, rodata_of[operands[3]])
            else:
                statement = _STATEMENT.match(line)
                if statement and statement["op"] == "vm.global.store.ref":
                    value, target = [p.strip() for p in statement["rest"].split(":")[0].split(",")]
                    if value in created:
                        format_name, sym = created[value]
                        found[target.lstrip("@")] = read_executable(format_name, self.blobs[sym])
        return found


class _Reader:
    """Runs one VM function over symbolic values and records its dispatches."""

    def __init__(self, module: _Module, name: str, executables: dict):
        self.module, self.name, self.executables = module, name, executables
        arg_types, body = module.functions[name]
        self.values: dict[str, object] = {}
        self.arguments = 0
        for k, arg_type in enumerate(arg_types):
            if "hal.buffer_view" in arg_type:
                self.values[f"%arg{k}"] = ("view", k)
            elif arg_type == "f32":
                self.values[f"%arg{k}"] = ("scalar", k)
            elif "hal.buffer>" in arg_type:
                self.values[f"%arg{k}"] = ("buffer", ["transients"], 0)
                self.arguments = k
            elif "hal.fence" in arg_type:
                self.values[f"%arg{k}"] = ("fence",)
            else:
                raise PlanError(f"{name}: argument {k} has type {arg_type}, which a launch plan does not take")
        self.blocks = self._blocks(body)
        self.allocations: list = []
        self.steps: list = []

    @staticmethod
    def _blocks(body: list[str]) -> dict:
        blocks, label, current = {}, "entry", ([], [])
        blocks[label] = current
        for line in body:
            block = _BLOCK.match(line)
            if block:
                params = [p.split(":")[0].strip() for p in _split_top(block["args"] or "")]
                current = (params, [])
                blocks[block["label"]] = current
            elif line.strip() and not line.strip().startswith("//"):
                current[1].append(line)
        return blocks

    def fail(self, what: str) -> PlanError:
        return PlanError(f"launch plan of {self.name}: {what}")

    def value(self, token: str):
        token = token.strip()
        if token not in self.values:
            raise self.fail(f"value {token} is not known (defined by an op the reader skipped?)")
        return self.values[token]

    def number(self, token: str):
        value = self.value(token)
        if isinstance(value, (int, list)):
            return value
        if isinstance(value, tuple) and value[0] == "scalar":
            raise self.fail(f"{token} is an f32 scalar used as a number")
        raise self.fail(f"{token} is {value[0]}, not a number")

    def run(self):
        """Follows the function from its entry block to its return; returns the result of the
        function (the last ``vm.return`` operand, for size functions)."""
        label, visited = "entry", 0
        while True:
            visited += 1
            if visited > 64:
                raise self.fail("more than 64 blocks run: a loop")
            _, lines = self.blocks[label]
            for line in lines:
                jump = self.step(line)
                if jump is not None:
                    if jump[0] == "return":
                        return jump[1]
                    label, args = jump
                    params, _ = self.blocks[label]
                    for param, arg in zip(params, args):
                        self.values[param] = arg
                    break
            else:
                raise self.fail(f"block ^{label} ends without a terminator")

    def _jump(self, target: str):
        match = re.match(r"\^(\w+)(?:\((.*?)(?::.*)?\))?$", target.strip())
        args = [self.value(a) for a in _split_top(match[2] or "")] if match[2] else []
        return match[1], args

    def step(self, line: str):
        assign = _ASSIGN.match(line)
        result, op, rest = (assign["result"], assign["op"], assign["rest"]) if assign else (None, *_STATEMENT.match(line).groups())
        head = op.removeprefix("vm.")
        if head in ("const.i32", "const.i64"):
            self.values[result] = int(rest.split()[0]) & _MASK[64 if head.endswith("64") else 32]
        elif head in ("const.i32.zero", "const.i64.zero"):
            self.values[result] = 0
        elif head == "const.ref.zero":
            self.values[result] = ("null",)
        elif head == "const.ref.rodata":
            sym = rest.split()[0].lstrip("@")
            self.values[result] = ("string", self.module.strings.get(sym, sym))
        elif head == "global.load.ref":
            self.values[result] = ("global", rest.split()[0].lstrip("@"))
        elif head == "bitcast.f32.i32":
            scalar = self.value(rest.split(":")[0])
            if not (isinstance(scalar, tuple) and scalar[0] == "scalar"):
                raise self.fail("bitcast of a value that is not an f32 argument")
            self.values[result] = ["bits", scalar[1]]
        elif head in _EVALUATE:
            operands = [self.number(t) for t in _split_top(rest.split(":")[0])]
            if len(operands) != _EVALUATE[head][0]:
                raise self.fail(f"{op} with {len(operands)} operands")
            self.values[result] = _apply(head, operands)
        elif head == "discard.refs":
            pass
        elif head in ("call", "call.variadic", "call.variadic.yieldable"):
            return self.call(result, op, rest)
        elif head == "br":
            return self._jump(rest.split(":")[0] if "(" not in rest else rest[: _closing(rest, rest.index("(")) + 1])
        elif head == "cond_br":
            condition, true_target, false_target = _split_top(rest)
            taken = self.number(condition)
            if not isinstance(taken, int):
                raise self.fail(f"a branch on {taken}, which depends on the call's arguments")
            return self._jump(true_target if taken else false_target)
        elif head == "return":
            operands = _split_top(rest.split(":")[0]) if rest.strip() else []
            return ("return", self.value(operands[-1]) if operands else None)
        elif head == "fail":
            raise self.fail(f"the function fails on this path ({rest.strip()})")
        else:
            raise self.fail(f"VM op {op} is not one a launch plan knows")
        return None

    def buffer(self, token: str):
        value = self.value(token)
        if isinstance(value, tuple) and value[0] == "view":
            return ["arg", value[1]], 0
        if isinstance(value, tuple) and value[0] == "buffer":
            return value[1], value[2]
        raise self.fail(f"{token} is not a buffer")

    def call(self, result, op: str, rest: str):
        call = _CALL.search(rest)
        callee = call["callee"]
        operands_text = rest[rest.index("(", call.start()) + 1: _closing(rest, rest.index("(", call.start()))]
        operands = _split_top(operands_text)
        if callee in ("hal.buffer.assert", "hal.buffer_view.assert", "hal.command_buffer.execution_barrier",
                      "hal.command_buffer.finalize", "hal.device.queue.execute", "hal.device.queue.dealloca"):
            # Checks the runtime makes before a call, and ordering that one stream gives.
            return None
        if callee == "hal.device.allocator":
            self.values[result] = ("allocator",)
        elif callee == "hal.command_buffer.create":
            self.values[result] = ("command_buffer",)
        elif callee in ("hal.fence.create", "hal.fence.join"):
            self.values[result] = ("fence",)
        elif callee == "hal.buffer_view.dim":
            view = self.value(operands[0])
            if not (isinstance(view, tuple) and view[0] == "view"):
                raise self.fail("dim of a value that is not a tensor argument")
            self.values[result] = ["dim", view[1], self.number(operands[1])]
        elif callee == "hal.buffer_view.buffer":
            view = self.value(operands[0])
            self.values[result] = ("buffer", ["arg", view[1]], 0)
        elif callee == "hal.buffer.length":
            source, offset = self.buffer(operands[0])
            if source != ["transients"] or offset != 0:
                raise self.fail("hal.buffer.length of a buffer other than the transients")
            self.values[result] = ["transients"]
        elif callee == "hal.buffer.subspan":
            source, offset = self.buffer(operands[0])
            self.values[result] = ("buffer", source, _apply("add.i64", [offset, self.number(operands[1])])
                                   if offset != 0 else self.number(operands[1]))
        elif callee == "hal.device.queue.alloca":
            self.allocations.append(self.number(operands[7]))
            self.values[result] = ("buffer", ["alloc", len(self.allocations) - 1], 0)
        elif callee == "hal.executable.lookup.function":
            executable = self.value(operands[0])
            name = self.value(operands[1])
            self.values[result] = ("function", executable[1], name[1])
        elif callee == "hal.fence.await":
            # Waits for the queue's earlier work: on one stream that order holds already.
            # Its status result (0: ok) decides the branch to the function's error path.
            target = rest[rest.index("->") + 2:].strip()
            return self._jump(target.split()[0])[0], [0]
        elif callee == "hal.command_buffer.dispatch":
            self.dispatch(operands)
        elif callee == "hal.command_buffer.copy_buffer":
            length = self.number(operands[7])
            if self.number(operands[8]) != 0:
                raise self.fail("a buffer copy with flags")
            self.steps.append(Copy(self.binding(operands[1], operands[3], operands[4]),
                                   self.binding(operands[2], operands[5], operands[6]), length))
        elif callee == "hal.device.queue.execute.indirect":
            self.execute_recorded(operands)
        else:
            raise self.fail(f"call of @{callee} is not one a launch plan knows")
        return None

    def dispatch(self, operands: list[str]) -> None:
        executable = self.value(operands[1])
        function = self.value(operands[2])
        if not (isinstance(function, tuple) and function[0] == "function" and function[1] == executable[1]):
            raise self.fail("a dispatch whose function was not looked up by name in its executable")
        if function[1] not in self.executables:
            raise self.fail(f"executable {function[1]} was not found in __init")
        kernel = self.executables[function[1]].kernels.get(function[2])
        if kernel is None:
            raise self.fail(f"kernel {function[2]} is not exported by {function[1]}")
        grid = tuple(self.number(t) for t in operands[3:6])
        if self.number(operands[6]) != 0:
            raise self.fail("a dispatch with flags")
        constants = tuple(self.number(t) for t in _split_top(operands[7].strip()[1:-1]))
        bindings = []
        for binding in _split_top(operands[8].strip()[1:-1]):
            fields = _split_top(binding.strip()[1:-1])
            if self.number(fields[0]) != 0:
                raise self.fail("a binding whose reserved field is set")
            bindings.append(self.binding(fields[1], fields[2], fields[3]))
        if len(constants) != kernel.constants or len(bindings) != kernel.bindings:
            raise self.fail(
                f"dispatch of {kernel.name} passes {len(bindings)} bindings and {len(constants)} constants; "
                f"the kernel takes {kernel.bindings} and {kernel.constants}"
            )
        self.steps.append(Dispatch(function[1], kernel.name, grid, constants, tuple(bindings)))

    def binding(self, slot: str, buffer: str, offset: str) -> tuple:
        """(buffer, offset) of a binding or copy operand: a buffer, or for a null
        buffer the binding-table slot of a recorded command buffer (["slot", k])."""
        if self.value(buffer) == ("null",):
            return ["slot", self.number(slot)], self.number(offset)
        if self.number(slot) != 0:
            raise self.fail("a buffer passed together with a binding-table slot")
        source, base = self.buffer(buffer)
        offset = self.number(offset)
        return source, offset if base == 0 else _apply("add.i64", [base, offset])

    def execute_recorded(self, operands: list[str]) -> None:
        """A command buffer recorded at load time, run with this call's binding table."""
        command_buffer = self.value(operands[4])
        recorder = self.module.recorders.get(command_buffer[1]) if command_buffer[0] == "global" else None
        if recorder is None:
            raise self.fail("queue.execute.indirect of a command buffer that __init does not record")
        if self.number(operands[5]) != 0:
            raise self.fail("queue.execute.indirect with flags")
        table = []
        for entry in _split_top(operands[6].strip()[1:-1]):
            buffer, offset, _length = _split_top(entry.strip()[1:-1])
            source, base = self.buffer(buffer)
            offset = self.number(offset)
            table.append((source, offset if base == 0 else _apply("add.i64", [base, offset])))
        recorded = _Reader(self.module, recorder, self.executables)
        recorded.run()
        if recorded.allocations:
            raise self.fail(f"{recorder} allocates")

        def bound(source, offset):
            if source[0] != "slot":
                return source, offset
            if source[1] >= len(table):
                raise self.fail(f"{recorder} uses binding-table slot {source[1]} of {len(table)}")
            buffer, base = table[source[1]]
            return buffer, offset if base == 0 else _apply("add.i64", [base, offset])

        for step in recorded.steps:
            if isinstance(step, Copy):
                self.steps.append(Copy(bound(*step.source), bound(*step.target), step.length))
            else:
                self.steps.append(Dispatch(step.executable, step.kernel, step.grid, step.constants,
                                           tuple(bound(*b) for b in step.bindings)))


def read_plan(asm: str, entry_names, what: str = "") -> LaunchPlan:
    """The launch plan of ``entry_names`` (functions of the VM assembly ``asm``);
    PlanError names ``what`` and the op that could not be read."""
    try:
        module = _Module(asm)
        executables = module.executables()
        entries = {}
        for name in entry_names:
            if name not in module.functions:
                raise PlanError(f"no function {name} in the VM module")
            reader = _Reader(module, name, executables)
            reader.run()
            size_name = f"{name}_transients_size"
            size = 0
            if size_name in module.functions:
                size = _Reader(module, size_name, executables).run()
                if not isinstance(size, (int, list)):
                    raise PlanError(f"{size_name} returns {size!r}, not a size")
            slots = [b for d in reader.steps for b in (d.bindings if isinstance(d, Dispatch) else (d.source, d.target))
                     if b[0][0] == "slot"]
            if slots:
                raise PlanError(f"{name}: a binding-table slot outside a recorded command buffer")
            entries[name] = EntryPlan(reader.arguments, size, tuple(reader.allocations), tuple(reader.steps))
        used = {d.executable for p in entries.values() for d in p.steps if isinstance(d, Dispatch)}
        return LaunchPlan({name: e for name, e in executables.items() if name in used}, entries)
    except PlanError as e:
        raise PlanError(f"{what}: {e}" if what else str(e)) from None
