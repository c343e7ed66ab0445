"""Model artifact rules: the ``metadata.json`` schema, the S3 key convention and the validator.

A model artifact is a ``model.tar.gz`` in the SageMaker TensorFlow Serving layout::

    <model-name>/<version number>/saved_model.pb      the SavedModel (any depth; ``1/`` alone means "model")
    <model-name>/<version number>/variables/...        its checkpoint
    code/inference.py                                  ``handler`` or ``input_handler`` + ``output_handler``
    code/requirements.txt                              optional
    <tokenizer.path>                                   the tokenizer named by the metadata
    metadata.json                                      an :class:`ArtifactMetadata`

The build writes ``metadata.json`` with :class:`ArtifactMetadata` and the rollout reads it back
with the same class, so the schema lives in one place. :func:`validate_artifact` reads the archive
as a stream (an S3 body works) and never extracts it or runs any of its code. It checks the
metadata against the archive too: the signature it names is in ``saved_model.pb`` (read with a
small protobuf wire-format reader, no protobuf library) and the tokenizer's vocabulary size and
end-of-text id are those of the tokenizer JSON.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import re
import tarfile
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Annotated, Any, Literal, Protocol, cast

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tweetgen.domain.model_key import (
    ARTIFACT_VERSION_PATTERN,
    MODEL_FILE_NAME,
    MODEL_KEY_PREFIX,
    VARIANT_NAME_MAX_LENGTH,
    VARIANT_NAME_PATTERN,
    ModelKey,
    is_artifact_version,
    is_variant_name,
    parse_model_key,
)

__all__ = [
    "ARTIFACT_VERSION_PATTERN",
    "DEFAULT_LIMITS",
    "DEFAULT_MODEL_NAME",
    "INFERENCE_PATH",
    "METADATA_PATH",
    "MODEL_FILE_NAME",
    "MODEL_KEY_PREFIX",
    "VARIANT_NAME_PATTERN",
    "ArtifactLimits",
    "ArtifactMetadata",
    "ArtifactReport",
    "DataMetadata",
    "GenerationMetadata",
    "ModelKey",
    "ReadableStream",
    "TokenizerMetadata",
    "is_artifact_version",
    "is_variant_name",
    "parse_model_key",
    "validate_artifact",
]

METADATA_PATH = "metadata.json"
INFERENCE_PATH = "code/inference.py"
SAVED_MODEL_FILE = "saved_model.pb"
VARIABLES_INDEX = "variables/variables.index"
# The container names a SavedModel found at the archive root (``1/saved_model.pb``) "model".
DEFAULT_MODEL_NAME = "model"
# The end-of-text token of every tokenizer the build writes (start, end and padding).
EOS_TOKEN = "<|endoftext|>"
# A signature_def key of every TF2 SavedModel that names the restore's init op, not a signature.
INIT_OP_SIGNATURE = "__saved_model_init_op"

SHA256_PATTERN = r"^[0-9a-f]{64}$"


# --------------------------------------------------------------------------- metadata.json


def _hyperparameter_value(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Collapse the union's one-error-per-member into a single readable error."""
    try:
        return handler(value)
    except ValidationError:
        if isinstance(value, float):
            raise PydanticCustomError("finite_number", "Input should be a finite number") from None
        raise PydanticCustomError(
            "hyperparameter_type",
            "Input should be a number, string, boolean or null, not {kind}",
            {"kind": type(value).__name__},
        ) from None


HyperparameterValue = Annotated[
    StrictInt | FiniteFloat | str | StrictBool | None, WrapValidator(_hyperparameter_value)
]


class _MetadataPart(BaseModel):
    """Strict about the fields it knows, tolerant of fields a newer build adds."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class TokenizerMetadata(_MetadataPart):
    """The tokenizer packed with the model; both models tokenize on the host with it."""

    type: Literal["byte_level_bpe"]
    path: str = Field(description="archive path of tokenizer.json, e.g. code/tokenizer.json")
    vocab_size: int = Field(gt=0)
    sha256: str = Field(
        pattern=SHA256_PATTERN, description="sha256 of the tokenizer file's bytes, lowercase hex"
    )
    eos_token_id: int = Field(ge=0)
    pad_token_id: int = Field(ge=0)

    @field_validator("path")
    @classmethod
    def _relative_path(cls, value: str) -> str:
        parts = value.split("/")
        if value.startswith("/") or "\\" in value or any(p in ("", ".", "..") for p in parts):
            raise ValueError(
                "must be a relative archive path such as code/tokenizer.json "
                "(no leading '/', no '.', '..' or empty parts, no backslashes)"
            )
        return value

    @model_validator(mode="after")
    def _ids_in_vocabulary(self) -> TokenizerMetadata:
        for name in ("eos_token_id", "pad_token_id"):
            if getattr(self, name) >= self.vocab_size:
                raise ValueError(
                    f"{name} {getattr(self, name)} is outside the vocabulary (vocab_size {self.vocab_size})"
                )
        return self


class DataMetadata(_MetadataPart):
    """Which data the model was trained on, so a result can be traced to its inputs."""

    sha256: str = Field(pattern=SHA256_PATTERN, description="identifies the training data")
    n_train: int = Field(ge=0)
    n_validation: int = Field(ge=0)
    n_test: int = Field(ge=0)
    sources: list[str]
    cleaning: dict[str, bool]


class GenerationMetadata(_MetadataPart):
    """The generation limits baked into the SavedModel's serving signature."""

    max_context: int = Field(gt=0)
    max_new_tokens: int = Field(gt=0, description="the cap a request's max_new_tokens is held to")
    max_batch_size: int = Field(gt=0)
    signature: str = "serving_default"

    @model_validator(mode="after")
    def _room_for_a_prompt(self) -> GenerationMetadata:
        # inference.py refuses a request when end-of-text + prompt + max_new_tokens > max_context.
        if self.max_new_tokens >= self.max_context:
            raise ValueError(
                f"max_new_tokens {self.max_new_tokens} leaves no room for a prompt in max_context "
                f"{self.max_context}: the context holds the end-of-text start token and the new "
                f"tokens, so max_new_tokens must be at most {self.max_context - 1}"
            )
        return self


class ArtifactMetadata(_MetadataPart):
    """``metadata.json``: written by the build, read by validation, rollout and the local host.

    Parse it with :meth:`model_validate_json` (strict mode takes ``created`` as an ISO string only
    from JSON) and write it with :meth:`model_dump_json`. Unknown keys are kept, so an older
    reader passes a newer artifact's extra fields through untouched.
    """

    schema_version: Literal[1]
    kind: Literal["lstm", "gpt2"]
    variant: str = Field(pattern=VARIANT_NAME_PATTERN, max_length=VARIANT_NAME_MAX_LENGTH)
    version: str = Field(pattern=ARTIFACT_VERSION_PATTERN)
    created: AwareDatetime
    model_name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=255,
        description="TensorFlow Serving model name: the folder above the version folder",
    )
    model_version: int = Field(ge=0, description="TensorFlow Serving version folder number")
    tokenizer: TokenizerMetadata
    data: DataMetadata
    hyperparameters: dict[str, HyperparameterValue]
    metrics: dict[str, FiniteFloat] = Field(
        description="offline metrics, e.g. test_perplexity, ngram_perplexity"
    )
    generation: GenerationMetadata

    @field_validator("schema_version", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        # JSON true would otherwise pass as the literal 1.
        if isinstance(value, bool):
            raise ValueError("must be the number 1")
        return value


# --------------------------------------------------------------------------- limits and report

_MiB = 1024 * 1024
_GiB = 1024 * _MiB


@dataclass(frozen=True)
class ArtifactLimits:
    """Bounds that keep validation cheap and safe against hostile or broken archives.

    ``max_total_bytes``: sum of the uncompressed sizes of all regular files (GPT-2 small is ~0.5 GB).
    ``max_members``: entries of any type, folders included.
    ``max_metadata_bytes``: ``metadata.json``, read into memory.
    ``max_code_file_bytes``: ``code/inference.py``, read into memory and parsed.
    ``max_tokenizer_bytes``: the tokenizer file, hashed to check ``tokenizer.sha256`` and, when
    it is JSON, read into memory for its vocabulary (a byte-level BPE tokenizer.json is well
    under 5 MB). ``saved_model.pb`` is read as a stream whatever its size: only its signature
    names are kept, each at most ``max_metadata_bytes`` long.
    ``max_member_problems``: per-member problems listed before the rest are only counted, so a
    report stays small enough for a Step Functions state (256 KiB).
    """

    max_total_bytes: int = 4 * _GiB
    max_members: int = 10_000
    max_metadata_bytes: int = 1 * _MiB
    max_code_file_bytes: int = 8 * _MiB
    max_tokenizer_bytes: int = 64 * _MiB
    max_member_problems: int = 100

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ArtifactLimits.{name} must be a positive integer, not {value!r}")


DEFAULT_LIMITS = ArtifactLimits()


@dataclass(frozen=True)
class ArtifactReport:
    """Everything found wrong with one artifact; ``ok`` when nothing was."""

    problems: list[str]
    metadata: ArtifactMetadata | None
    members: int
    total_bytes: int
    saved_model_dir: str | None

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form, e.g. for a Lambda's answer to the state machine."""
        return {
            "ok": self.ok,
            "problems": list(self.problems),
            "metadata": None if self.metadata is None else self.metadata.model_dump(mode="json"),
            "members": self.members,
            "total_bytes": self.total_bytes,
            "saved_model_dir": self.saved_model_dir,
        }


class ReadableStream(Protocol):
    """Anything with ``read(size)``: an open file, ``io.BytesIO``, an S3 ``StreamingBody``."""

    def read(self, size: int = -1, /) -> bytes: ...


# --------------------------------------------------------------------------- reading the stream

_CHUNK = 1 * _MiB
# Tar headers, long-name and pax records, and padding allowed per member beyond file data.
_HEADER_ALLOWANCE = 4096
_BLOCK = 512
_NAME_SHOWN = 200

# The standard library defines these but its type stubs do not list them.
_END_OF_ARCHIVE: type[Exception] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
_SHORT_HEADER: tuple[type[Exception], ...] = (
    tarfile.EmptyHeaderError,  # type: ignore[attr-defined]
    tarfile.TruncatedHeaderError,  # type: ignore[attr-defined]
)


class _Unreadable(Exception):
    """The archive cannot be read further; ``kind`` is "not_tar", "truncated" or "damaged"."""

    def __init__(self, kind: str, detail: str, offset: int) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.offset = offset


class _OverLimit(Exception):
    """More decompressed bytes than the limits allow (oversized headers or trailing data)."""


class _StrictTarInfo(tarfile.TarInfo):
    """Treat a missing or damaged header as an error: tarfile alone reads it as a clean end."""

    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> _StrictTarInfo:
        offset = archive.offset
        try:
            return super().fromtarfile(archive)
        except _END_OF_ARCHIVE:
            raise
        except _SHORT_HEADER as exc:
            raise _Unreadable("truncated" if offset else "not_tar", str(exc), offset) from None
        except (tarfile.HeaderError, ValueError) as exc:
            raise _Unreadable("damaged" if offset else "not_tar", str(exc), offset) from None


class _Source:
    """The compressed input: counts bytes and keeps the first block to name a wrong format."""

    def __init__(self, stream: ReadableStream) -> None:
        self._stream = stream
        self.count = 0
        self.head = b""

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        if len(self.head) < _BLOCK:
            self.head += data[: _BLOCK - len(self.head)]
        return data

    def sniff(self) -> bytes:
        """The first block, reading more if the gzip reader stopped early."""
        while len(self.head) < _BLOCK and self.read(_BLOCK - len(self.head)):
            pass
        return self.head


class _Bounded:
    """The decompressed tar stream, cut off at a hard ceiling whatever the headers claim."""

    def __init__(self, stream: gzip.GzipFile, ceiling: int) -> None:
        self._stream = stream
        self._ceiling = ceiling
        self.count = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        if self.count > self._ceiling:
            raise _OverLimit
        return data


@dataclass
class _Scan:
    """What one pass over the archive has found so far."""

    limits: ArtifactLimits
    problems: list[str] = field(default_factory=list)
    members: int = 0
    total_bytes: int = 0
    files: set[str] = field(default_factory=set)
    # normalised name -> (is a folder, the member's name as shown)
    seen: dict[str, tuple[bool, str]] = field(default_factory=dict)
    # folder that no member names but some member lies in -> the first such member, as shown
    parents: dict[str, str] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    # small files that start like a JSON object -> their tokens by id, or why they have none
    vocabularies: dict[str, dict[int, str] | str] = field(default_factory=dict)
    metadata_raw: bytes | None = None
    inference_source: bytes | None = None
    xla_graphs: set[str] = field(default_factory=set)  # saved_model.pb files that need XLA
    signatures: dict[str, frozenset[str]] = field(default_factory=dict)  # saved_model.pb -> keys
    unreadable_graphs: dict[str, str] = field(default_factory=dict)  # saved_model.pb -> why
    member_problems: int = 0
    suppressed: int = 0
    finished: bool = False

    def member_problem(self, text: str) -> None:
        """Record a problem with one member, only counting it past the reporting limit."""
        if self.member_problems >= self.limits.max_member_problems:
            self.suppressed += 1
        else:
            self.member_problems += 1
            self.problems.append(text)


def _shown(name: str) -> str:
    """A member name fit for a one-line message, whatever bytes it holds."""
    if len(name) > _NAME_SHOWN:
        name = name[:_NAME_SHOWN] + "..."
    if name.isprintable():
        try:
            name.encode("utf-8")
            return f"'{name}'"
        except UnicodeEncodeError:
            pass
    return ascii(name)


def _one_line(text: str) -> str:
    """Escape control characters so that each problem stays one printable line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _special_kind(member: tarfile.TarInfo) -> str | None:
    """What a member is when it is neither a regular file nor a folder."""
    if member.issym():
        return f"a symbolic link (to {_shown(member.linkname)})"
    if member.islnk():
        return f"a hard link (to {_shown(member.linkname)})"
    if member.ischr():
        return "a character device"
    if member.isblk():
        return "a block device"
    if member.isfifo():
        return "a FIFO"
    if not (member.isreg() or member.isdir()):
        return f"an entry of unsupported tar type {member.type!r}"
    return None


def _safe_path(member: tarfile.TarInfo, scan: _Scan) -> str | None:
    """The member's normalised path, or None (with problems recorded) when it must not be used."""
    name, shown = member.name, _shown(member.name)
    parts = name.split("/")
    path = "/".join(p for p in parts if p not in ("", "."))
    unsafe = False
    if name.startswith("/"):
        scan.member_problem(f"member {shown}: absolute path; archive paths must be relative")
        unsafe = True
    if ".." in parts:
        scan.member_problem(
            f"member {shown}: path has a '..' part that would escape the model folder; remove it"
        )
        unsafe = True
    kind = _special_kind(member)
    if kind is not None:
        scan.member_problem(
            f"member {shown}: is {kind}; an artifact may hold only regular files and folders"
        )
        unsafe = True
    if not path and not member.isdir():
        scan.member_problem(f"member {shown}: has no usable name; remove it")
        unsafe = True
    if unsafe or not path:
        return None
    clash = _clash(path, member.isdir(), shown, scan)
    if clash is not None:
        scan.member_problem(clash)
        return None
    scan.seen[path] = (member.isdir(), shown)
    parts = path.split("/")
    for depth in range(1, len(parts)):
        scan.parents.setdefault("/".join(parts[:depth]), shown)
    return path


def _clash(path: str, is_dir: bool, shown: str, scan: _Scan) -> str | None:
    """Why a member cannot be unpacked beside the earlier ones, or None when it can.

    A file where a folder is needed (for a member inside it) makes ``tar -x`` and ``tarfile``
    fail ("Not a directory", "File exists", "Is a directory"); a file and a folder of one name
    fail or replace each other, and a later copy of a file replaces the earlier one. A folder
    named twice is harmless.
    """
    parts = path.split("/")
    for depth in range(1, len(parts)):
        folder = "/".join(parts[:depth])
        earlier = scan.seen.get(folder)
        if earlier is not None and not earlier[0]:
            return (
                f"member {shown}: '{path}' lies in '{folder}', which the earlier member "
                f"{earlier[1]} makes a file; unpacking fails there (Not a directory): rename or "
                "remove one"
            )
    if path in scan.seen:
        was_dir, earlier_shown = scan.seen[path]
        if is_dir and was_dir:
            return None
        if not is_dir and not was_dir:
            return (
                f"member {shown}: '{path}' appears more than once (also as member {earlier_shown}); "
                "the later copy would silently replace the earlier one: keep one"
            )
        kinds = ("a folder", "a file") if is_dir else ("a file", "a folder")
        return (
            f"member {shown}: '{path}' is {kinds[0]} but the earlier member {earlier_shown} "
            f"makes it {kinds[1]}; one would replace the other, or unpacking fails: keep one"
        )
    if not is_dir and path in scan.parents:
        return (
            f"member {shown}: '{path}' is a file but the earlier member {scan.parents[path]} "
            "lies in it, so it must be a folder; unpacking fails there: rename or remove one"
        )
    return None


# A function exported with ``jit_compile=True`` carries this attribute in the graph (the
# protobuf encoding of the map entry ``"_XlaMustCompile": AttrValue(b=True)``).
_XLA_MUST_COMPILE = b"\n\x0f_XlaMustCompile\x12\x02(\x01"


# Fields the protobuf reader takes one by one (outside the graph, which it skips whole): a real
# SavedModel has a few dozen, so more means a file built to keep the reader busy.
_MAX_PROTOBUF_FIELDS = 100_000


class _Malformed(Exception):
    """saved_model.pb is not a protobuf message of the expected shape."""


class _GraphReader:
    """saved_model.pb read once, forwards, for the protobuf reader; every byte is scanned for XLA."""

    def __init__(self, handle: IO[bytes], size: int, max_name_bytes: int) -> None:
        self._handle = handle
        self.size = size
        self.max_name_bytes = max_name_bytes
        self.pos = 0
        self.fields = 0
        self.needs_xla = False
        self._tail = b""

    def _scan(self, data: bytes) -> None:
        if not self.needs_xla:
            window = self._tail + data
            self.needs_xla = _XLA_MUST_COMPILE in window
            self._tail = window[-(len(_XLA_MUST_COMPILE) - 1) :]

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes, or :class:`_Malformed` when the file ends first."""
        data = self._handle.read(size) if size else b""
        self._scan(data)
        self.pos += len(data)
        if len(data) < size:
            raise _Malformed(f"it ends at byte {self.pos}, inside a field")
        return data

    def skip(self, size: int) -> None:
        while size > 0:
            size -= len(self.read(min(size, _CHUNK)))

    def drain(self) -> None:
        """Scan the rest for XLA, once the protobuf reader is done or has given up."""
        while chunk := self._handle.read(_CHUNK):
            self._scan(chunk)


def _varint(reader: _GraphReader) -> int:
    """A base-128 varint: 7 bits a byte, least significant first, at most 10 bytes."""
    start, value = reader.pos, 0
    for shift in range(0, 70, 7):
        byte = reader.read(1)[0]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value
    raise _Malformed(f"the varint at byte {start} is longer than 10 bytes")


def _length_delimited(reader: _GraphReader, end: int) -> Iterator[tuple[int, int]]:
    """``(field number, length)`` of each length-delimited field of the message ending at ``end``.

    The caller may read the field's bytes or leave them: what it leaves is skipped. Varint,
    64-bit and 32-bit fields (wire types 0, 1, 5) are skipped; any other wire type is malformed.
    """
    while reader.pos < end:
        reader.fields += 1
        if reader.fields > _MAX_PROTOBUF_FIELDS:
            raise _Malformed(f"it has more than {_MAX_PROTOBUF_FIELDS} fields outside its graph")
        start = reader.pos
        key = _varint(reader)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise _Malformed(f"the field at byte {start} has number 0")
        if wire_type == 0:
            _varint(reader)
        elif wire_type == 1:
            reader.skip(8)
        elif wire_type == 5:
            reader.skip(4)
        elif wire_type == 2:
            length = _varint(reader)
            stop = reader.pos + length
            if stop > end:
                raise _Malformed(
                    f"the field at byte {start} is {length} bytes long, past the end of its "
                    f"message at byte {end}"
                )
            yield number, length
            reader.skip(stop - reader.pos)
        else:
            raise _Malformed(f"the field at byte {start} has wire type {wire_type}")
        if reader.pos > end:
            raise _Malformed(f"the field at byte {start} runs past the end of its message")


def _signature_names(reader: _GraphReader) -> frozenset[str]:
    """The signature_def keys of every MetaGraphDef in a SavedModel message.

    SavedModel: field 2 ``meta_graphs`` (repeated MetaGraphDef); MetaGraphDef: field 5
    ``signature_def``, a map whose entries hold the key as field 1 and the SignatureDef as
    field 2. A key longer than ``max_name_bytes`` (metadata.json's own limit) is left out:
    metadata.json cannot name it.
    """
    names: set[str] = set()
    for number, length in _length_delimited(reader, reader.size):
        if number != 2:
            continue
        for inner, inner_length in _length_delimited(reader, reader.pos + length):
            if inner != 5:
                continue
            key: bytes | None = b""  # an entry without field 1 has the empty key
            for part, part_length in _length_delimited(reader, reader.pos + inner_length):
                if part == 1:
                    fits = part_length <= reader.max_name_bytes
                    key = reader.read(part_length) if fits else None
            if key is not None:
                try:
                    names.add(key.decode("utf-8"))
                except UnicodeDecodeError:
                    raise _Malformed("a signature name is not UTF-8") from None
    return frozenset(names)


def _take_saved_model(
    tar: tarfile.TarFile, member: tarfile.TarInfo, path: str, scan: _Scan
) -> None:
    """Read a saved_model.pb once: its signature names, and whether it needs XLA."""
    handle = tar.extractfile(member)
    if handle is None:
        return
    reader = _GraphReader(handle, member.size, scan.limits.max_metadata_bytes)
    try:
        scan.signatures[path] = _signature_names(reader)
    except _Malformed as exc:
        scan.unreadable_graphs[path] = str(exc)
    reader.drain()
    if reader.needs_xla:
        scan.xla_graphs.add(path)


def _tokenizer_vocabulary(raw: bytes) -> dict[int, str] | str:
    """The tokens by id of a ``tokenizers`` JSON file (``model.vocab`` and ``added_tokens``).

    Where both give an id, the added token wins, as it does when the tokenizer decodes. A
    string instead says why the file is not tokenizer JSON of that shape.
    """
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return f"not valid JSON: {exc}"
    model = document.get("model") if isinstance(document, dict) else None
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if not isinstance(vocab, dict):
        return "no model.vocab object of tokens and their ids"
    added = document.get("added_tokens", [])
    if not isinstance(added, list):
        return "added_tokens is not a list"
    tokens: dict[int, str] = {}
    for token, token_id in vocab.items():
        if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
            return f"model.vocab gives {_shown(token)} the id {token_id!r}, not a token id"
        tokens.setdefault(token_id, token)
    for entry in added:
        token_id = entry.get("id") if isinstance(entry, dict) else None
        content = entry.get("content") if isinstance(entry, dict) else None
        if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
            return "an added_tokens entry has no token id"
        if not isinstance(content, str):
            return f"the added token with id {token_id} has no string content"
        tokens[token_id] = content
    return tokens


def _read_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, keep: bool, *, json_only: bool = False
) -> tuple[str, bytes]:
    """The member's sha256 and, when asked, its bytes.

    With ``json_only`` the bytes are kept only when they start like a JSON object.
    """
    handle = tar.extractfile(member)
    digest = hashlib.sha256()
    kept: list[bytes] = []
    if handle is not None:
        first = True
        while chunk := handle.read(_CHUNK):
            if first and json_only:
                keep = keep and chunk.lstrip().startswith(b"{")
            first = False
            digest.update(chunk)
            if keep:
                kept.append(chunk)
    return digest.hexdigest(), b"".join(kept)


def _take_file(tar: tarfile.TarFile, member: tarfile.TarInfo, path: str, scan: _Scan) -> None:
    limits = scan.limits
    scan.files.add(path)
    if path == METADATA_PATH:
        if member.size > limits.max_metadata_bytes:
            scan.problems.append(
                f"{METADATA_PATH} is {member.size} bytes, over the {limits.max_metadata_bytes}-byte "
                "limit; keep only metadata in it"
            )
            return
        scan.digests[path], scan.metadata_raw = _read_member(tar, member, keep=True)
    elif path == INFERENCE_PATH:
        if member.size > limits.max_code_file_bytes:
            scan.problems.append(
                f"{INFERENCE_PATH} is {member.size} bytes, over the {limits.max_code_file_bytes}-byte "
                "limit; move helpers into other files under code/"
            )
            return
        scan.digests[path], scan.inference_source = _read_member(tar, member, keep=True)
    elif path.rsplit("/", 1)[-1] == SAVED_MODEL_FILE:
        _take_saved_model(tar, member, path, scan)
    elif member.size <= limits.max_tokenizer_bytes:
        # The tokenizer may come before metadata.json names it, so hash every small file and
        # read the vocabulary of each that looks like JSON.
        scan.digests[path], raw = _read_member(tar, member, keep=True, json_only=True)
        if raw:
            scan.vocabularies[path] = _tokenizer_vocabulary(raw)


def _take_member(tar: tarfile.TarFile, member: tarfile.TarInfo, scan: _Scan) -> bool:
    """Record one member; False when a limit is exceeded and reading must stop."""
    limits = scan.limits
    scan.members += 1
    if scan.members > limits.max_members:
        scan.problems.append(
            f"the archive holds more than {limits.max_members} members (the limit); stopped "
            f"reading at member {_shown(member.name)}: leave out files the model does not need"
        )
        return False
    if member.isreg():
        scan.total_bytes += member.size
        if scan.total_bytes > limits.max_total_bytes:
            scan.problems.append(
                f"the archive's files add up to more than {limits.max_total_bytes} bytes "
                f"uncompressed (the limit); stopped reading at member {_shown(member.name)} "
                f"({member.size} bytes): leave out files the model does not need"
            )
            return False
    path = _safe_path(member, scan)
    if path is not None and member.isreg():
        _take_file(tar, member, path, scan)
    return True


def _format_problem(source: _Source, tar_stream: _Bounded | None, exc: Exception) -> str:
    """One line saying why the archive could not be read to its end."""
    redo = "create it again with tar -czf model.tar.gz -C <model folder> ."
    if source.count == 0:
        return f"the file is empty (0 bytes); {redo}"
    if isinstance(exc, gzip.BadGzipFile) and (tar_stream is None or tar_stream.count == 0):
        head = source.sniff()
        if head[257:262] == b"ustar":
            return f"the file is a tar archive that is not gzip-compressed; {redo}"
        if head.startswith(b"PK\x03\x04"):
            return f"the file is a zip archive, not a gzip-compressed tar; {redo}"
        return f"the file is not gzip-compressed ({exc}); {redo}"
    if isinstance(exc, gzip.BadGzipFile) and str(exc).startswith("Not a gzipped file"):
        return f"the file has unexpected bytes after its gzip stream; {redo}"
    if isinstance(exc, EOFError):
        return (
            f"the file is truncated: its gzip stream ends early after {source.count} bytes; "
            "upload the complete file again"
        )
    if isinstance(exc, _OverLimit):
        return (
            "the archive's tar headers, long names or trailing data are far larger than its "
            f"members need; stopped reading: {redo}"
        )
    if isinstance(exc, _Unreadable):
        if exc.kind == "not_tar":
            return f"the gzip stream does not hold a tar archive ({exc.detail}); {redo}"
        if exc.kind == "truncated":
            return (
                f"the tar archive is truncated: it ends inside a header at byte {exc.offset}; "
                "upload the complete file again"
            )
        return f"the tar archive is damaged: bad header at byte {exc.offset} ({exc.detail}); {redo}"
    if isinstance(exc, tarfile.ReadError) and "unexpected end of data" in str(exc):
        return "the tar archive is truncated: a member's data ends early; upload the complete file again"
    return f"the archive's data is damaged ({exc}); {redo}"


def _scan_archive(stream: ReadableStream, scan: _Scan) -> None:
    """One forward pass: gzip, then tar, member by member; never seeks, never writes."""
    limits = scan.limits
    source = _Source(stream)
    ceiling = limits.max_total_bytes + (limits.max_members + 2) * _HEADER_ALLOWANCE
    tar_stream: _Bounded | None = None
    try:
        # The stubs ask for seek() and tell(), which reading a stream never calls.
        with gzip.GzipFile(fileobj=cast(IO[bytes], source), mode="rb") as unzipped:
            tar_stream = _Bounded(unzipped, ceiling)
            # "r|": a stream of tar blocks, decompressed above so the ceiling and gzip CRC apply.
            with tarfile.open(
                fileobj=cast(IO[bytes], tar_stream), mode="r|", tarinfo=_StrictTarInfo
            ) as tar:
                for member in tar:
                    if not _take_member(tar, member, scan):
                        return
            # Read past the end-of-archive blocks so gzip checks its length and CRC.
            while tar_stream.read(_CHUNK):
                pass
        scan.finished = True
    except (
        _Unreadable,
        _OverLimit,
        EOFError,
        gzip.BadGzipFile,
        zlib.error,
        tarfile.TarError,
    ) as exc:
        scan.problems.append(_format_problem(source, tar_stream, exc))


# --------------------------------------------------------------------------- content checks


def _schema_problems(error: ValidationError) -> list[str]:
    """Each pydantic error as one line naming the field path."""
    lines = []
    for item in error.errors(include_url=False):
        if item["type"] == "json_invalid":
            lines.append(
                f"{METADATA_PATH} is not valid JSON ({item['msg']}); "
                "write it with ArtifactMetadata.model_dump_json()"
            )
            continue
        where = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in item["loc"]
        ).lstrip(".")
        text = (
            f"{METADATA_PATH}: {where}: {item['msg']}"
            if where
            else f"{METADATA_PATH}: {item['msg']}"
        )
        value = item.get("input")
        if item["type"] != "missing" and not isinstance(value, dict | list):
            shown = repr(value)
            text += f" (got {shown[:60] + '...' if len(shown) > 60 else shown})"
        lines.append(text)
    return lines


def _parse_metadata(raw: bytes, problems: list[str]) -> ArtifactMetadata | None:
    try:
        return ArtifactMetadata.model_validate_json(raw)
    except ValidationError as error:
        problems.extend(_schema_problems(error))
        return None


def _bound_names(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """Names bound at module level, looking into if/try/with blocks; '*' marks a star import."""
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names[node.name] = node
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        names[leaf.id] = node
        elif isinstance(node, ast.If | ast.Try | ast.TryStar | ast.With):
            for block in ("body", "orelse", "finalbody"):
                names.update(_bound_names(getattr(node, block, [])))
            for handler in getattr(node, "handlers", []):
                names.update(_bound_names(handler.body))
    return names


def _signature_problem(name: str, node: ast.AST, params: str) -> str | None:
    """Whether a handler the container calls as ``name(a, b)`` can take that call."""
    if isinstance(node, ast.AsyncFunctionDef):
        return f"{INFERENCE_PATH}: {name} is 'async def'; the container calls it synchronously: use 'def'"
    if not isinstance(node, ast.FunctionDef):
        return None
    args = node.args
    positional = len(args.posonlyargs) + len(args.args)
    required = positional - len(args.defaults)
    kw_required = sum(default is None for default in args.kw_defaults)
    if (positional < 2 and args.vararg is None) or required > 2 or kw_required:
        return f"{INFERENCE_PATH}: {name} must accept two positional arguments ({params})"
    return None


def _inference_problems(source: bytes) -> list[str]:
    """Check the handlers the container looks for, by reading the code, never running it."""
    try:
        with warnings.catch_warnings():
            # Warnings about the artifact's code are not the validator's to print.
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(source, filename=INFERENCE_PATH)
    except SyntaxError as exc:
        return [f"{INFERENCE_PATH} does not parse: line {exc.lineno}: {exc.msg}; fix the syntax"]
    except (ValueError, RecursionError) as exc:
        return [f"{INFERENCE_PATH} does not parse ({exc}); fix the file"]
    names = _bound_names(tree.body)
    if "*" in names:
        return []  # A star import may bring the handlers; only loading the module would tell.
    if "handler" in names:
        wanted = {"handler": "data, context"}  # The container prefers it over the pair.
    else:
        wanted = {"input_handler": "data, context", "output_handler": "response, context"}
        missing = [name for name in wanted if name not in names]
        if len(missing) == 2:
            return [
                f"{INFERENCE_PATH} defines neither handler(data, context) nor the pair "
                "input_handler(data, context) and output_handler(response, context); "
                "define one at module level"
            ]
        if missing:
            present = next(name for name in wanted if name in names)
            return [
                f"{INFERENCE_PATH} defines {present} but not {missing[0]}; the container needs "
                "both (or a single handler)"
            ]
    problems = [_signature_problem(name, names[name], params) for name, params in wanted.items()]
    return [p for p in problems if p is not None]


@dataclass(frozen=True)
class _SavedModel:
    folder: str  # e.g. "model/1"
    name: str
    version: int


def _find_saved_models(files: set[str]) -> tuple[list[_SavedModel], list[str]]:
    """SavedModels in numbered folders, and saved_model.pb files the container would not see."""
    found: list[_SavedModel] = []
    misplaced: list[str] = []
    for path in sorted(files):
        parts = path.split("/")
        if parts[-1] != SAVED_MODEL_FILE:
            continue
        if len(parts) >= 2 and parts[-2].isascii() and parts[-2].isdigit():
            name = parts[-3] if len(parts) >= 3 else DEFAULT_MODEL_NAME
            found.append(_SavedModel("/".join(parts[:-1]), name, int(parts[-2])))
        else:
            misplaced.append(path)
    return found, misplaced


def _variables_problems(model: _SavedModel, files: set[str]) -> list[str]:
    """The checkpoint next to the graph: its index and every data shard the index implies."""
    redo = "export the model again with tf.saved_model.save and repackage it"
    if f"{model.folder}/{VARIABLES_INDEX}" not in files:
        return [f"SavedModel {model.folder} has no {VARIABLES_INDEX}; {redo}"]
    shard = re.compile(
        re.escape(f"{model.folder}/variables/variables.data-") + r"(\d{5})-of-(\d{5})"
    )
    shards = [m for m in (shard.fullmatch(path) for path in files) if m]
    if not shards:
        return [f"SavedModel {model.folder} has no variables/variables.data-* shard; {redo}"]
    totals = {int(m.group(2)) for m in shards}
    if len(totals) != 1:
        return [f"SavedModel {model.folder} mixes variables shards of different exports; {redo}"]
    total = totals.pop()
    present = {int(m.group(1)) for m in shards}
    return [
        f"SavedModel {model.folder} lacks variables/variables.data-{i:05d}-of-{total:05d}; {redo}"
        for i in range(total)
        if i not in present
    ]


def _saved_model_problems(scan: _Scan, problems: list[str]) -> _SavedModel | None:
    """The one SavedModel the container will serve, or None with the reason recorded."""
    found, misplaced = _find_saved_models(scan.files)
    if len(found) > 1:
        folders = ", ".join(model.folder for model in found)
        problems.append(
            f"more than one SavedModel version folder ({folders}); the container would serve "
            "them all: keep exactly one"
        )
        return None
    if not found:
        if scan.finished:
            hint = f" (found {', '.join(misplaced)}, not in a numbered folder)" if misplaced else ""
            problems.append(
                f"no SavedModel{hint}: put it at <model name>/<version number>/{SAVED_MODEL_FILE}, "
                f"e.g. model/1/{SAVED_MODEL_FILE}"
            )
        return None
    if scan.finished:
        problems.extend(_variables_problems(found[0], scan.files))
    return found[0]


def _metadata_problems(
    metadata: ArtifactMetadata,
    saved_model: _SavedModel | None,
    scan: _Scan,
    expected_variant: str | None,
) -> list[str]:
    """Agreement between metadata.json and the rest of the archive and the S3 key."""
    problems = []
    if expected_variant is not None and metadata.variant != expected_variant:
        problems.append(
            f"{METADATA_PATH} says variant {metadata.variant!r} but the artifact was uploaded for "
            f"variant {expected_variant!r}; upload it under models/{metadata.variant}/ or fix the metadata"
        )
    if saved_model is not None and (metadata.model_name, metadata.model_version) != (
        saved_model.name,
        saved_model.version,
    ):
        problems.append(
            f"{METADATA_PATH} says model_name {metadata.model_name!r} version {metadata.model_version} "
            f"but the SavedModel is in {saved_model.folder} (model {saved_model.name!r} version "
            f"{saved_model.version}); make them agree"
        )
    path = metadata.tokenizer.path
    if path in scan.files and path not in scan.digests:
        problems.append(
            f"tokenizer file {path} is over the {scan.limits.max_tokenizer_bytes}-byte limit; "
            "its sha256 cannot be checked"
        )
    elif path in scan.digests and scan.digests[path] != metadata.tokenizer.sha256:
        problems.append(
            f"tokenizer file {path} has sha256 {scan.digests[path]} but {METADATA_PATH} says "
            f"{metadata.tokenizer.sha256}; package the tokenizer the model was trained with"
        )
    elif path not in scan.files and scan.finished:
        problems.append(
            f"missing the tokenizer file {path} named by {METADATA_PATH} tokenizer.path; "
            "add it to the archive or fix the path"
        )
    if path in scan.digests:
        problems.extend(_vocabulary_problems(metadata.tokenizer, scan.vocabularies.get(path)))
    if saved_model is not None:
        graph = f"{saved_model.folder}/{SAVED_MODEL_FILE}"
        names = scan.signatures.get(graph)
        wanted = metadata.generation.signature
        if names is not None and (wanted not in names or wanted == INIT_OP_SIGNATURE):
            servable = sorted(names - {INIT_OP_SIGNATURE})
            listed = ", ".join(_shown(name) for name in servable[:10])
            listed += ", ..." if len(servable) > 10 else ""
            problems.append(
                f"{METADATA_PATH} says generation.signature {_shown(wanted)} but {graph} has no "
                f"such signature (it has {listed or 'none'}); export the model with that "
                "signature or fix the metadata"
            )
    return problems


def _vocabulary_problems(
    tokenizer: TokenizerMetadata, tokens: dict[int, str] | str | None
) -> list[str]:
    """Agreement between metadata.json's tokenizer ids and the tokenizer JSON's vocabulary.

    The build writes ``vocab_size`` from ``Tokenizer.get_vocab_size()``, which counts the model
    vocabulary and the added tokens together: the distinct ids of both.
    """
    path = tokenizer.path
    if not isinstance(tokens, dict):
        why = "it does not start with '{'" if tokens is None else tokens
        return [
            f"tokenizer file {path} is not tokenizer JSON ({why}); package the tokenizer.json "
            "that tokenizers' Tokenizer.save writes"
        ]
    problems = []
    if len(tokens) != tokenizer.vocab_size:
        problems.append(
            f"{METADATA_PATH} says tokenizer.vocab_size {tokenizer.vocab_size} but {path} has "
            f"{len(tokens)} distinct token ids (model.vocab and added_tokens); write the size "
            "of the packaged tokenizer"
        )
    eos = tokens.get(tokenizer.eos_token_id)
    if eos != EOS_TOKEN:
        has = "no token" if eos is None else f"the token {_shown(eos)}"
        problems.append(
            f"{METADATA_PATH} says tokenizer.eos_token_id {tokenizer.eos_token_id} but {path} has "
            f"{has} at that id, not '{EOS_TOKEN}'; write the id of '{EOS_TOKEN}'"
        )
    if tokenizer.pad_token_id not in tokens:
        problems.append(
            f"{METADATA_PATH} says tokenizer.pad_token_id {tokenizer.pad_token_id} but {path} has "
            "no token with that id; write the id of a token it has"
        )
    return problems


def validate_artifact(
    fileobj: ReadableStream,
    *,
    expected_variant: str | None = None,
    limits: ArtifactLimits = DEFAULT_LIMITS,
    allow_xla: bool = False,
) -> ArtifactReport:
    """Check a ``model.tar.gz`` read once from ``fileobj``, collecting every problem found.

    ``fileobj`` needs only ``read``: it is never seeked, so a non-seekable S3 body works.
    ``allow_xla``: accept a SavedModel with functions that must be compiled by XLA, for a
    model server that compiles them (TensorFlow Serving does on GPUs, not on CPUs by default).
    When reading stops early (damage, truncation, a limit) the checks for missing files are
    skipped, since the rest of the archive was never seen, and so are the checks of the
    signature and the tokenizer's vocabulary when their files were not read.
    """
    scan = _Scan(limits=limits)
    _scan_archive(fileobj, scan)
    if scan.suppressed:
        scan.problems.append(f"... and {scan.suppressed} more problems with individual members")
    problems = scan.problems
    metadata = None
    if scan.metadata_raw is not None:
        metadata = _parse_metadata(scan.metadata_raw, problems)
    elif scan.finished and METADATA_PATH not in scan.files:
        problems.append(
            f"missing {METADATA_PATH} at the archive root; write it with ArtifactMetadata.model_dump_json()"
        )
    if scan.inference_source is not None:
        problems.extend(_inference_problems(scan.inference_source))
    elif scan.finished and INFERENCE_PATH not in scan.files:
        problems.append(
            f"missing {INFERENCE_PATH}; the TensorFlow Serving container needs it to turn "
            "requests into model inputs"
        )
    saved_model = _saved_model_problems(scan, problems)
    graph = None if saved_model is None else f"{saved_model.folder}/{SAVED_MODEL_FILE}"
    if graph is not None and graph in scan.unreadable_graphs:
        problems.append(
            f"{graph} is not a readable SavedModel protobuf ({scan.unreadable_graphs[graph]}); "
            "export the model again with tf.saved_model.save"
        )
    if (
        saved_model is not None
        and not allow_xla
        and f"{saved_model.folder}/{SAVED_MODEL_FILE}" in scan.xla_graphs
    ):
        problems.append(
            f"SavedModel {saved_model.folder} has functions compiled with XLA (jit_compile=True, "
            "e.g. tweetgen train --xla-decode): the SageMaker TensorFlow Serving container starts "
            "its model server without --xla_cpu_compilation_enabled, so on CPU instances every "
            "request fails; export it without XLA (on GPU instances, validate with XLA allowed)"
        )
    if metadata is not None:
        problems.extend(_metadata_problems(metadata, saved_model, scan, expected_variant))
    return ArtifactReport(
        problems=[_one_line(problem) for problem in problems],
        metadata=metadata,
        members=scan.members,
        total_bytes=scan.total_bytes,
        saved_model_dir=None if saved_model is None else saved_model.folder,
    )
