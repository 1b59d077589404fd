"""Renders the MLIR templates in ``mlir/`` into concrete, specialised sources.

A template is real MLIR with three kinds of holes:

* ``{FIELD}`` (upper-case name): replaced by a value (``{T}``, ``{M}``, ``{N}``)
  or, when the value names a ``.mlir`` file, by that template rendered with
  the same fields (an op's design picks its parts this way).
* ``%a = widen %b`` lines: ``arith.extf`` from the storage type ``T`` to
  the arithmetic type ``A``; ``%a = narrow %b``: back from ``A`` to ``T``;
  ``%a = from_f32 %b``: from f32 (the eps argument) to ``A``.

Where source and target types are equal the conversion would be a no-op that
MLIR does not accept (extf f32 -> f32 is invalid), so the line is dropped and
the converted name is renamed to its source throughout the text.

Every field given must be read by the template or one it includes (``T``
and ``A`` by its conversions): a field nothing reads is a design rule that
no longer reaches the source, and is refused by name.
"""

from __future__ import annotations

import re
from importlib import resources

from .dtypes import TABLE

_FIELD = re.compile(r"\{([A-Z_]+)\}")
_CONVERSION = re.compile(r"^(?P<indent>\s*)(?P<dst>%\w+) = (?P<op>widen|narrow|from_f32) (?P<src>%\w+)\s*$")

def read_template(name: str) -> str:
    """Returns the text of ``mlir/<name>`` as shipped with the package."""
    return resources.files("lnbwd_iree.mlir").joinpath(name).read_text()


def _apply_conversions(text: str, storage_type: str | None, acc_type: str | None) -> str:
    out_lines = []
    renames: dict[str, str] = {}
    for line in text.splitlines():
        match = _CONVERSION.match(line)
        if match is None:
            out_lines.append(line)
            continue
        dst, src, op, indent = match["dst"], match["src"], match["op"], match["indent"]
        source, target = {
            "widen": (storage_type, acc_type),
            "narrow": (acc_type, storage_type),
            "from_f32": ("f32", acc_type),
        }[op]
        if source == target:
            renames[dst] = src
        else:
            cast = "arith.extf" if TABLE[target].bits > TABLE[source].bits else "arith.truncf"
            out_lines.append(f"{indent}{dst} = {cast} {src} : {source} to {target}")
    result = "\n".join(out_lines) + "\n"
    if renames:
        # Names are SSA values local to one region; a whole-word rename is exact.
        pattern = re.compile("|".join(re.escape(name) + r"\b" for name in sorted(renames, key=len, reverse=True)))
        result = pattern.sub(lambda m: renames[m.group(0)], result)
    return result


def render(name: str, fields: dict[str, str]) -> str:
    """Renders template ``name`` with ``fields`` (``T``, ``M``, ``N``, ...).

    Raises KeyError for a field a template reads that ``fields`` lacks, and
    ValueError for one that no included template reads."""
    read: set[str] = set()
    included = [name]

    def substitute(text: str, template: str) -> str:
        def one(match: re.Match) -> str:
            key = match.group(1)
            if key not in fields:
                raise KeyError(f"template {template} uses field {{{key}}} but no value was given for it")
            read.add(key)
            value = str(fields[key])
            if not value.endswith(".mlir"):
                return value
            included.append(value)
            return substitute(read_template(value), value)

        return _FIELD.sub(one, text)

    text = substitute(read_template(name), name)
    if any(_CONVERSION.match(line) for line in text.splitlines()):
        for key in ("T", "A"):
            if key not in fields:
                raise KeyError(f"template {name} converts between T and A but no value was given for {{{key}}}")
        read.update(("T", "A"))
    text = _apply_conversions(text, fields.get("T"), fields.get("A"))
    unread = sorted(set(fields) - read)
    if unread:
        raise ValueError(
            f"template {name} reads no field {', '.join(unread)} (neither it nor what it includes: "
            f"{', '.join(dict.fromkeys(included[1:])) or 'nothing'})"
        )
    return text
