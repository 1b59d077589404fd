"""Renders the MLIR templates in ``mlir/`` into concrete, specialised sources.

A template is real MLIR with three kinds of holes:

* ``{FIELD}`` (upper-case name): replaced by a value (``{T}``, ``{M}``, ``{N}``)
  or, when the value names a ``.mlir`` file, by that template rendered with
  the same fields (``{ROW_STATISTICS}``, ``{COLUMN_SUMS}``, ``{FINAL_SUMS}``; ``{ROW_SUM_G_BODY}``,
  ``{ROW_SUM_GC_XHAT_BODY}`` and ``{DX_BODY}`` are op bodies that both
  backward designs share).
* ``%a = widen %b`` lines: ``arith.extf`` from the storage type ``T`` to
  the arithmetic type ``A``; ``%a = narrow %b``: back from ``A`` to ``T``;
  ``%a = from_f32 %b``: from f32 (the eps argument) to ``A``.

Where source and target types are equal the conversion would be a no-op that
MLIR does not accept (extf f32 -> f32 is invalid), so the line is dropped and
the converted name is renamed to its source throughout the text.
"""

from __future__ import annotations

import re
from importlib import resources

from .dtypes import TABLE

_FIELD = re.compile(r"\{([A-Z_]+)\}")
_CONVERSION = re.compile(r"^(?P<indent>\s*)(?P<dst>%\w+) = (?P<op>widen|narrow|from_f32) (?P<src>%\w+)\s*$")

# Included in every template that names it.
_DEFAULT_FIELDS = {
    "ROW_STATISTICS": "row_statistics.mlir",
    "ROW_SUM_G_BODY": "row_sum_g_body.mlir",
    "ROW_SUM_GC_XHAT_BODY": "row_sum_gc_xhat_body.mlir",
    "DX_BODY": "dx_body.mlir",
}


def read_template(name: str) -> str:
    """Returns the text of ``mlir/<name>`` as shipped with the package."""
    return resources.files("lnbwd_iree.mlir").joinpath(name).read_text()


def _apply_conversions(text: str, storage_type: str, acc_type: str) -> str:
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
    """Renders template ``name`` with ``fields`` (``T``, ``M``, ``N``, ...)."""

    fields = {**_DEFAULT_FIELDS, **fields}

    def substitute(text: str) -> str:
        def one(match: re.Match) -> str:
            key = match.group(1)
            if key not in fields:
                raise KeyError(f"template {name} uses field {{{key}}} but no value was given for it")
            value = str(fields[key])
            return substitute(read_template(value)) if value.endswith(".mlir") else value

        return _FIELD.sub(one, text)

    return _apply_conversions(substitute(read_template(name)), fields["T"], fields["A"])
