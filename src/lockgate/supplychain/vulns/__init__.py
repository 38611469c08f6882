"""Known vulnerabilities, offline: OSV records (``records``), their severity (``severity``),
snapshots of osv.dev's PyPI data (``snapshots``), matching installed distributions against them
(``matching``) and the vulnerability policy's verdict on each finding (``policy``)."""
