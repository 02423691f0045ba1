"""pygeofilter's CQL2 text parser with CQL2's own identifier rule.

pygeofilter 0.4's grammar takes a property name as ``[a-zA-Z][a-zA-Z_:0-9.]+``: no Japanese
(「市町 = '白浜'」 fails with "No terminal matches '市'"), and no one-letter names. CQL2 (OGC
21-065, BNF ``identifierStart`` / ``identifierPart``) allows letters of most scripts, U+3001 to
U+D7FF among them. This module loads pygeofilter's own grammar file, replaces that one terminal
with CQL2's production, and keeps pygeofilter's transformer, so the AST is pygeofilter's.
"""
from __future__ import annotations

import os
from functools import lru_cache

# CQL2 BNF: identifierStart, and identifierPart = identifierStart | "." | digit | U+00B7 |
# U+0300–U+036F | U+203F–U+2040.
_START = (r":_A-Za-z\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u02FF\u0370-\u037D\u037F-\u1FFE"
          r"\u200C-\u200D\u2070-\u218F\u2C00-\u2FEF\u3001-\uD7FF\uF900-\uFDCF\uFDF0-\uFFFD"
          r"\U00010000-\U000EFFFF")
_PART = _START + r".0-9\u00B7\u0300-\u036F\u203F-\u2040"
IDENTIFIER = f"/[{_START}][{_PART}]*/"
_PYGEOFILTER_RULE = "attribute: /[a-zA-Z][a-zA-Z_:0-9.]+/"


@lru_cache(maxsize=1)
def _parser():
    from lark import Lark
    from pygeofilter.parsers.cql2_text import parser as upstream
    folder = os.path.dirname(upstream.__file__)
    with open(os.path.join(folder, "grammar.lark"), encoding="utf-8") as fh:
        grammar = fh.read()
    if _PYGEOFILTER_RULE not in grammar:   # a pygeofilter upgrade changed it: say so loudly
        raise RuntimeError("pygeofilter's CQL2 text grammar changed; review ogcapi/cql2_text")
    grammar = grammar.replace(_PYGEOFILTER_RULE, f"attribute: {IDENTIFIER}")
    return Lark(grammar, parser="lalr", maybe_placeholders=False,
                transformer=upstream.CQLTransformer(),
                import_paths=[os.path.dirname(folder)])


def parse(text: str):
    """CQL2 text → pygeofilter AST; property names as CQL2 allows them, bare or "quoted"."""
    return _parser().parse(text)
