"""Storage: content-addressed artifacts and metadata."""
