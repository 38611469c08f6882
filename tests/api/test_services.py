"""The facade is its services: each reachable as an attribute, sharing one home, and both a
local home and a registry client offer every operation of the Registry protocol."""

from __future__ import annotations

import inspect
from dataclasses import replace

import pytest

from lockgate import Lockgate, RemoteRegistry
from lockgate.access.identity import IdentifiedBy
from lockgate.api.protocol import RegisterOptions, Registry
from lockgate.convert.frameworks import FrameworkPolicyError
from onnx_models import linear_onnx


def test_services_answer_what_the_facade_answers(mem_lg: Lockgate) -> None:
    v = mem_lg.registration.register(linear_onnx(), name="m", description="first")
    assert mem_lg.lookup.get("m@1") == mem_lg.get("m") == v
    assert mem_lg.files.verify(v) == mem_lg.verify(v) == v.signed_by
    mem_lg.promotion.set_alias("m", "best", 1)
    assert mem_lg.aliases("m") == {"best": 1}
    assert [e["event"] for e in mem_lg.records.history("m")["timeline"]] == [
        "registered", "alias"]


def test_settings_replaced_after_opening_reach_every_service(mem_lg: Lockgate) -> None:
    mem_lg.settings = replace(mem_lg.settings, frameworks={"onnx": "<1"})
    with pytest.raises(FrameworkPolicyError):
        mem_lg.register(linear_onnx(), name="m")
    assert mem_lg.models() == []
    assert [r.type for r in mem_lg.audit_log()] == ["registration.refused"]


def _operations() -> list[str]:
    return sorted(n for n, f in vars(Registry).items()
                  if callable(f) and (not n.startswith("_") or n in ("__enter__", "__exit__"))
                  and n not in {"_is_protocol", "__init__"})


@pytest.mark.parametrize("cls", [Lockgate, RemoteRegistry])
@pytest.mark.parametrize("name", _operations())
def test_both_registries_take_the_protocols_parameters(cls: type, name: str) -> None:
    wanted = inspect.signature(getattr(Registry, name)).parameters
    found = dict(inspect.signature(getattr(cls, name)).parameters)
    # a local home also takes how the registry server identified its caller (a remote client
    # is identified by its token): keyword-only, defaulting to a local identity
    extra = found.pop("identified_by", None)
    if extra is not None:
        assert cls is Lockgate
        assert name in ("approve", "reject", "waive")
        assert extra.kind is inspect.Parameter.KEYWORD_ONLY
        assert extra.default is IdentifiedBy.LOCAL
    assert list(found) == list(wanted)


def test_register_options_name_every_keyword_of_the_old_signature() -> None:
    assert set(RegisterOptions.__annotations__) == {
        "description", "tags", "metrics", "seed", "seeds", "opset", "atol", "rtol", "creator",
        "considerations", "datasets", "lock_file", "recipe", "reference", "progress",
        "dynamic", "source", "expect"}
