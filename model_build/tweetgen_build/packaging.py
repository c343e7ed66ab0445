"""Export and packaging: a SavedModel with in-graph generation, in the SageMaker TFS layout.

``model.tar.gz`` holds ``model/1/`` (the SavedModel), ``code/inference.py``,
``code/requirements.txt``, ``code/tokenizer.json`` and ``metadata.json``.

TensorFlow is imported inside the functions that use it: unpacking an artifact and reading its
metadata and tokenizer (what ``tweetgen evaluate`` checks first) need none.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tokenizers import Tokenizer
from tweetgen.domain.artifact import ArtifactMetadata

from tweetgen_build.errors import ServingMismatch, error_line, printable

if TYPE_CHECKING:
    import tensorflow as tf

MODEL_NAME = "model"
MODEL_VERSION = 1
TOKENIZER_PATH = "code/tokenizer.json"
INFERENCE_SOURCE = Path(__file__).resolve().parent / "serving" / "inference.py"


def export_saved_model(serving: tf.Module, directory: Path) -> None:
    """Write the SavedModel with its three signatures (generation is ``serving_default``),
    of the serving module's ``for_export()`` where it has one."""
    import tensorflow as tf

    for_export = getattr(serving, "for_export", None)
    if for_export is not None:
        serving = for_export()
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
            # The archive's own metadata.json (written "./metadata.json" or "metadata.json"),
            # never a member whose name only ends like it ("../metadata.json").
            if member.name.removeprefix("./") == "metadata.json" and member.isfile():
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


class SessionSavedModel:
    """A SavedModel loaded as TensorFlow Serving loads it, not as ``tf.saved_model.load`` does.

    The model server does not rebuild the exported Python objects: it imports the MetaGraph into
    a session, runs its restore op on ``variables/`` and then feeds and fetches each signature's
    tensors by name. A SavedModel whose signatures read a variable that the restore op does not
    fill loads either way, but answers only ``tf.saved_model.load``: loaded this way, it fails
    ("Could not find variable ...") as it would on SageMaker. The local endpoint serves every
    model this way, and ``tweetgen train`` checks each export with it.
    """

    def __init__(
        self,
        saved_model_dir: Path,
        tags: Sequence[str] = ("serve",),
        *,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
    ) -> None:
        import tensorflow as tf
        from tensorflow.python.util import deprecation

        # The model server's flags --tensorflow_intra_op_parallelism and
        # --tensorflow_inter_op_parallelism (the stack's InferenceIntraOpThreads and
        # InferenceInterOpThreads); 0 lets TensorFlow size a pool by the cores, and an inter-op
        # setting of -1 runs a request's operations on the thread that calls ``run``. A process
        # keeps the pools of its first session or eager context for all the others: one pool
        # size per process, and none once eager TensorFlow has run (-1 is each session's own).
        config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=intra_op_threads,
            inter_op_parallelism_threads=inter_op_threads,
        )
        graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=graph, config=config)
        # The TF1 loader is deprecated for Python programs, which should rebuild the objects
        # with tf.saved_model.load; here it stands for the model server's own loader.
        with graph.as_default(), deprecation.silence():
            meta = tf.compat.v1.saved_model.loader.load(
                self._session, list(tags), str(saved_model_dir)
            )
        # "__saved_model_init_op" names the restore's init op, not a signature to serve.
        self._signatures = {
            name: signature
            for name, signature in meta.signature_def.items()
            if not name.startswith("__")
        }
        self.signatures: dict[str, dict[str, Any]] = {
            name: {
                key: tf.TensorSpec(tf.TensorShape(info.tensor_shape), tf.as_dtype(info.dtype), key)
                for key, info in signature.inputs.items()
            }
            for name, signature in self._signatures.items()
        }

    def run(self, name: str, arrays: dict[str, Any]) -> dict[str, Any]:
        """Feed the signature's inputs by tensor name; its outputs by key."""
        signature = self._signatures[name]
        feed = {signature.inputs[key].name: value for key, value in arrays.items()}
        fetch = {key: info.name for key, info in signature.outputs.items()}
        return dict(self._session.run(fetch, feed))


def check_served_generation(
    saved_model_dir: Path, prompt: list[int], *, loaded: Any = None
) -> list[int]:
    """Greedy tokens for ``prompt`` from the SavedModel as TensorFlow Serving runs it.

    Raises :class:`ServingMismatch` when the model server could not run the export, or would
    answer differently from ``tf.saved_model.load`` (what training and evaluation use).
    ``loaded``: the same SavedModel already loaded with ``tf.saved_model.load`` (else loaded
    here).
    """
    import tensorflow as tf

    ids = np.array([prompt], np.int32)
    arrays = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "max_new_tokens": np.int32(8),
        "temperature": np.float32(0.0),
        "top_k": np.int32(1),
        "seed": np.int64(0),
    }
    try:
        served = SessionSavedModel(saved_model_dir).run("serving_default", arrays)
    except tf.errors.OpError as exc:
        raise ServingMismatch(
            f"the SavedModel in {saved_model_dir} does not run as TensorFlow Serving loads it"
            f" (a session fed by tensor name): {error_line(exc)}"
        ) from None
    if loaded is None:
        loaded = tf.saved_model.load(str(saved_model_dir))
    signature = loaded.signatures["serving_default"]
    expected = signature(**{key: tf.constant(value) for key, value in arrays.items()})
    tokens = [int(t) for t in served["generated_ids"][0][: int(served["lengths"][0])]]
    reloaded = expected["generated_ids"].numpy()[0][: int(expected["lengths"][0])].tolist()
    if tokens != reloaded:
        raise ServingMismatch(
            f"the SavedModel in {saved_model_dir} generates {tokens} as TensorFlow Serving loads"
            f" it but {reloaded} through tf.saved_model.load"
        )
    return tokens


def read_unpacked(root: Path) -> tuple[ArtifactMetadata, Tokenizer]:
    """The metadata and tokenizer of an unpacked artifact (no TensorFlow needed).

    Raises ``OSError`` for a missing file and ``ValueError`` for metadata or a tokenizer that
    does not parse; the tokenizers library's own bare ``Exception`` never gets out.
    """
    metadata = ArtifactMetadata.model_validate_json((root / "metadata.json").read_bytes())
    try:
        tokenizer = Tokenizer.from_file(str(root / metadata.tokenizer.path))
    except Exception as exc:
        raise ValueError(
            f"{printable(metadata.tokenizer.path)} is not a tokenizer JSON file"
            f" ({printable(error_line(exc))})"
        ) from None
    return metadata, tokenizer


def load_saved_model(root: Path, metadata: ArtifactMetadata) -> Any:
    """The SavedModel of an unpacked artifact, loaded with ``tf.saved_model.load``."""
    import tensorflow as tf

    return tf.saved_model.load(str(root / metadata.model_name / str(metadata.model_version)))


def load_served_model(root: Path) -> tuple[Any, ArtifactMetadata, Tokenizer]:
    """Load an unpacked artifact as a server would: the SavedModel plus tokenizer and metadata."""
    metadata, tokenizer = read_unpacked(root)
    return load_saved_model(root, metadata), metadata, tokenizer


__all__ = [
    "MODEL_NAME",
    "MODEL_VERSION",
    "TOKENIZER_PATH",
    "SessionSavedModel",
    "check_served_generation",
    "export_saved_model",
    "file_sha256",
    "load_saved_model",
    "load_served_model",
    "pack_artifact",
    "read_metadata",
    "read_unpacked",
    "stage_artifact",
    "unpack_artifact",
]
