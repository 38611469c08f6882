from registry_server import registry  # noqa: F401  (fixture)
