"""Model artifacts in S3 through boto3: read one as a stream, upload one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tweetgen.adapters import aws
from tweetgen.domain.artifact import ReadableStream

__all__ = ["ArtifactStore", "StoredArtifact"]


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

    def open(self, bucket: str, key: str) -> ReadableStream:
        """The object's body, read as it downloads (never seeked, never held whole)."""
        body: ReadableStream = self._client.get_object(Bucket=bucket, Key=key)["Body"]
        return body

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
