"""SPDX license ids as ``[licenses]`` names them: parsed, normalised and checked.

An id is normalised with ``license-expression``'s SPDX licensing (``mit`` is ``MIT``, ``GPL-2.0``
is ``GPL-2.0-only``); ``LicenseRef-*`` ids are kept as written. :mod:`lockgate.supplychain.licenses`
judges distributions with the same parser.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from lockgate.errors import InvalidInputError

__all__ = ["is_ref", "license_id", "license_lists", "licensing", "parse_expression"]


@functools.cache
def licensing() -> Any:
    """The SPDX licensing of ``license-expression`` (loaded once)."""
    import license_expression  # type: ignore[import-untyped]

    return license_expression.get_spdx_licensing()


def is_ref(key: str) -> bool:
    """Whether ``key`` is a ``LicenseRef-``/``DocumentRef-`` id, valid without being listed."""
    return key.startswith(("LicenseRef-", "DocumentRef-"))


@functools.lru_cache(maxsize=4096)
def parse_expression(text: str) -> Any:
    """The parsed expression, or InvalidInputError. ``LicenseRef-*`` ids are valid."""
    import license_expression

    spdx = licensing()
    try:
        expr = spdx.parse(text, strict=True)
    except (license_expression.ExpressionError, license_expression.ParseError) as exc:
        raise InvalidInputError(f"{text!r} is not an SPDX license expression: {exc}") from exc
    if expr is None:
        raise InvalidInputError("an empty license expression")
    unknown = [k for k in spdx.unknown_license_keys(expr) if not is_ref(k)]
    if unknown:
        raise InvalidInputError(f"{text!r} is not an SPDX license expression: unknown license "
                                f"ids {unknown}")
    return expr


def license_id(text: str) -> str:
    """``text`` as one normalised SPDX id; InvalidInputError for an expression or unknown id."""
    import license_expression

    expr = parse_expression(text.strip())
    if not isinstance(expr, license_expression.LicenseSymbol):
        raise InvalidInputError(f"{text!r} is not a single SPDX license id",
                                hint="list ids such as MIT or Apache-2.0, not expressions")
    key: str = expr.key
    return key


def license_lists(allowed: Iterable[str], denied: Iterable[str]
                  ) -> tuple[frozenset[str], frozenset[str]]:
    """Both lists normalised; InvalidInputError for an unknown id, or one in both lists."""
    allowed_ids = frozenset(license_id(i) for i in allowed)
    denied_ids = frozenset(license_id(i) for i in denied)
    both = {i.casefold() for i in allowed_ids} & {i.casefold() for i in denied_ids}
    if both:
        raise InvalidInputError(f"license ids both allowed and denied: {sorted(both)}",
                                hint="list each SPDX id in allow or in deny, not in both")
    return allowed_ids, denied_ids
