"""The rollout's first task: an uploaded key and its object checked before anything is deployed.

Apart from :mod:`tweetgen.services.rollout` because the artifact validator brings pydantic and
the metadata schema, which only this task needs.
"""

from __future__ import annotations

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
from tweetgen.domain.rollout import model_name
from tweetgen.services.rollout import ArtifactRejected, InvalidModelKey, RolloutSettings

__all__ = ["ArtifactSource", "validate_upload"]


class ArtifactSource(Protocol):
    def open(self, bucket: str, key: str) -> ReadableStream: ...


def _rejection(key: str, report: ArtifactReport) -> str:
    count = len(report.problems)
    listed = "; ".join(report.problems)
    return (
        f"s3 object {key} is not a valid model artifact ({count} problem"
        f"{'s' if count != 1 else ''}): {listed}. Nothing was deployed; fix the artifact "
        "(tweetgen validate-artifact PATH shows the same report) and upload it again"
    )


def validate_upload(
    bucket: str, raw_key: str, *, source: ArtifactSource, settings: RolloutSettings
) -> dict[str, Any]:
    """Check an uploaded key and stream its object through the artifact validator.

    ``raw_key`` is the key as S3 notifications carry it (URL-encoded). Returns what the rest
    of the rollout needs: where the artifact is, its variant and version, the SageMaker
    model name and the artifact's metadata.
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
    # XLA is allowed where new variants run on GPUs (an existing variant keeps the instance type
    # it was created with, normally the same template parameter).
    report = validate_artifact(
        source.open(bucket, key),
        expected_variant=model_key.variant,
        allow_xla=settings.new_variant.compiles_xla,
    )
    if not report.ok or report.metadata is None:
        raise ArtifactRejected(_rejection(key, report))
    metadata = report.metadata
    return {
        "bucket": bucket,
        "key": key,
        "s3_uri": f"s3://{bucket}/{key}",
        "variant": model_key.variant,
        "version": model_key.version,
        "kind": metadata.kind,
        "model_name": model_name(settings.endpoint_name, model_key.variant, model_key.version),
        "metadata": metadata.model_dump(mode="json"),
        "members": report.members,
        "total_bytes": report.total_bytes,
    }
