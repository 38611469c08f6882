"""A Hugging Face BertForSequenceClassification (a tiny config, nothing downloaded) registered with
a free batch and sequence through `lockgate register --dynamic`, served by a real `lockgate
serve` and called at two sequence lengths with the stock tritonclient.http client."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from lockgate.api.facade import Lockgate
from servers import lockgate_server

pytestmark = [pytest.mark.slow, pytest.mark.torch]

FACTORY = '''
import torch
from transformers import BertConfig, BertForSequenceClassification


def build():
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64, num_labels=3)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    ids = torch.randint(1, 100, (2, 5), generator=torch.Generator().manual_seed(1))
    return model, (ids, torch.ones_like(ids))
'''


def test_bert_served_at_two_sequence_lengths(home: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("onnxscript")
    httpclient = pytest.importorskip("tritonclient.http")
    from lockgate.cli.main import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "tiny_bert_factory.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    main(["--home", str(home), "register", "--from", "tiny_bert_factory:build",
          "--name", "bert", "--dynamic", "input_ids:0=batch,1=sequence",
          "--dynamic", '{"attention_mask": {"0": "batch", "1": "sequence"}}', "--json"])
    registered = json.loads(capsys.readouterr().out)
    parity = registered["parity"]
    assert parity["passed"] is True
    lengths = set(parity["dims"]["sequence"])
    assert len(lengths) >= 3, parity["dims"]  # parity ran at several sequence lengths
    assert len(set(parity["dims"]["batch"])) >= 3
    with Lockgate.open(home) as lg:
        proto = onnx.load_from_string(lg.model_bytes(lg.get("bert@1")))
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*proto.graph.input, *proto.graph.output]}
    assert shapes == {"input_ids": ["batch", "sequence"],
                      "attention_mask": ["batch", "sequence"], "output": ["batch", 3]}

    model, _ = importlib.import_module("tiny_bert_factory").build()
    rng = np.random.default_rng(5)
    with lockgate_server(home, "bert@1") as (host, port):
        client = httpclient.InferenceServerClient(url=f"{host}:{port}")
        try:
            assert client.is_model_ready("bert")
            for batch, length in ((2, 7), (3, 13)):
                ids = rng.integers(1, 100, (batch, length), dtype=np.int64)
                mask = np.ones_like(ids)
                mask[0, length - 3:] = 0  # padding on one row
                inputs = []
                for name, array in (("input_ids", ids), ("attention_mask", mask)):
                    tensor = httpclient.InferInput(name, list(array.shape), "INT64")
                    tensor.set_data_from_numpy(array, binary_data=True)
                    inputs.append(tensor)
                result = client.infer("bert", inputs, outputs=[
                    httpclient.InferRequestedOutput("output", binary_data=True)])
                logits = result.as_numpy("output")
                with torch.no_grad():
                    want = model(input_ids=torch.from_numpy(ids),
                                 attention_mask=torch.from_numpy(mask)).logits.numpy()
                assert logits.shape == (batch, 3)
                np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)
        finally:
            client.close()
