"""The facade (:class:`lockgate.api.facade.Lockgate`) and the services it composes, one module
each; :mod:`lockgate.api.protocol` holds the registry operations a home and a registry client
both offer."""
