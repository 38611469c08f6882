"""The registry HTTP API (``lockgate server``) and its upload bundles.

::

    from lockgate.registry import create_registry_app
    app = create_registry_app(Lockgate.open())     # serve with uvicorn

- :mod:`~lockgate.registry.operations`: the table of every operation, and :func:`invoke`
- :mod:`~lockgate.registry.handlers`: what each operation does, over the facade
- :mod:`~lockgate.registry.call`, :mod:`~lockgate.registry.decoding`: a request, decoded
- :mod:`~lockgate.registry.routes`: the Starlette app, its refusals and uploads
- :mod:`~lockgate.registry.openapi`, :mod:`~lockgate.registry.schemas`: the OpenAPI document
- :mod:`~lockgate.registry.bundle`, :mod:`~lockgate.registry.guard`,
  :mod:`~lockgate.registry.client`: uploads, browser refusals, the remote client
"""

from lockgate.registry.openapi import openapi_document
from lockgate.registry.operations import OPERATIONS
from lockgate.registry.routes import create_registry_app

__all__ = ["OPERATIONS", "create_registry_app", "openapi_document"]
