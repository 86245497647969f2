"""The Kiln serving service.

Its parts are listed in ``kiln_serving.service``, which only entry points import, so importing
any submodule loads neither the API nor Celery.
"""
