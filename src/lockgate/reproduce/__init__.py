"""Reproduction: rebuild a version from its recorded recipe and compare the result with what
was registered (:mod:`~lockgate.reproduce.recipe`); the child side runs in the rebuilt
environment (:mod:`~lockgate.reproduce.rebuild`)."""
