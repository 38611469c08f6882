"""The registry HTTP API (``lockgate server``) and its upload bundles.

::

    from lockgate.registry import create_registry_app
    app = create_registry_app(Lockgate.open())     # serve with uvicorn
"""

from lockgate.registry.routes import OPERATIONS, create_registry_app, openapi_document

__all__ = ["OPERATIONS", "create_registry_app", "openapi_document"]
