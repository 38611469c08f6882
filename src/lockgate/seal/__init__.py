"""A version's seal: its signed folder, written at registration and verified before anything
loads it (:mod:`~lockgate.seal.folder`); the evidence pack an auditor checks without lockgate
(:mod:`~lockgate.seal.evidence`); and the check and collection of a home's stored state,
``lockgate fsck`` and ``lockgate gc`` (:mod:`~lockgate.seal.integrity`)."""
