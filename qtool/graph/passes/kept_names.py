"""The base of the rewrites that could take away a tensor name an overrides file (or imported encodings) gives."""

from __future__ import annotations

import onnx_ir as ir


class KeepNamesPass(ir.passes.InPlacePass):
    """`keep`: those names; a rewrite that would take one away is not made."""

    def __init__(self, keep: frozenset[str] = frozenset()):
        super().__init__()
        self.keep = keep
