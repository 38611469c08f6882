"""The environment a version was registered in (:mod:`~lockgate.environment.fingerprint`), and
what in a serving environment differs from it in ways that matter
(:mod:`~lockgate.environment.drift`)."""
