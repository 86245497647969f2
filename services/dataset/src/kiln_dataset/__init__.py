"""The Kiln dataset service.

Its parts are listed in ``kiln_dataset.service``, which only entry points import, so importing
any submodule loads neither the API nor Celery.
"""
