"""Parity with the source framework: whether ONNX Runtime's outputs agree with it within
tolerance (:mod:`~lockgate.parity.check`), and how their inference speeds compare on this
machine (:mod:`~lockgate.parity.benchmark`)."""
