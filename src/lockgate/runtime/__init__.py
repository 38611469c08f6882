"""ONNX Runtime behind one small class (:mod:`~lockgate.runtime.predictor`), and the facts read
off an ONNX model: signature, opset, IR version (:mod:`~lockgate.runtime.onnxmeta`)."""
