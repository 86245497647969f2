"""The Kiln registry service.

Its parts are listed in ``kiln_registry.service``, which only entry points import, so importing
any submodule loads neither the API nor Celery.
"""
