from __future__ import annotations

import io

import pytest

from lockgate.errors import InvalidInputError
from lockgate.types import Digest, GateStatus, ModelRef


def test_digest_streams_like_bytes() -> None:
    data = b"x" * (3 << 20)
    assert Digest.of_stream(io.BytesIO(data)) == Digest.of_bytes(data)
    assert str(Digest.of_bytes(b"")).startswith("sha256:e3b0c442")


@pytest.mark.parametrize("bad", ["md5:abc", "sha256:xyz", "sha256:" + "A" * 64, ""])
def test_digest_rejects_malformed(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        Digest(bad)


@pytest.mark.parametrize(
    ("text", "name", "selector"),
    [("clf", "clf", None), ("clf@3", "clf", 3), ("clf@production", "clf", "production"),
     ("a.b-c_d@champion", "a.b-c_d", "champion")],
)
def test_model_ref_parse(text: str, name: str, selector: object) -> None:
    ref = ModelRef.parse(text)
    assert (ref.name, ref.selector) == (name, selector)
    assert str(ref) == text


@pytest.mark.parametrize("bad", ["", "@3", "../x", "a/b", "clf@", "clf@../x", "x" * 200])
def test_model_ref_rejects_bad_names(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        ModelRef.parse(bad)


def test_gate_status_members_round_trip() -> None:
    for member in GateStatus:
        assert GateStatus(member.value) is member
