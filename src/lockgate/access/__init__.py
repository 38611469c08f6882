"""Who may do what in a shared registry: users, roles, grants and API tokens
(:mod:`~lockgate.access.identity`)."""
