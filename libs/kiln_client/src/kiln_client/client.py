"""``AsyncKiln`` and ``Kiln``: the client, async and sync, over one httpx connection pool."""

from __future__ import annotations

from dataclasses import replace
from types import TracebackType
from typing import Self

import httpx

from kiln_client._sync import Portal, SyncResource, blocking, iterating
from kiln_client.annotation import Annotation
from kiln_client.datasets import Datasets
from kiln_client.registry import Registry
from kiln_client.serving import Serving
from kiln_client.settings import ClientSettings
from kiln_client.training import Training
from kiln_client.transport import Transport


class AsyncKiln:
    """Kiln's APIs through its gateway. Without arguments it reads ``KILN_URL`` and
    ``KILN_TOKEN``; ``transport`` lets it call an in-process gateway (an ASGI app), ``http``
    brings an httpx client of the caller's (its base URL the gateway's)::

        async with AsyncKiln() as kiln:
            ds = await kiln.datasets.create("cats")
            await kiln.datasets.upload_folder(ds["id"], "photos/", labels_from_folders=True)
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        settings: ClientSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http: httpx.AsyncClient | None = None,
        _shared: Transport | None = None,
    ) -> None:
        if _shared is not None:
            self.transport = _shared
        else:
            base = settings or ClientSettings.from_env()
            if url is not None or token is not None:
                base = replace(
                    base,
                    url=(url or base.url).rstrip("/"),
                    token=token if token is not None else base.token,
                )
            self.transport = Transport(base, http=http, transport=transport)
        self.datasets = Datasets(self.transport)
        self.annotation = Annotation(self.transport)
        self.training = Training(self.transport)
        self.registry = Registry(self.transport)
        self.serving = Serving(self.transport)

    def with_token(self, token: str | None) -> AsyncKiln:
        """A client acting as someone else over the same connections (close the original)."""
        return AsyncKiln(_shared=self.transport.with_token(token))

    @property
    def url(self) -> str:
        return self.transport.settings.url

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class SyncDatasets(SyncResource[Datasets]):
    create = blocking(Datasets.create)
    get = blocking(Datasets.get)
    list = blocking(Datasets.list)
    versions = blocking(Datasets.versions)
    version = blocking(Datasets.version)
    diff = blocking(Datasets.diff)
    items = blocking(Datasets.items)
    export = blocking(Datasets.export)
    open_draft = blocking(Datasets.open_draft)
    commit = blocking(Datasets.commit)
    add_files = blocking(Datasets.add_files)
    upload = blocking(Datasets.upload)
    upload_folder = blocking(Datasets.upload_folder)
    import_archive = blocking(Datasets.import_archive)
    job = blocking(Datasets.job)
    wait_job = blocking(Datasets.wait_job)


class SyncAnnotation(SyncResource[Annotation]):
    create_project = blocking(Annotation.create_project)
    project = blocking(Annotation.project)
    projects = blocking(Annotation.projects)
    tasks = blocking(Annotation.tasks)
    task = blocking(Annotation.task)
    lease = blocking(Annotation.lease)
    submit = blocking(Annotation.submit)
    review = blocking(Annotation.review)


class SyncTraining(SyncResource[Training]):
    templates = blocking(Training.templates)
    template = blocking(Training.template)
    ensure_team = blocking(Training.ensure_team)
    submit = blocking(Training.submit)
    create_trigger = blocking(Training.create_trigger)
    get = blocking(Training.get)
    list = blocking(Training.list)
    pause = blocking(Training.pause)
    resume = blocking(Training.resume)
    cancel = blocking(Training.cancel)
    metrics = blocking(Training.metrics)
    evaluation = blocking(Training.evaluation)
    watch = iterating(Training.watch)
    wait = blocking(Training.wait)


class SyncRegistry(SyncResource[Registry]):
    create_model = blocking(Registry.create_model)
    models = blocking(Registry.models)
    model = blocking(Registry.model)
    versions = blocking(Registry.versions)
    version = blocking(Registry.version)
    aliases = blocking(Registry.aliases)
    promote = blocking(Registry.promote)
    policy = blocking(Registry.policy)
    set_policy = blocking(Registry.set_policy)
    download = blocking(Registry.download)
    import_model = blocking(Registry.import_model)


class SyncServing(SyncResource[Serving]):
    create_endpoint = blocking(Serving.create_endpoint)
    endpoints = blocking(Serving.endpoints)
    endpoint = blocking(Serving.endpoint)
    update_endpoint = blocking(Serving.update_endpoint)
    delete_endpoint = blocking(Serving.delete_endpoint)
    predict = blocking(Serving.predict)
    predict_many = blocking(Serving.predict_many)


class Kiln:
    """The synchronous client: the same resources and methods as :class:`AsyncKiln`, each
    call blocking until its answer::

        with Kiln() as kiln:
            job = kiln.training.submit("image-cnn", dataset_id, team="vision")
            for event in kiln.training.watch(job["id"]):
                print(event)
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        settings: ClientSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        _async: AsyncKiln | None = None,
        _portal: Portal | None = None,
    ) -> None:
        self._owner = _portal is None
        self._portal = _portal or Portal()
        self.aio = _async or AsyncKiln(url, token, settings=settings, transport=transport)
        self.datasets = SyncDatasets(self.aio.datasets, self._portal)
        self.annotation = SyncAnnotation(self.aio.annotation, self._portal)
        self.training = SyncTraining(self.aio.training, self._portal)
        self.registry = SyncRegistry(self.aio.registry, self._portal)
        self.serving = SyncServing(self.aio.serving, self._portal)

    def with_token(self, token: str | None) -> Kiln:
        return Kiln(_async=self.aio.with_token(token), _portal=self._portal)

    @property
    def url(self) -> str:
        return self.aio.url

    def close(self) -> None:
        if self._owner:
            self._portal.call(self.aio.aclose())
            self._portal.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
