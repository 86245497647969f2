"""The Kiln training service.

Its parts are listed in ``kiln_training.service``, which only entry points import, so importing
any submodule loads neither the API nor Celery.
"""
