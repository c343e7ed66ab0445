"""Where a model artifact lives in S3 and the names it carries: variant and version rules.

``models/<variant>/<version>/model.tar.gz``: the rollout starts from such a key. Kept apart
from :mod:`tweetgen.domain.artifact` (the validator, with its pydantic metadata schema) so the
rollout functions that only read keys import neither; that module exports these names too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "ARTIFACT_VERSION_PATTERN",
    "MODEL_FILE_NAME",
    "MODEL_KEY_PREFIX",
    "PINNED_KEY_PREFIX",
    "VARIANT_NAME_MAX_LENGTH",
    "VARIANT_NAME_PATTERN",
    "CopyRefused",
    "ModelKey",
    "ObjectVersion",
    "is_artifact_version",
    "is_variant_name",
    "parse_model_key",
]

MODEL_KEY_PREFIX = "models"
# Where the rollout keeps the bytes it validated, one copy per variant and version, written
# once: the SageMaker models load these, so an upload under a version that is already out
# cannot change what its instances load (the bucket policy refuses other writers there).
PINNED_KEY_PREFIX = "validated"
MODEL_FILE_NAME = "model.tar.gz"

# SageMaker's production variant name rule (the pattern alone allows long runs of hyphens).
VARIANT_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
VARIANT_NAME_MAX_LENGTH = 63
ARTIFACT_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"

_VARIANT_RULE = "1 to 63 letters, digits and hyphens, starting and ending with a letter or digit"
_VERSION_RULE = "1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"


def is_variant_name(value: str) -> bool:
    """Whether ``value`` is a valid production variant name (also an S3 key segment)."""
    return (
        len(value) <= VARIANT_NAME_MAX_LENGTH
        and re.fullmatch(VARIANT_NAME_PATTERN, value) is not None
    )


def is_artifact_version(value: str) -> bool:
    """Whether ``value`` is a valid artifact version (also an S3 key segment)."""
    return re.fullmatch(ARTIFACT_VERSION_PATTERN, value) is not None


# --------------------------------------------------------------------------- S3 key


@dataclass(frozen=True)
class ModelKey:
    """Where an artifact lives in the artifact bucket: ``models/<variant>/<version>/model.tar.gz``."""

    variant: str
    version: str

    def __post_init__(self) -> None:
        if not is_variant_name(self.variant):
            raise ValueError(f"variant {self.variant!r} is not valid: use {_VARIANT_RULE}")
        if not is_artifact_version(self.version):
            raise ValueError(f"version {self.version!r} is not valid: use {_VERSION_RULE}")

    @property
    def key(self) -> str:
        """The S3 object key."""
        return f"{MODEL_KEY_PREFIX}/{self.variant}/{self.version}/{MODEL_FILE_NAME}"

    @property
    def pinned_key(self) -> str:
        """The key of the copy that the rollout validated and the version's models load."""
        return f"{PINNED_KEY_PREFIX}/{self.variant}/{self.version}/{MODEL_FILE_NAME}"


@dataclass(frozen=True)
class ObjectVersion:
    """The version of an S3 object that was read, so that a copy takes the same bytes."""

    bucket: str
    key: str
    version_id: str | None  # None in a bucket that keeps no versions
    etag: str


class CopyRefused(Exception):
    """A copy's condition did not hold: its source is no longer the version that was read, or
    something is at its destination already."""


def parse_model_key(key: str) -> ModelKey:
    """Split a decoded S3 key into variant and version; ``ValueError`` says what does not fit.

    S3 event notifications carry keys URL-encoded: callers pass
    ``urllib.parse.unquote_plus(key)``, never the raw notification value.
    """
    shape = f"{MODEL_KEY_PREFIX}/<variant>/<version>/{MODEL_FILE_NAME}"
    parts = key.split("/")
    reason = None
    if len(parts) != 4:
        reason = f"it has {len(parts)} '/'-separated parts, not 4"
    elif parts[0] != MODEL_KEY_PREFIX:
        reason = f"it does not start with '{MODEL_KEY_PREFIX}/'"
    elif parts[3] != MODEL_FILE_NAME:
        reason = f"the file name is {parts[3]!r}, not '{MODEL_FILE_NAME}'"
    elif not is_variant_name(parts[1]):
        reason = f"variant {parts[1]!r} is not {_VARIANT_RULE}"
    elif not is_artifact_version(parts[2]):
        reason = f"version {parts[2]!r} is not {_VERSION_RULE}"
    if reason is None:
        return ModelKey(variant=parts[1], version=parts[2])
    if "%" in key or "+" in key:
        reason += "; it looks URL-encoded: decode it with urllib.parse.unquote_plus first"
    raise ValueError(f"S3 key {key!r} does not follow {shape}: {reason}")
