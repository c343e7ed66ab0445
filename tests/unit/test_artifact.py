"""The artifact rules: metadata schema, S3 key convention and the streaming validator.

Archives are built in memory with fake SavedModel bytes (a SavedModel protobuf message with
signature names around an opaque graph): the validator reads layout, metadata and signature
names, never the model itself, so no TensorFlow is needed here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import string
import tarfile
import warnings
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tweetgen.domain.artifact import (
    INFERENCE_PATH,
    METADATA_PATH,
    ArtifactLimits,
    ArtifactMetadata,
    ArtifactReport,
    ModelKey,
    is_artifact_version,
    is_variant_name,
    parse_model_key,
    validate_artifact,
)

EOS = "<|endoftext|>"


def added_token(token_id: int, content: str, special: bool = False) -> dict[str, Any]:
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": special,
    }


def tokenizer_json(vocab: Any = None, added: Any = None) -> bytes:
    """A tokenizers JSON file in the shape Tokenizer.save writes (end-of-text in both lists)."""
    document = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added_token(0, EOS, special=True), added_token(5, "<url>")]
        if added is None
        else added,
        "normalizer": None,
        "model": {
            "type": "BPE",
            "vocab": {EOS: 0, "a": 1, "b": 2, "c": 3, "ab": 4} if vocab is None else vocab,
            "merges": [["a", "b"]],
        },
    }
    return json.dumps(document).encode()


TOKENIZER = tokenizer_json()  # 6 token ids: 0-4 in the vocabulary, 5 added
TOKENIZER_SHA = hashlib.sha256(TOKENIZER).hexdigest()


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def pb_field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def signature_entry(name: str | bytes) -> bytes:
    """One signature_def map entry (MetaGraphDef field 5): key 1, SignatureDef 2."""
    key = name.encode() if isinstance(name, str) else name
    return pb_field(5, pb_field(1, key) + pb_field(2, pb_field(1, b"input_ids")))


SIGNATURES = ("serving_default", "score", "next_token_logits", "__saved_model_init_op")


def saved_model_pb(signatures: Iterable[str] = SIGNATURES, graph: bytes = b"graph") -> bytes:
    """A SavedModel message: schema version 1 and one MetaGraphDef (graph_def, signatures)."""
    meta_graph = pb_field(2, graph) + b"".join(signature_entry(name) for name in signatures)
    return b"\x08\x01" + pb_field(2, meta_graph)


SAVED_MODEL = saved_model_pb()
PAIR_HANDLERS = b"""
import json

def input_handler(data, context):
    return json.dumps({"instances": [json.loads(data.read().decode())]})

def output_handler(response, context):
    return response.content, "application/json"
"""


def metadata_dict(**overrides: Any) -> dict[str, Any]:
    """A valid metadata.json as a dict; keyword arguments replace top-level fields."""
    document: dict[str, Any] = {
        "schema_version": 1,
        "kind": "lstm",
        "variant": "lstm",
        "version": "v1",
        "created": "2026-11-01T12:00:00Z",
        "model_name": "model",
        "model_version": 1,
        "tokenizer": {
            "type": "byte_level_bpe",
            "path": "code/tokenizer.json",
            "vocab_size": 6,
            "sha256": TOKENIZER_SHA,
            "eos_token_id": 0,
            "pad_token_id": 0,
        },
        "data": {
            "sha256": "0" * 64,
            "n_train": 1000,
            "n_validation": 100,
            "n_test": 100,
            "sources": ["sentiment140"],
            "cleaning": {"strip_urls": True, "strip_mentions": False},
        },
        "hyperparameters": {
            "embedding_dim": 128,
            "learning_rate": 0.001,
            "cell": "lstm",
            "dropout": None,
        },
        "metrics": {"test_perplexity": 85.2, "ngram_perplexity": 140.0},
        "generation": {"max_context": 128, "max_new_tokens": 64, "max_batch_size": 16},
    }
    document.update(overrides)
    return document


def good_files(**overrides: bytes | None) -> dict[str, bytes]:
    """The members of a valid artifact; an override of None leaves that member out."""
    files: dict[str, bytes | None] = {
        "model/1/saved_model.pb": SAVED_MODEL,
        "model/1/fingerprint.pb": b"fp",
        "model/1/variables/variables.index": b"index",
        "model/1/variables/variables.data-00000-of-00001": b"weights",
        INFERENCE_PATH: PAIR_HANDLERS,
        "code/requirements.txt": b"tokenizers==0.22.2\n",
        "code/tokenizer.json": TOKENIZER,
        METADATA_PATH: json.dumps(metadata_dict()).encode(),
    }
    files.update(overrides)
    return {name: data for name, data in files.items() if data is not None}


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def folder_member(name: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info, b""


def special_member(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, b""


def tar_bytes(members: Iterable[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def artifact_bytes(
    files: dict[str, bytes] | None = None,
    extra: Iterable[tuple[tarfile.TarInfo, bytes]] = (),
    prefix: str = "",
) -> bytes:
    """A model.tar.gz holding ``files`` (a valid artifact by default) and any ``extra`` members."""
    members = [file_member(prefix + name, data) for name, data in (files or good_files()).items()]
    return gzip.compress(tar_bytes([*members, *extra]), mtime=0)


def check(data: bytes, **kwargs: Any) -> ArtifactReport:
    return validate_artifact(io.BytesIO(data), **kwargs)


def only_problem(report: ArtifactReport) -> str:
    assert len(report.problems) == 1, report.problems
    return report.problems[0]


class ForwardOnly:
    """A stream that can only be read forwards, in small pieces, like an S3 body."""

    def __init__(self, data: bytes, piece: int = 997) -> None:
        self._data = io.BytesIO(data)
        self._piece = piece

    def read(self, size: int = -1, /) -> bytes:
        if size is None or size < 0:
            size = self._piece
        return self._data.read(min(size, self._piece))

    def seekable(self) -> bool:
        return False

    def seek(self, *args: object) -> int:
        raise io.UnsupportedOperation("seek")

    def tell(self) -> int:
        raise io.UnsupportedOperation("tell")


# --------------------------------------------------------------------------- a good artifact


def test_good_artifact_passes() -> None:
    report = check(artifact_bytes(), expected_variant="lstm")

    assert report.ok, report.problems
    assert report.problems == []
    assert report.saved_model_dir == "model/1"
    assert report.members == len(good_files())
    assert report.total_bytes == sum(len(data) for data in good_files().values())
    assert report.metadata is not None
    assert report.metadata.kind == "lstm"
    assert report.metadata.tokenizer.path == "code/tokenizer.json"


XLA_ATTRIBUTE = b"\n\x0f_XlaMustCompile\x12\x02(\x01"  # "_XlaMustCompile": true


@pytest.mark.parametrize(
    "graph",
    [
        b"graph" + XLA_ATTRIBUTE + b"rest",
        # Across the 1 MiB boundary of the streamed reads (the graph is read in 1 MiB pieces).
        b"\x00" * (1024 * 1024 - 7) + XLA_ATTRIBUTE + b"\x00" * 100,
        b"\x00" * (1024 * 1024 - 1) + XLA_ATTRIBUTE + b"\x00" * 100,
    ],
)
def test_a_saved_model_compiled_with_xla_is_refused_unless_allowed(graph: bytes) -> None:
    data = artifact_bytes(good_files(**{"model/1/saved_model.pb": saved_model_pb(graph=graph)}))

    problem = only_problem(check(data))
    assert "SavedModel model/1 has functions compiled with XLA" in problem
    assert "without --xla_cpu_compilation_enabled" in problem
    assert check(data, allow_xla=True).ok


def test_a_graph_that_names_xla_without_requiring_it_passes() -> None:
    off = b"graph\n\x0f_XlaMustCompile\x12\x02(\x00rest"  # "_XlaMustCompile": false
    graph = saved_model_pb(graph=off)
    assert check(artifact_bytes(good_files(**{"model/1/saved_model.pb": graph}))).ok


def test_tar_of_a_folder_with_dot_slash_names_passes() -> None:
    folder = tarfile.TarInfo(".")
    folder.type = tarfile.DIRTYPE
    model_dir = tarfile.TarInfo("./model")
    model_dir.type = tarfile.DIRTYPE

    report = check(artifact_bytes(prefix="./", extra=[(folder, b""), (model_dir, b"")]))

    assert report.ok, report.problems
    assert report.saved_model_dir == "model/1"


def test_saved_model_at_the_archive_root_is_served_as_model() -> None:
    files = {
        ("1/" + name.removeprefix("model/1/") if name.startswith("model/1/") else name): data
        for name, data in good_files().items()
    }

    report = check(artifact_bytes(files))

    assert report.ok, report.problems
    assert report.saved_model_dir == "1"


def test_assets_and_other_model_names_pass() -> None:
    files = {name.replace("model/", "tweets/", 1): data for name, data in good_files().items()}
    files["tweets/1/assets/vocab.txt"] = b"a\nb\n"
    files[METADATA_PATH] = json.dumps(metadata_dict(model_name="tweets")).encode()

    report = check(artifact_bytes(files))

    assert report.ok, report.problems
    assert report.saved_model_dir == "tweets/1"


def test_streams_from_a_forward_only_source_in_small_pieces() -> None:
    report = validate_artifact(ForwardOnly(artifact_bytes(), piece=7), expected_variant="lstm")

    assert report.ok, report.problems


def test_reads_a_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "model.tar.gz"
    path.write_bytes(artifact_bytes())

    with path.open("rb") as handle:
        assert validate_artifact(handle).ok


def test_inference_code_is_parsed_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').close()\n".encode() + PAIR_HANDLERS

    report = check(artifact_bytes(good_files(**{INFERENCE_PATH: code})))

    assert report.ok, report.problems
    assert not marker.exists()


def test_report_as_dict_is_json_ready() -> None:
    answer = check(artifact_bytes()).as_dict()

    assert json.loads(json.dumps(answer)) == answer
    assert answer["ok"] is True
    assert answer["metadata"]["variant"] == "lstm"


# --------------------------------------------------------------------------- not a tar.gz


def test_empty_file() -> None:
    assert "empty" in only_problem(check(b""))


def test_not_gzip() -> None:
    assert "not gzip-compressed" in only_problem(check(b"hello, this is text" * 40))


def test_plain_tar_is_named() -> None:
    plain = tar_bytes(file_member(name, data) for name, data in good_files().items())

    assert "tar archive that is not gzip-compressed" in only_problem(check(plain))


def test_zip_is_named() -> None:
    assert "zip archive" in only_problem(check(b"PK\x03\x04" + b"\x00" * 600))


def test_gzip_without_a_tar_inside() -> None:
    problem = only_problem(check(gzip.compress(b"just some text, not a tar archive" * 30)))

    assert "does not hold a tar archive" in problem


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_gzip(keep: float) -> None:
    whole = artifact_bytes()

    report = check(whole[: int(len(whole) * keep)])

    assert not report.ok
    assert any("truncated" in problem for problem in report.problems), report.problems
    # The rest of the archive was never seen: no guesses about missing files.
    assert not any(problem.startswith("missing") for problem in report.problems)


def test_truncated_tar_inside_a_complete_gzip() -> None:
    tar = tar_bytes(file_member(name, data) for name, data in good_files().items())

    report = check(gzip.compress(tar[:1536]))

    assert not report.ok
    assert any("truncated" in problem for problem in report.problems), report.problems


def test_tar_cut_at_a_header_boundary_is_truncated() -> None:
    # tarfile alone reads a tar that simply stops after a member as complete.
    tar = tar_bytes(file_member(name, data) for name, data in good_files().items())

    report = check(gzip.compress(tar[:2048]))

    assert any("truncated" in problem for problem in report.problems), report.problems


def test_damaged_compressed_data() -> None:
    whole = bytearray(artifact_bytes())
    whole[-6] ^= 0xFF  # inside the CRC / length trailer

    report = check(bytes(whole))

    assert not report.ok
    assert any("damaged" in problem or "CRC" in problem for problem in report.problems)


def test_bytes_after_the_gzip_stream() -> None:
    problem = only_problem(check(artifact_bytes() + b"garbage after the end"))

    assert "after its gzip stream" in problem


# --------------------------------------------------------------------------- unsafe members


@pytest.mark.parametrize(
    ("member", "words"),
    [
        (file_member("/etc/cron.d/evil", b"x"), "absolute path"),
        (file_member("model/../../evil.py", b"x"), "'..'"),
        (file_member("..", b"x"), "'..'"),
        (special_member("code/link.py", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
        (special_member("code/hard.py", tarfile.LNKTYPE, "code/inference.py"), "hard link"),
        (special_member("dev/tty0", tarfile.CHRTYPE), "character device"),
        (special_member("dev/sda", tarfile.BLKTYPE), "block device"),
        (special_member("code/pipe", tarfile.FIFOTYPE), "FIFO"),
        (special_member("code/odd", b"Z"), "unsupported tar type"),
    ],
)
def test_unsafe_member_is_named(member: tuple[tarfile.TarInfo, bytes], words: str) -> None:
    problem = only_problem(check(artifact_bytes(extra=[member])))

    assert f"'{member[0].name}'" in problem
    assert words in problem


def test_unsafe_member_does_not_count_as_a_required_file() -> None:
    files = good_files(**{METADATA_PATH: None})
    evil = file_member("/metadata.json", json.dumps(metadata_dict()).encode())

    report = check(artifact_bytes(files, extra=[evil]))

    assert any("absolute path" in p for p in report.problems)
    assert any(p.startswith(f"missing {METADATA_PATH}") for p in report.problems)


def test_duplicate_member() -> None:
    again = file_member(INFERENCE_PATH, b"def handler(data, context):\n    return 1\n")

    problem = only_problem(check(artifact_bytes(extra=[again])))

    assert f"'{INFERENCE_PATH}'" in problem
    assert "more than once" in problem


@pytest.mark.parametrize(
    ("members", "words"),
    [
        (
            [file_member("model/1/assets", b"x"), file_member("model/1/assets/a.txt", b"y")],
            "member 'model/1/assets/a.txt': 'model/1/assets/a.txt' lies in 'model/1/assets', "
            "which the earlier member 'model/1/assets' makes a file; unpacking fails there "
            "(Not a directory)",
        ),
        (
            [file_member("model/1/assets/a.txt", b"y"), file_member("model/1/assets", b"x")],
            "member 'model/1/assets': 'model/1/assets' is a file but the earlier member "
            "'model/1/assets/a.txt' lies in it, so it must be a folder",
        ),
        (
            [file_member("code/notes", b"x"), folder_member("code/notes/old/")],
            "member 'code/notes/old': 'code/notes/old' lies in 'code/notes', which the earlier "
            "member 'code/notes' makes a file",
        ),
        (
            [file_member("code/notes", b"x"), folder_member("./code/notes")],
            "member './code/notes': 'code/notes' is a folder but the earlier member 'code/notes' "
            "makes it a file",
        ),
        (
            [folder_member("code/notes"), file_member("code/notes", b"x")],
            "member 'code/notes': 'code/notes' is a file but the earlier member 'code/notes' "
            "makes it a folder",
        ),
        (
            [file_member("code/notes.txt", b"x"), file_member("./code/notes.txt", b"y")],
            "member './code/notes.txt': 'code/notes.txt' appears more than once (also as member "
            "'code/notes.txt')",
        ),
        # A file named like the folder of the required files, after them.
        (
            [file_member("code", b"x")],
            "member 'code': 'code' is a file but the earlier member 'code/inference.py' lies in it",
        ),
    ],
)
def test_members_that_cannot_be_unpacked_together_are_refused(
    members: list[tuple[tarfile.TarInfo, bytes]], words: str
) -> None:
    problem = only_problem(check(artifact_bytes(extra=members)))

    assert words in problem


def test_a_file_before_the_members_inside_it_refuses_them() -> None:
    members = [file_member(name, data) for name, data in good_files().items()]

    report = check(gzip.compress(tar_bytes([file_member("code", b"x"), *members])))

    texts = "\n".join(report.problems)
    assert (
        "member 'code/inference.py': 'code/inference.py' lies in 'code', which the earlier "
        "member 'code' makes a file"
    ) in texts
    assert f"missing {INFERENCE_PATH}" in texts


def test_a_folder_named_twice_and_files_in_it_pass() -> None:
    folders = [folder_member("code/extra"), folder_member("./code/extra/")]

    report = check(artifact_bytes(extra=[*folders, file_member("code/extra/a.txt", b"a")]))

    assert report.ok, report.problems


def test_unprintable_member_name_is_escaped() -> None:
    problem = only_problem(check(artifact_bytes(extra=[file_member("/bad\nname", b"x")])))

    assert ascii("/bad\nname") in problem
    assert "\n" not in problem


# --------------------------------------------------------------------------- limits


def test_member_count_limit_stops_reading() -> None:
    report = check(artifact_bytes(), limits=ArtifactLimits(max_members=3))

    problem = only_problem(report)
    assert "more than 3 members" in problem
    assert report.members == 4


def test_total_size_limit_stops_reading_before_the_data() -> None:
    big = file_member("model/1/variables/variables.data-00000-of-00001", b"w" * 5000)
    files = good_files(**{"model/1/variables/variables.data-00000-of-00001": None})

    report = check(artifact_bytes(files, extra=[big]), limits=ArtifactLimits(max_total_bytes=4000))

    problem = only_problem(report)
    assert "more than 4000 bytes" in problem
    assert "'model/1/variables/variables.data-00000-of-00001' (5000 bytes)" in problem


def test_metadata_size_limit() -> None:
    problem = only_problem(check(artifact_bytes(), limits=ArtifactLimits(max_metadata_bytes=100)))

    assert METADATA_PATH in problem
    assert "100-byte limit" in problem


def test_code_file_size_limit() -> None:
    problem = only_problem(check(artifact_bytes(), limits=ArtifactLimits(max_code_file_bytes=50)))

    assert INFERENCE_PATH in problem
    assert "50-byte limit" in problem


def test_tokenizer_size_limit() -> None:
    problem = only_problem(check(artifact_bytes(), limits=ArtifactLimits(max_tokenizer_bytes=10)))

    assert "code/tokenizer.json" in problem
    assert "10-byte limit" in problem


def test_oversized_headers_are_cut_off() -> None:
    # A pax record is read into memory by tarfile: the decompression ceiling bounds it.
    bloated = tarfile.TarInfo("code/notes.txt")
    bloated.pax_headers = {"comment": "x" * 200_000}

    report = check(
        artifact_bytes(extra=[(bloated, b"")]),
        limits=ArtifactLimits(max_members=10, max_total_bytes=10_000),
    )

    assert any("far larger than its members need" in p for p in report.problems), report.problems


def test_member_problems_are_capped_and_counted() -> None:
    links = [special_member(f"code/l{i}", tarfile.SYMTYPE, "x") for i in range(12)]

    report = check(artifact_bytes(extra=links), limits=ArtifactLimits(max_member_problems=5))

    assert len(report.problems) == 6
    assert report.problems[-1] == "... and 7 more problems with individual members"


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_limits_must_be_positive_integers(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_members"):
        ArtifactLimits(max_members=bad)


# --------------------------------------------------------------------------- missing files


@pytest.mark.parametrize(
    ("removed", "words"),
    [
        (METADATA_PATH, f"missing {METADATA_PATH}"),
        (INFERENCE_PATH, f"missing {INFERENCE_PATH}"),
        ("model/1/saved_model.pb", "no SavedModel"),
        ("model/1/variables/variables.index", "model/1 has no variables/variables.index"),
        ("model/1/variables/variables.data-00000-of-00001", "no variables/variables.data-* shard"),
        ("code/tokenizer.json", "missing the tokenizer file code/tokenizer.json"),
    ],
)
def test_missing_required_file(removed: str, words: str) -> None:
    problem = only_problem(check(artifact_bytes(good_files(**{removed: None}))))

    assert words in problem


def test_missing_variables_shard() -> None:
    files = good_files(
        **{
            "model/1/variables/variables.data-00000-of-00001": None,
            "model/1/variables/variables.data-00000-of-00003": b"a",
            "model/1/variables/variables.data-00002-of-00003": b"c",
        }
    )

    problem = only_problem(check(artifact_bytes(files)))

    assert "lacks variables/variables.data-00001-of-00003" in problem


def test_saved_model_outside_a_version_folder_is_pointed_out() -> None:
    files = good_files(**{"model/1/saved_model.pb": None, "model/saved_model.pb": b"graph"})

    problem = only_problem(check(artifact_bytes(files)))

    assert "no SavedModel (found model/saved_model.pb, not in a numbered folder)" in problem


def test_two_saved_model_versions_are_ambiguous() -> None:
    files = good_files(
        **{
            "model/2/saved_model.pb": b"graph",
            "model/2/variables/variables.index": b"i",
            "model/2/variables/variables.data-00000-of-00001": b"d",
        }
    )

    report = check(artifact_bytes(files))

    problem = only_problem(report)
    assert "more than one SavedModel version folder (model/1, model/2)" in problem
    assert report.saved_model_dir is None


# --------------------------------------------------------------------------- metadata.json


def with_metadata(document: dict[str, Any] | bytes) -> bytes:
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    return artifact_bytes(good_files(**{METADATA_PATH: raw}))


def test_metadata_not_json() -> None:
    report = check(with_metadata(b"{'kind': 'lstm',"))

    problem = only_problem(report)
    assert problem.startswith(f"{METADATA_PATH} is not valid JSON")
    assert report.metadata is None


def test_metadata_not_an_object() -> None:
    problem = only_problem(check(with_metadata(b"[1, 2]")))

    assert problem.startswith(f"{METADATA_PATH}: ")


def test_schema_errors_are_one_readable_line_each_with_their_field_path() -> None:
    document = metadata_dict(kind="transformer", model_version="1")
    document["tokenizer"] = {**document["tokenizer"], "sha256": "abc"}
    del document["generation"]

    report = check(with_metadata(document))

    assert sorted(report.problems) == sorted(
        [
            f"{METADATA_PATH}: kind: Input should be 'lstm' or 'gpt2' (got 'transformer')",
            f"{METADATA_PATH}: model_version: Input should be a valid integer (got '1')",
            f"{METADATA_PATH}: tokenizer.sha256: String should match pattern '^[0-9a-f]{{64}}$' (got 'abc')",
            f"{METADATA_PATH}: generation: Field required",
        ]
    )


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"created": "2026-11-01T12:00:00"}, "created: Input should have timezone info"),
        ({"schema_version": 2}, "schema_version: Input should be 1"),
        ({"schema_version": True}, "schema_version: Value error, must be the number 1"),
        ({"variant": "bad_name"}, "variant: String should match pattern"),
        ({"variant": "a" + "-" * 70 + "b"}, "variant: String should have at most 63 characters"),
        ({"version": ".hidden"}, "version: String should match pattern"),
        ({"model_version": 1.0}, "model_version: Input should be a valid integer"),
        (
            {"metrics": {"test_perplexity": "85"}},
            "metrics.test_perplexity: Input should be a valid number",
        ),
        (
            {"hyperparameters": {"layers": [1, 2]}},
            "hyperparameters.layers: Input should be a number, string, boolean or null, not list",
        ),
    ],
)
def test_schema_error_lines(change: dict[str, Any], words: str) -> None:
    problem = only_problem(check(with_metadata(metadata_dict(**change))))

    assert words in problem


def test_non_finite_numbers_are_rejected() -> None:
    raw = json.dumps(metadata_dict()).replace("85.2", "NaN").replace("0.001", "Infinity").encode()

    problems = check(with_metadata(raw)).problems

    assert any(
        p.startswith(f"{METADATA_PATH}: metrics.test_perplexity: Input should be a finite number")
        for p in problems
    )
    assert any(
        p.startswith(
            f"{METADATA_PATH}: hyperparameters.learning_rate: Input should be a finite number"
        )
        for p in problems
    )


def test_field_names_from_the_file_cannot_break_a_line() -> None:
    problem = only_problem(check(with_metadata(metadata_dict(metrics={"a\nb": "x"}))))

    assert problem.startswith(f"{METADATA_PATH}: metrics.a\\nb: Input should be a valid number")


@pytest.mark.parametrize(
    ("tokenizer", "words"),
    [
        (
            {"path": "../tokenizer.json"},
            "tokenizer.path: Value error, must be a relative archive path",
        ),
        (
            {"path": "/code/tokenizer.json"},
            "tokenizer.path: Value error, must be a relative archive path",
        ),
        ({"eos_token_id": 6}, "eos_token_id 6 is outside the vocabulary (vocab_size 6)"),
        ({"vocab_size": 0}, "tokenizer.vocab_size: Input should be greater than 0"),
        ({"type": "wordpiece"}, "tokenizer.type: Input should be 'byte_level_bpe'"),
    ],
)
def test_tokenizer_rules(tokenizer: dict[str, Any], words: str) -> None:
    document = metadata_dict()
    document["tokenizer"] = {**document["tokenizer"], **tokenizer}

    problem = only_problem(check(with_metadata(document)))

    assert words in problem


def test_unknown_keys_are_kept() -> None:
    document = metadata_dict(notes="trained on a laptop")
    document["generation"] = {**document["generation"], "stop_sequences": ["\n"]}

    report = check(with_metadata(document))

    assert report.ok, report.problems
    assert report.metadata is not None
    dumped = json.loads(report.metadata.model_dump_json())
    assert dumped["notes"] == "trained on a laptop"
    assert dumped["generation"]["stop_sequences"] == ["\n"]


def test_metadata_round_trips_through_json() -> None:
    written = ArtifactMetadata.model_validate_json(json.dumps(metadata_dict()))

    read_back = ArtifactMetadata.model_validate_json(written.model_dump_json())

    assert read_back == written
    assert read_back.generation.signature == "serving_default"
    assert read_back.created == datetime(2026, 11, 1, 12, tzinfo=UTC)


def test_build_side_writes_metadata_from_python_values() -> None:
    document = metadata_dict(created=datetime(2026, 11, 1, 12, tzinfo=UTC))

    metadata = ArtifactMetadata(**document)

    assert json.loads(metadata.model_dump_json())["created"] == "2026-11-01T12:00:00Z"


def test_metadata_is_immutable() -> None:
    metadata = ArtifactMetadata.model_validate_json(json.dumps(metadata_dict()))

    with pytest.raises(ValidationError):
        metadata.variant = "gpt2"


# --------------------------------------------------------------------------- code/inference.py


def with_inference(source: str) -> bytes:
    return artifact_bytes(good_files(**{INFERENCE_PATH: source.encode()}))


@pytest.mark.parametrize(
    "source",
    [
        "def handler(data, context):\n    return b'[]', 'application/json'\n",
        "from serving import handler\n",
        "import serving\nhandler = serving.make_handler()\n",
        "try:\n    from fast import handler\nexcept ImportError:\n    def handler(data, context, *extra):\n        pass\n",
        "def handler(*args):\n    pass\n",
        "def handler(data, context, options=None, *, debug=False):\n    pass\n",
        "def input_handler(data, context): ...\ndef output_handler(response, context): ...\n",
        "from helpers import *\n",
    ],
)
def test_accepted_handlers(source: str) -> None:
    report = check(with_inference(source))

    assert report.ok, report.problems


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("def handler(data, context)\n    pass\n", "does not parse: line 1"),
        ("print('hello')\n", "defines neither handler(data, context) nor the pair"),
        ("def input_handler(data, context): ...\n", "defines input_handler but not output_handler"),
        (
            "def output_handler(response, context): ...\n",
            "defines output_handler but not input_handler",
        ),
        ("async def handler(data, context): ...\n", "handler is 'async def'"),
        (
            "def handler(data): ...\n",
            "handler must accept two positional arguments (data, context)",
        ),
        (
            "def handler(data, context, extra): ...\n",
            "handler must accept two positional arguments",
        ),
        (
            "def handler(data, context, *, key): ...\n",
            "handler must accept two positional arguments",
        ),
        (
            "def input_handler(data, context): ...\ndef output_handler(response): ...\n",
            "output_handler must accept two positional arguments (response, context)",
        ),
        ("class Box:\n    def handler(self, data, context): ...\n", "defines neither"),
        ("x = 1\0\n", "does not parse"),
    ],
)
def test_rejected_handlers(source: str, words: str) -> None:
    problem = only_problem(check(with_inference(source)))

    assert problem.startswith(INFERENCE_PATH)
    assert words in problem


def test_warnings_from_parsing_the_code_are_not_printed() -> None:
    source = "x = 1if 1 else 2\ndef handler(data, context): ...\n"

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = check(with_inference(source))

    assert report.ok, report.problems


# --------------------------------------------------------------------------- agreement checks


def test_variant_must_match_the_upload() -> None:
    problem = only_problem(check(artifact_bytes(), expected_variant="gpt2"))

    assert "says variant 'lstm'" in problem
    assert "for variant 'gpt2'" in problem


def test_metadata_must_name_the_saved_model_folder() -> None:
    report = check(with_metadata(metadata_dict(model_name="gpt2", model_version=3)))

    problem = only_problem(report)
    assert "model_name 'gpt2' version 3" in problem
    assert "model/1" in problem


def test_tokenizer_hash_must_match() -> None:
    other = TOKENIZER + b"\n"  # the same tokens, other bytes
    problem = only_problem(check(artifact_bytes(good_files(**{"code/tokenizer.json": other}))))

    assert "code/tokenizer.json has sha256" in problem
    assert TOKENIZER_SHA in problem


# --- generation limits


@pytest.mark.parametrize(("context", "new"), [(64, 63), (2, 1), (1024, 128)])
def test_max_new_tokens_below_the_context_passes(context: int, new: int) -> None:
    generation = {"max_context": context, "max_new_tokens": new, "max_batch_size": 16}

    report = check(with_metadata(metadata_dict(generation=generation)))

    assert report.ok, report.problems


@pytest.mark.parametrize(("context", "new"), [(64, 64), (64, 100), (1, 1)])
def test_max_new_tokens_must_leave_room_for_a_prompt(context: int, new: int) -> None:
    generation = {"max_context": context, "max_new_tokens": new, "max_batch_size": 16}

    problem = only_problem(check(with_metadata(metadata_dict(generation=generation))))

    assert problem == (
        f"{METADATA_PATH}: generation: Value error, max_new_tokens {new} leaves no room for a "
        f"prompt in max_context {context}: the context holds the end-of-text start token and the "
        f"new tokens, so max_new_tokens must be at most {context - 1}"
    )


# --- the serving signature


def with_graph(graph: bytes, signature: str = "serving_default") -> bytes:
    """A valid artifact but for ``graph`` as saved_model.pb and the signature metadata names."""
    document = metadata_dict()
    document["generation"] = {**document["generation"], "signature": signature}
    files = {"model/1/saved_model.pb": graph, METADATA_PATH: json.dumps(document).encode()}
    return artifact_bytes(good_files(**files))


def signatures_found(graph: bytes) -> str:
    """The signature names validation reads from ``graph``, as its problem lists them."""
    problem = only_problem(check(with_graph(graph, "absent")))
    found = re.search(r"has no such signature \(it has (.*)\); export", problem)
    assert found, problem
    return found.group(1)


def pb_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def pb_fixed64(number: int) -> bytes:
    return varint(number << 3 | 1) + b"\x12" * 8


def pb_fixed32(number: int) -> bytes:
    return varint(number << 3 | 5) + b"\x12" * 4


def test_the_signature_must_be_in_the_saved_model() -> None:
    problem = only_problem(check(with_graph(SAVED_MODEL, "generate")))

    assert problem == (
        f"{METADATA_PATH} says generation.signature 'generate' but model/1/saved_model.pb has no "
        "such signature (it has 'next_token_logits', 'score', 'serving_default'); export the "
        "model with that signature or fix the metadata"
    )


@pytest.mark.parametrize("signature", ["score", "next_token_logits"])
def test_any_signature_of_the_saved_model_passes(signature: str) -> None:
    assert check(with_graph(SAVED_MODEL, signature)).ok


def test_the_init_op_is_not_a_signature_to_serve() -> None:
    problem = only_problem(check(with_graph(SAVED_MODEL, "__saved_model_init_op")))

    assert "says generation.signature '__saved_model_init_op'" in problem
    assert "(it has 'next_token_logits', 'score', 'serving_default')" in problem


@pytest.mark.parametrize(
    "graph", [b"", saved_model_pb(signatures=()), saved_model_pb(["__saved_model_init_op"])]
)
def test_a_saved_model_without_signatures(graph: bytes) -> None:
    assert signatures_found(graph) == "none"


def test_the_protobuf_reader_skips_every_other_field() -> None:
    others = pb_varint(9, 2**63) + pb_fixed64(10) + pb_fixed32(11) + pb_field(12, b"\xff" * 300)
    # An entry may carry other fields, and the key twice (the last one counts).
    entry = pb_field(
        5,
        pb_varint(3, 1) + pb_field(1, b"first") + pb_fixed32(4) + pb_field(1, b"l\xc3\xa4ter"),
    )
    first = others + pb_field(2, b"g" * 200) + entry + pb_field(4, pb_field(1, b"collection"))
    # A second MetaGraphDef, and an entry without a key (the empty name).
    second = signature_entry("serving_default") + pb_field(5, pb_field(2, b"no key"))
    graph = others + pb_field(2, first) + pb_fixed64(3) + pb_field(2, second)

    assert signatures_found(graph) == "'', 'läter', 'serving_default'"


def test_a_signature_name_longer_than_metadata_json_can_hold_is_left_out() -> None:
    graph = saved_model_pb(["serving_default", "x" * 2000])
    small = ArtifactLimits(max_metadata_bytes=1500)

    problem = only_problem(check(with_graph(graph, "absent"), limits=small))

    assert "(it has 'serving_default');" in problem
    # Within the default limits the long name is read (and shown cut short).
    assert signatures_found(graph) == "'serving_default', '" + "x" * 200 + "...'"


@pytest.mark.parametrize(
    ("graph", "words"),
    [
        (b"\x08\x01fake graph", "the field at byte 2 has wire type 6"),
        (b"\x0b\x0c", "the field at byte 0 has wire type 3"),  # groups are not read
        (b"\x08\x01\x0c", "the field at byte 2 has wire type 4"),
        (b"\x08\x01\x0f", "the field at byte 2 has wire type 7"),
        (b"\x02\x00", "the field at byte 0 has number 0"),
        (b"\x08\xff", "it ends at byte 2, inside a field"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "the varint at byte 1 is longer than 10 bytes"),
        (
            b"\x12\x05abc",
            "the field at byte 0 is 5 bytes long, past the end of its message at byte 5",
        ),
        (b"\x09abc", "it ends at byte 4, inside a field"),
        (
            pb_field(2, b"\x2a\x09abc") + b"x" * 20,
            "the field at byte 2 is 9 bytes long, past the end of its message at byte 7",
        ),
        (
            pb_field(2, b"\x09abc") + b"x" * 20,
            "the field at byte 2 runs past the end of its message",
        ),
        (pb_field(2, signature_entry(b"\xff\xfe")), "a signature name is not UTF-8"),
        (b"\x08\x01" * 100_001, "it has more than 100000 fields outside its graph"),
    ],
)
def test_a_saved_model_that_is_not_protobuf_is_refused(graph: bytes, words: str) -> None:
    problem = only_problem(check(with_graph(graph)))

    assert problem == (
        f"model/1/saved_model.pb is not a readable SavedModel protobuf ({words}); export the "
        "model again with tf.saved_model.save"
    )


def test_the_saved_model_is_read_once_from_a_forward_only_stream() -> None:
    graph = saved_model_pb(["serving_default"], graph=b"\x00" * 3_000_000 + XLA_ATTRIBUTE)
    data = artifact_bytes(good_files(**{"model/1/saved_model.pb": graph}))

    report = validate_artifact(ForwardOnly(data, piece=4093), allow_xla=True)

    assert report.ok, report.problems
    assert not validate_artifact(ForwardOnly(data, piece=4093)).ok


# --- the tokenizer's vocabulary


def with_tokenizer(raw: bytes, **fields: Any) -> bytes:
    """A valid artifact but for the tokenizer file ``raw`` (its hash written) and ``fields``."""
    document = metadata_dict()
    sha = hashlib.sha256(raw).hexdigest()
    document["tokenizer"] = {**document["tokenizer"], "sha256": sha, **fields}
    files = {"code/tokenizer.json": raw, METADATA_PATH: json.dumps(document).encode()}
    return artifact_bytes(good_files(**files))


# Ids 0-4 and 6: six ids, none at 5.
GAPPED = tokenizer_json(added=[added_token(0, EOS, special=True), added_token(6, "<url>")])


@pytest.mark.parametrize(
    ("raw", "fields", "words"),
    [
        (
            TOKENIZER,
            {"vocab_size": 8000},
            "metadata.json says tokenizer.vocab_size 8000 but code/tokenizer.json has 6 distinct "
            "token ids (model.vocab and added_tokens); write the size of the packaged tokenizer",
        ),
        # An id in both lists (end-of-text, as the build writes it) counts once.
        (TOKENIZER, {"vocab_size": 7}, "tokenizer.vocab_size 7 but code/tokenizer.json has 6"),
        # Added tokens count.
        (tokenizer_json(added=[]), {}, "tokenizer.vocab_size 6 but code/tokenizer.json has 5"),
        (
            TOKENIZER,
            {"eos_token_id": 1},
            "metadata.json says tokenizer.eos_token_id 1 but code/tokenizer.json has the token "
            "'a' at that id, not '<|endoftext|>'; write the id of '<|endoftext|>'",
        ),
        (
            GAPPED,
            {"eos_token_id": 5},
            "tokenizer.eos_token_id 5 but code/tokenizer.json has no token at that id",
        ),
        (
            GAPPED,
            {"pad_token_id": 5},
            "metadata.json says tokenizer.pad_token_id 5 but code/tokenizer.json has no token "
            "with that id; write the id of a token it has",
        ),
    ],
)
def test_the_tokenizer_must_agree_with_the_metadata(
    raw: bytes, fields: dict[str, Any], words: str
) -> None:
    problem = only_problem(check(with_tokenizer(raw, **fields)))

    assert words in problem


def test_an_added_token_wins_over_the_vocabulary_token_of_its_id() -> None:
    # As when the tokenizer decodes: id 0 is "<|startoftext|>" here, whatever model.vocab says.
    raw = tokenizer_json(added=[added_token(0, "<|startoftext|>"), added_token(5, "<url>")])

    problem = only_problem(check(with_tokenizer(raw)))

    assert "has the token '<|startoftext|>' at that id, not '<|endoftext|>'" in problem


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"not json at all", "it does not start with '{'"),
        (b'["a", 0]', "it does not start with '{'"),
        (b"{not json", "not valid JSON: Expecting property name enclosed in double quotes"),
        (
            b'{"model": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "not valid JSON: maximum recursion",
        ),
        (b"{}", "no model.vocab object of tokens and their ids"),
        (b'{"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}', "no model.vocab object"),
        (
            tokenizer_json(vocab={EOS: 0, "a": "1"}),
            "model.vocab gives 'a' the id '1', not a token id",
        ),
        (tokenizer_json(vocab={EOS: 0, "a": True}), "model.vocab gives 'a' the id True"),
        (tokenizer_json(vocab={EOS: 0, "a": -1}), "model.vocab gives 'a' the id -1"),
        (tokenizer_json(added={"id": 0}), "added_tokens is not a list"),
        (tokenizer_json(added=[{"content": "x"}]), "an added_tokens entry has no token id"),
        (tokenizer_json(added=["x"]), "an added_tokens entry has no token id"),
        (tokenizer_json(added=[{"id": 7}]), "the added token with id 7 has no string content"),
    ],
)
def test_a_tokenizer_file_that_is_not_tokenizer_json_is_one_problem(raw: bytes, why: str) -> None:
    problem = only_problem(check(with_tokenizer(raw)))

    assert problem.startswith(f"tokenizer file code/tokenizer.json is not tokenizer JSON ({why}")
    assert problem.endswith("; package the tokenizer.json that tokenizers' Tokenizer.save writes")


def test_the_tokenizer_is_checked_wherever_it_lies_in_the_archive() -> None:
    document = metadata_dict()
    document["tokenizer"] = {**document["tokenizer"], "vocab_size": 9}
    tokenizer_first = good_files(**{METADATA_PATH: json.dumps(document).encode()})
    metadata_first = {METADATA_PATH: tokenizer_first[METADATA_PATH], **tokenizer_first}
    assert list(metadata_first).index(METADATA_PATH) == 0

    for files in (tokenizer_first, metadata_first):
        problem = only_problem(check(artifact_bytes(files)))
        assert "tokenizer.vocab_size 9 but code/tokenizer.json has 6" in problem


def test_other_json_files_are_not_taken_for_the_tokenizer() -> None:
    extra = [
        file_member("code/config.json", b'{"a": 1}'),
        file_member("model/1/assets/v.json", b"{"),
    ]

    assert check(artifact_bytes(extra=extra)).ok


def test_every_problem_is_reported_at_once() -> None:
    files = good_files(
        **{
            INFERENCE_PATH: b"print('no handlers')\n",
            "model/1/variables/variables.index": None,
            METADATA_PATH: json.dumps(metadata_dict(kind="rnn", variant="lstm")).encode(),
        }
    )
    extra = [
        special_member("code/link", tarfile.SYMTYPE, "/etc/passwd"),
        file_member("../escape.txt", b"x"),
    ]

    report = check(artifact_bytes(files, extra=extra), expected_variant="gpt2")

    assert not report.ok
    texts = "\n".join(report.problems)
    for words in [
        "'code/link': is a symbolic link",
        "'../escape.txt': path has a '..' part",
        "metadata.json: kind: Input should be 'lstm' or 'gpt2'",
        "code/inference.py defines neither",
        "model/1 has no variables/variables.index",
    ]:
        assert words in texts
    assert len(report.problems) == 5, report.problems


# --------------------------------------------------------------------------- S3 key


@pytest.mark.parametrize(
    ("key", "variant", "version"),
    [
        ("models/lstm/v1/model.tar.gz", "lstm", "v1"),
        ("models/gpt2/2026-11-01.3/model.tar.gz", "gpt2", "2026-11-01.3"),
        ("models/A--b/1_0/model.tar.gz", "A--b", "1_0"),
    ],
)
def test_parse_model_key(key: str, variant: str, version: str) -> None:
    parsed = parse_model_key(key)

    assert parsed == ModelKey(variant=variant, version=version)
    assert parsed.key == key


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("models/lstm/model.tar.gz", "3 '/'-separated parts, not 4"),
        ("/models/lstm/v1/model.tar.gz", "5 '/'-separated parts"),
        ("artifacts/lstm/v1/model.tar.gz", "does not start with 'models/'"),
        ("models/lstm/v1/model.tgz", "the file name is 'model.tgz'"),
        ("models/lstm-/v1/model.tar.gz", "variant 'lstm-' is not"),
        ("models/lstm/.v1/model.tar.gz", "version '.v1' is not"),
        ("models/lstm/v1%2B2/model.tar.gz", "decode it with urllib.parse.unquote_plus"),
        ("models%2Flstm%2Fv1%2Fmodel.tar.gz", "decode it with urllib.parse.unquote_plus"),
    ],
)
def test_parse_model_key_rejects(key: str, words: str) -> None:
    with pytest.raises(
        ValueError, match=re.escape("does not follow models/<variant>/<version>/model.tar.gz")
    ) as caught:
        parse_model_key(key)

    assert words in str(caught.value)


def test_model_key_refuses_invalid_parts() -> None:
    with pytest.raises(ValueError, match="variant"):
        ModelKey(variant="no/slashes", version="v1")
    with pytest.raises(ValueError, match="version"):
        ModelKey(variant="lstm", version="")


# --------------------------------------------------------------------------- properties

SEGMENTS = st.sampled_from(["..", ".", "", "model", "1", "code", "a..b", "é", "sp ace", "\\", "\t"])
NAMES = st.one_of(
    st.lists(SEGMENTS | st.text(max_size=8), max_size=6).map("/".join),
    st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=40),
).filter(lambda name: "\0" not in name)
KINDS = st.sampled_from(
    [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE]
)


def shown_in(name: str, problems: list[str]) -> bool:
    return any(f"'{name}'" in problem or ascii(name) in problem for problem in problems)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(NAMES, KINDS), max_size=8))
def test_arbitrary_members_never_crash(members: list[tuple[str, bytes]]) -> None:
    extra = [
        file_member(name, b"data") if kind == tarfile.REGTYPE else special_member(name, kind, "t")
        for name, kind in members
    ]

    report = check(artifact_bytes(extra=extra))

    assert isinstance(report, ArtifactReport)
    assert all(isinstance(problem, str) and "\n" not in problem for problem in report.problems)


@settings(max_examples=150, deadline=None)
@given(NAMES, st.booleans())
def test_escaping_names_are_always_rejected(name: str, absolute: bool) -> None:
    # Ending in a plain segment: tarfile drops trailing slashes when it reads names back.
    name = f"/{name}/x" if absolute else f"{name}/../x"

    report = check(artifact_bytes(extra=[file_member(name, b"data")]))

    assert not report.ok
    assert shown_in(name, report.problems), report.problems


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_damaged_archives_give_a_report_not_an_exception(data: st.DataObject) -> None:
    whole = bytearray(artifact_bytes())
    cut = data.draw(st.integers(0, len(whole)), label="cut")
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(whole) - 1), st.integers(1, 255)), max_size=4)
    )
    for position, mask in flips:
        whole[position] ^= mask

    report = check(bytes(whole[:cut]))

    if cut < len(whole):
        assert not report.ok


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_saved_model_bytes_give_at_most_one_problem(graph: bytes) -> None:
    data = artifact_bytes(good_files(**{"model/1/saved_model.pb": graph}))

    report = check(data, allow_xla=True)

    assert len(report.problems) <= 1, report.problems
    assert all(p.startswith(("model/1/saved_model.pb", METADATA_PATH)) for p in report.problems)


NAME_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(NAME_TEXT, min_size=1, max_size=4),
    st.binary(max_size=300),
    NAME_TEXT.filter(lambda name: name not in SIGNATURES),
)
def test_every_signature_written_is_read_back(names: list[str], graph: bytes, other: str) -> None:
    saved_model = saved_model_pb(names, graph=graph)

    for name in names:
        report = check(with_graph(saved_model, name), allow_xla=True)
        assert report.ok is (name != "__saved_model_init_op"), report.problems
    if other not in names:
        assert not check(with_graph(saved_model, other), allow_xla=True).ok


VARIANTS = st.from_regex(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", fullmatch=True).filter(
    lambda v: len(v) <= 63
)
VERSIONS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", fullmatch=True)


@given(VARIANTS, VERSIONS)
def test_model_key_round_trips(variant: str, version: str) -> None:
    key = ModelKey(variant=variant, version=version).key

    assert parse_model_key(key) == ModelKey(variant=variant, version=version)


@given(st.text(string.printable + "é/%+", max_size=80))
def test_parse_model_key_accepts_exactly_the_convention(key: str) -> None:
    parts = key.split("/")
    fits = (
        len(parts) == 4
        and parts[0] == "models"
        and parts[3] == "model.tar.gz"
        and is_variant_name(parts[1])
        and is_artifact_version(parts[2])
    )

    if fits:
        assert parse_model_key(key).key == key
    else:
        with pytest.raises(ValueError, match="does not follow"):
            parse_model_key(key)


@given(st.text(max_size=70))
def test_variant_names_follow_sagemakers_rule(value: str) -> None:
    expected = (
        0 < len(value) <= 63
        and value.isascii()
        and all(c.isalnum() or c == "-" for c in value)
        and value[0] != "-"
        and value[-1] != "-"
    )

    assert is_variant_name(value) == expected
