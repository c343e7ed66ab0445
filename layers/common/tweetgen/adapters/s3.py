"""Model artifacts in S3 through boto3: read one as a stream, upload one, keep a validated copy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from tweetgen.adapters import aws
from tweetgen.domain.artifact import ReadableStream
from tweetgen.domain.model_key import CopyRefused, ObjectVersion

__all__ = ["DIGEST_METADATA", "ArtifactStore", "StoredArtifact"]

# The user metadata entry (x-amz-meta-sha256) of a validated copy: the SHA-256 of its bytes.
DIGEST_METADATA = "sha256"


@dataclass(frozen=True)
class StoredArtifact:
    """Where an upload landed."""

    bucket: str
    key: str
    etag: str
    version_id: str | None

    @property
    def s3_uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class ArtifactStore:
    """The artifact bucket: the validator reads objects as a stream and never stores them."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    def from_environment(cls) -> ArtifactStore:
        return cls(aws.client("s3"))

    def open_version(self, bucket: str, key: str) -> tuple[ReadableStream, ObjectVersion]:
        """The object's body, read as it downloads (never seeked, never held whole), and which
        version of the object that body is."""
        response = self._client.get_object(Bucket=bucket, Key=key)
        version = ObjectVersion(
            bucket=bucket,
            key=key,
            version_id=response.get("VersionId"),
            etag=str(response.get("ETag", "")).strip('"'),
        )
        return response["Body"], version

    def pinned_digest(self, bucket: str, key: str) -> str | None:
        """The SHA-256 recorded on the validated copy at ``key`` ('' if it has none), or None
        when there is no such copy."""
        try:
            head = self._client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return str((head.get("Metadata") or {}).get(DIGEST_METADATA, ""))

    def pin(self, source: ObjectVersion, key: str, digest: str) -> None:
        """Copy exactly the version that was read to ``key`` (same bucket), its digest beside it,
        only if nothing is at ``key`` yet.

        By version id where the bucket keeps versions, and always only while the source has the
        ETag that was read: a version id of "null" (written while versioning was suspended) is
        replaced in place by the next write. ``CopyRefused`` when either condition fails.
        """
        copy_source = {"Bucket": source.bucket, "Key": source.key}
        if source.version_id and source.version_id != "null":
            copy_source["VersionId"] = source.version_id
        try:
            self._client.copy_object(
                Bucket=source.bucket,
                Key=key,
                CopySource=copy_source,
                CopySourceIfMatch=f'"{source.etag}"',
                IfNoneMatch="*",
                Metadata={DIGEST_METADATA: digest},
                MetadataDirective="REPLACE",
                TaggingDirective="REPLACE",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"412", "PreconditionFailed"}:
                raise CopyRefused(f"s3://{source.bucket}/{source.key} to {key}") from None
            raise

    def upload(self, path: Path, bucket: str, key: str) -> StoredArtifact:
        """Upload a file (multipart when large) and say which object version it became."""
        self._client.upload_file(str(path), bucket, key)
        head = self._client.head_object(Bucket=bucket, Key=key)
        return StoredArtifact(
            bucket=bucket,
            key=key,
            etag=str(head.get("ETag", "")).strip('"'),
            version_id=head.get("VersionId"),
        )
