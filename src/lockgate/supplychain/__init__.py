"""Supply chain: what a version is made of, who signed it, and what is known to be wrong with it."""
