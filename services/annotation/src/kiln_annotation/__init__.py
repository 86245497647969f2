"""The Kiln annotation service.

Its parts are listed in ``kiln_annotation.service``, which only entry points import, so importing
any submodule loads neither the API nor Celery.
"""
