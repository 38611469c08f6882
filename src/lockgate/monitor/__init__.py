"""Monitoring served versions: the features of a model's tensors, reference profiles, drift
statistics, the server's live capture, one window's evaluation
(:mod:`~lockgate.monitor.window`), and the monitor runs with their retraining triggers and
rollbacks (:mod:`~lockgate.monitor.service`)."""
