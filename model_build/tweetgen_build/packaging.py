"""Export and packaging: a SavedModel with in-graph generation, in the SageMaker TFS layout.

``model.tar.gz`` holds ``model/1/`` (the SavedModel), ``code/inference.py``,
``code/requirements.txt``, ``code/tokenizer.json`` and ``metadata.json``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import shutil
import tarfile
from pathlib import Path
from typing import Any

import tensorflow as tf
from tokenizers import Tokenizer
from tweetgen.domain.artifact import ArtifactMetadata

MODEL_NAME = "model"
MODEL_VERSION = 1
TOKENIZER_PATH = "code/tokenizer.json"
INFERENCE_SOURCE = Path(__file__).resolve().parent / "serving" / "inference.py"


def export_saved_model(serving: tf.Module, directory: Path) -> None:
    """Write the SavedModel with its three signatures (generation is ``serving_default``)."""
    tf.saved_model.save(
        serving,
        str(directory),
        signatures={
            "serving_default": serving.generate,
            "score": serving.score,
            "next_token_logits": serving.next_token_logits,
        },
    )


def stage_artifact(
    serving: tf.Module, tokenizer: Tokenizer, metadata: ArtifactMetadata, stage: Path
) -> Path:
    """Write the artifact tree (what goes into model.tar.gz) into ``stage``."""
    stage.mkdir(parents=True, exist_ok=True)
    export_saved_model(serving, stage / metadata.model_name / str(metadata.model_version))
    code = stage / "code"
    code.mkdir(exist_ok=True)
    shutil.copyfile(INFERENCE_SOURCE, code / "inference.py")
    version = importlib.metadata.version("tokenizers")
    (code / "requirements.txt").write_text(f"tokenizers=={version}\n", encoding="utf-8")
    (stage / metadata.tokenizer.path).write_text(tokenizer.to_str(), encoding="utf-8")
    (stage / "metadata.json").write_text(
        metadata.model_dump_json(indent=2) + "\n", encoding="utf-8"
    )
    return stage


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def pack_artifact(stage: Path, archive: Path) -> Path:
    """Tar and gzip the tree reproducibly: sorted members, no owners, no timestamps."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    members = sorted(p for p in stage.rglob("*") if p.is_file())
    with (
        open(archive, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in members:
            tar.add(path, arcname=path.relative_to(stage).as_posix(), filter=_normalise)
    return archive


def unpack_artifact(archive: Path, dest: Path) -> Path:
    """Extract an artifact safely (no links, no paths outside ``dest``)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, mode="r:gz") as tar:
        tar.extractall(dest, filter="data")
    return dest


def read_metadata(archive: Path) -> ArtifactMetadata:
    with tarfile.open(archive, mode="r:gz") as tar:
        for member in tar:
            if member.name.lstrip("./") == "metadata.json" and member.isfile():
                handle = tar.extractfile(member)
                if handle is not None:
                    return ArtifactMetadata.model_validate_json(handle.read())
    raise FileNotFoundError(f"{archive}: no metadata.json in the artifact")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_served_model(root: Path) -> tuple[Any, ArtifactMetadata, Tokenizer]:
    """Load an unpacked artifact as a server would: the SavedModel plus tokenizer and metadata."""
    metadata = ArtifactMetadata.model_validate_json((root / "metadata.json").read_bytes())
    loaded = tf.saved_model.load(str(root / metadata.model_name / str(metadata.model_version)))
    tokenizer = Tokenizer.from_file(str(root / metadata.tokenizer.path))
    return loaded, metadata, tokenizer


__all__ = [
    "MODEL_NAME",
    "MODEL_VERSION",
    "TOKENIZER_PATH",
    "export_saved_model",
    "file_sha256",
    "load_served_model",
    "pack_artifact",
    "read_metadata",
    "stage_artifact",
    "unpack_artifact",
]
