"""Text vectorizers (CountVectorizer, TfidfVectorizer) made portable and faithful in ONNX.

Three things skl2onnx leaves to the machine or gets wrong for non-ASCII text:

- its ``StringNormalizer`` (lower-casing, stop words) carries no ``locale``, and ONNX Runtime
  then asks for ``en_US.UTF-8``, which many images lack: every StringNormalizer gets
  :data:`LOCALE` (``C.UTF-8``, built into glibc and present in Debian-based images), or ``C``
  where the ONNX Runtime here cannot build ``C.UTF-8``;
- the default ``token_pattern`` (``(?u)\\b\\w\\w+\\b``) becomes ``[a-zA-Z0-9_]+``, which splits
  words at every accented letter and keeps the 1-letter words scikit-learn drops (so n-grams
  differ): it becomes :data:`WORDS` (runs of two or more letters, digits or ``_`` of any
  script, as Python's ``\\w`` is). Word-run patterns (``\\b\\w+\\b``, ``\\w{3,}`` ...) are
  rewritten the same way; any other pattern only loses the ``(?u)`` flag RE2 refuses, and its
  ``\\w`` and ``\\b`` stay ASCII in RE2;
- a pattern ONNX Runtime's tokenizer (RE2) cannot compile (look-around, back-references) only
  fails when the model is loaded: :func:`check_tokenizers` says so at conversion, naming it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

import onnx

from lockgate.convert.columns import walk
from lockgate.errors import ConversionError

__all__ = ["LOCALE", "WORDS", "WORD_CHAR", "check_tokenizers", "portable_locale", "re2_pattern",
           "vectorizer_options"]

LOCALE = "C.UTF-8"
"""The StringNormalizer locale lockgate writes: present wherever glibc 2.35+ or Debian is."""

WORD_CHAR = r"[\p{L}\p{N}_]"
"""RE2 for one character Python's ``\\w`` matches in a str pattern: a letter, digit or ``_``."""

WORDS = WORD_CHAR + "{2,}"
"""RE2 for the default token pattern ``(?u)\\b\\w\\w+\\b``: runs of two or more word characters."""

_UNICODE_FLAG = "(?u)"
# \w repeated (\w\w+, \w{3,} ...), optionally between \b's: a run of word characters, which
# RE2's leftmost-longest search finds the same way without the (ASCII-only) \b.
_WORD_RUN = re.compile(r"(\\w)*\\w(\+|\{(\d+),\})")


def vectorizer_options(model: object) -> dict[int, dict[str, Any]]:
    """skl2onnx options for every word-level vectorizer inside ``model``: the tokenizer pattern
    ONNX Runtime reads as the vectorizer does."""
    from sklearn.feature_extraction.text import CountVectorizer

    options: dict[int, dict[str, Any]] = {}
    for _, est in walk(model):
        if not isinstance(est, CountVectorizer):  # TfidfVectorizer is one
            continue
        if est.analyzer != "word" or est.tokenizer is not None or est.token_pattern is None:
            continue  # skl2onnx refuses custom tokenizers itself, with their name
        pattern = str(est.token_pattern)
        rewritten = re2_pattern(pattern)
        if rewritten != pattern:
            options[id(est)] = {"tokenexp": rewritten}
    return options


def re2_pattern(pattern: str) -> str:
    """The RE2 pattern that tokenizes as the Python ``token_pattern`` does, where one is known:
    word runs become :data:`WORD_CHAR` runs; otherwise the pattern without ``(?u)``."""
    if pattern.startswith(_UNICODE_FLAG):
        pattern = pattern[len(_UNICODE_FLAG):]
    core = pattern
    if core.startswith(r"\b") and core.endswith(r"\b") and len(core) > 4:
        core = core[2:-2]
    run = _WORD_RUN.fullmatch(core)
    if run is None:
        return pattern
    least = core.count(r"\w") - 1 + (int(run.group(3)) if run.group(3) else 1)
    return WORD_CHAR + ("+" if least == 1 else f"{{{least},}}")


def portable_locale(proto: onnx.ModelProto) -> str | None:
    """Give every StringNormalizer without a locale :data:`LOCALE` (in subgraphs too); the locale
    written, or None when the graph has no StringNormalizer."""
    nodes = [n for n in _nodes(proto.graph) if n.op_type == "StringNormalizer"]
    if not nodes:
        return None
    locale = _loadable_locale()
    for node in nodes:
        if not any(a.name == "locale" for a in node.attribute):
            node.attribute.append(onnx.helper.make_attribute("locale", locale))
    return locale


def check_tokenizers(proto: onnx.ModelProto) -> None:
    """Raise :class:`ConversionError` for a Tokenizer whose pattern ONNX Runtime cannot use."""
    for node in _nodes(proto.graph):
        if node.op_type != "Tokenizer":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        problem = _tokenizer_problem(node)
        if problem is None:
            continue
        pattern = attrs.get("tokenexp", b"")
        text = pattern.decode() if isinstance(pattern, bytes) else str(pattern)
        raise ConversionError(
            f"ONNX Runtime's tokenizer (RE2) cannot use the token_pattern '{text}': {problem}",
            hint="use a pattern in RE2 syntax (no look-around, no back-references), or the "
            "default token_pattern",
        )


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)
            for sub in attr.graphs:
                yield from _nodes(sub)


def _tokenizer_problem(node: onnx.NodeProto) -> str | None:
    probe = onnx.NodeProto()
    probe.CopyFrom(node)
    del probe.input[:]
    del probe.output[:]
    probe.input.append("text")
    probe.output.append("tokens")
    return _session_error(probe, [("", 18), ("com.microsoft", 1)])


@functools.cache
def _loadable_locale() -> str:
    for locale in (LOCALE, "C"):
        node = onnx.helper.make_node("StringNormalizer", ["text"], ["tokens"],
                                     case_change_action="LOWER", locale=locale)
        if _session_error(node, [("", 18)]) is None:
            return locale
    return LOCALE


def _session_error(node: onnx.NodeProto, opsets: list[tuple[str, int]]) -> str | None:
    """None when ONNX Runtime builds a session for ``node`` alone; otherwise why not."""
    import onnxruntime as ort

    from lockgate.convert._common import first_line

    helper, tp = onnx.helper, onnx.TensorProto
    graph = helper.make_graph(
        [node], "probe", [helper.make_tensor_value_info("text", tp.STRING, [None])],
        [helper.make_tensor_value_info("tokens", tp.STRING, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets],
                              ir_version=9)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                             providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidArgument
        message = first_line(exc)
        return message.split("tokenexp:")[-1].strip() if "tokenexp" in message else message
    return None
