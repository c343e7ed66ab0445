"""The rollout's first task: an uploaded key and its object checked before anything is deployed.

The bytes that pass are copied once to the variant and version's validated key
(``ModelKey.pinned_key``), and the version's SageMaker model loads that copy: uploading other
bytes under the same key later changes nothing that SageMaker loads, and such an upload is
refused with the reason.

Apart from :mod:`tweetgen.services.rollout` because the artifact validator brings pydantic and
the metadata schema, which only this task needs.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol
from urllib.parse import unquote_plus

from tweetgen.domain.artifact import (
    MODEL_FILE_NAME,
    MODEL_KEY_PREFIX,
    ArtifactReport,
    ReadableStream,
    parse_model_key,
    validate_artifact,
)
from tweetgen.domain.model_key import CopyRefused, ModelKey, ObjectVersion
from tweetgen.domain.rollout import model_name
from tweetgen.services.rollout import ArtifactRejected, InvalidModelKey, RolloutSettings

__all__ = ["ArtifactSource", "ModelRegistry", "validate_upload"]


class ArtifactSource(Protocol):
    def open_version(self, bucket: str, key: str) -> tuple[ReadableStream, ObjectVersion]: ...

    def pinned_digest(self, bucket: str, key: str) -> str | None: ...

    def pin(self, source: ObjectVersion, key: str, digest: str) -> None: ...


class ModelRegistry(Protocol):
    def model_data_url(self, name: str) -> str | None: ...


class _Digesting:
    """A stream that hashes what is read through it."""

    def __init__(self, stream: ReadableStream) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        self._hash.update(data)
        return data

    def hexdigest(self) -> str:
        """The SHA-256 of the whole stream: what the reader left unread is read first."""
        while self.read(1 << 20):
            pass
        return self._hash.hexdigest()


def _rejection(key: str, report: ArtifactReport) -> str:
    count = len(report.problems)
    listed = "; ".join(report.problems)
    return (
        f"s3 object {key} is not a valid model artifact ({count} problem"
        f"{'s' if count != 1 else ''}): {listed}. Nothing was deployed; fix the artifact "
        "(tweetgen validate-artifact PATH shows the same report) and upload it again"
    )


def _pin(
    bucket: str,
    model_key: ModelKey,
    name: str,
    read: ObjectVersion,
    digest: str,
    *,
    source: ArtifactSource,
    models: ModelRegistry,
) -> None:
    """Make sure the version's validated copy holds ``digest``'s bytes, copying ``read`` there
    if there is no copy yet; ``ArtifactRejected`` where the version is bound to other bytes."""
    key, pinned_key = model_key.key, model_key.pinned_key
    where = f"s3://{bucket}/{pinned_key}"
    pinned = source.pinned_digest(bucket, pinned_key)
    if pinned is None:
        loaded = models.model_data_url(name)
        if loaded is not None:
            # A model made before rollouts kept copies (or whose copy is gone) loads whatever
            # is at its URL now: binding other bytes to it here would reach its instances.
            raise ArtifactRejected(
                f"s3 object {key} is version {model_key.version} of {model_key.variant}, whose"
                f" SageMaker model {name} exists and loads {loaded}, not a validated copy at"
                f" {where}. Nothing was deployed; upload these bytes under a new version"
            )
        try:
            source.pin(read, pinned_key, digest)
            return
        except CopyRefused:
            # Another rollout of this version copied first, or the upload was replaced.
            pinned = source.pinned_digest(bucket, pinned_key)
            if pinned is None:
                raise ArtifactRejected(
                    f"s3 object {key} was replaced while it was validated (the bucket keeps no"
                    " versions to copy the one validated from). Nothing was deployed; the newer"
                    " upload starts a rollout of its own"
                ) from None
    if pinned != digest:
        raise ArtifactRejected(
            f"s3 object {key} is version {model_key.version} of {model_key.variant}, which was"
            f" validated before with other bytes (sha256 {pinned[:12] or 'unrecorded'}, this"
            f" upload {digest[:12]}): the version stays bound to the copy validated then"
            f" ({where}), which SageMaker model {name} is created from. Nothing was deployed;"
            " upload these bytes under a new version"
        )


def validate_upload(
    bucket: str,
    raw_key: str,
    *,
    source: ArtifactSource,
    models: ModelRegistry,
    settings: RolloutSettings,
) -> dict[str, Any]:
    """Check an uploaded key and stream its object through the artifact validator.

    ``raw_key`` is the key as S3 notifications carry it (URL-encoded). The version read is
    copied to its validated key unless a copy of the same bytes (by SHA-256) is there already;
    a copy of other bytes, or a SageMaker model of the version that loads something else,
    refuses the upload. Returns what the rest of the rollout needs: where
    the upload is (``s3_uri``) and the copy the model loads (``model_data_url``), the bytes'
    SHA-256, the variant and version, the SageMaker model name and the artifact's metadata.
    """
    key = unquote_plus(raw_key)
    try:
        model_key = parse_model_key(key)
    except ValueError as exc:
        raise InvalidModelKey(f"{exc}. Nothing was deployed.") from None
    if model_key.variant not in settings.variants:
        raise InvalidModelKey(
            f"S3 key {key!r} names variant {model_key.variant!r}, but endpoint "
            f"{settings.endpoint_name} has variants {', '.join(settings.variants)}; upload to "
            f"{MODEL_KEY_PREFIX}/<one of them>/<version>/{MODEL_FILE_NAME}. Nothing was deployed."
        )
    body, read = source.open_version(bucket, key)
    stream = _Digesting(body)
    # XLA is allowed where new variants run on GPUs (an existing variant keeps the instance type
    # it was created with, normally the same template parameter).
    report = validate_artifact(
        stream,
        expected_variant=model_key.variant,
        allow_xla=settings.new_variant.compiles_xla,
    )
    if not report.ok or report.metadata is None:
        raise ArtifactRejected(_rejection(key, report))
    metadata = report.metadata
    digest = stream.hexdigest()
    name = model_name(settings.endpoint_name, model_key.variant, model_key.version)
    _pin(bucket, model_key, name, read, digest, source=source, models=models)
    return {
        "bucket": bucket,
        "key": key,
        "s3_uri": f"s3://{bucket}/{key}",
        "model_data_url": f"s3://{bucket}/{model_key.pinned_key}",
        "sha256": digest,
        "variant": model_key.variant,
        "version": model_key.version,
        "kind": metadata.kind,
        "model_name": name,
        "metadata": metadata.model_dump(mode="json"),
        "members": report.members,
        "total_bytes": report.total_bytes,
    }
