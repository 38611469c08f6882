"""Supply chain: what a version is made of, who signed it, and what is known to be wrong with it.

``bom`` builds and validates the CycloneDX BOM from ``components`` (libraries, native pieces,
datasets, environment) and ``lockfiles`` (hashes); ``modelcard`` is the card inside the BOM and
its markdown; ``licenses`` reads and judges licenses; ``signing`` signs the version folder;
``vulns`` matches the distributions against offline OSV data."""
