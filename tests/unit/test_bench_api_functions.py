"""The cold-start benchmark's replay of a handler's libraries without the project's code."""

from __future__ import annotations

from pathlib import Path

from benchmarks.api_functions import deployed_import, libraries_of


def test_a_handlers_libraries_are_replayed_without_its_own_modules(tmp_path: Path) -> None:
    function = tmp_path / "function"
    layer = tmp_path / "layer"
    (layer / "python" / "tweetgen").mkdir(parents=True)
    function.mkdir()
    (function / "app.py").write_text("import csv\nimport helper\nimport tweetgen.part\n")
    (function / "helper.py").write_text("import fractions\n")
    (layer / "python" / "tweetgen" / "__init__.py").write_text("")
    (layer / "python" / "tweetgen" / "part.py").write_text("import decimal\n")

    ms, loaded, failed = deployed_import(function, layer, function)
    assert ms > 0 and failed == []
    assert {"app", "helper", "tweetgen", "tweetgen.part", "csv", "fractions", "decimal"} <= set(
        loaded
    )
    libraries = libraries_of(loaded, function)
    assert {"csv", "fractions", "decimal"} <= set(libraries)
    assert not {"app", "helper", "tweetgen", "tweetgen.part"} & set(libraries)
    # In load order: the handler imported csv before the layer's decimal.
    assert libraries.index("csv") < libraries.index("decimal")

    _, replayed, failed = deployed_import(function, layer, function, [*libraries, "no_such_lib"])
    assert {"csv", "fractions", "decimal"} <= set(replayed)
    assert not {"app", "helper", "tweetgen", "tweetgen.part"} & set(replayed)
    assert failed == ["no_such_lib"]  # said, not hidden: the floor would be lower by it
