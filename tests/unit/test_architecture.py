"""The README's architecture diagram is drawn from template.yaml and kept up to date."""

from __future__ import annotations

from pathlib import Path

import pytest
from tweetgen_local.architecture import BEGIN, END, configuration, mermaid, update_readme
from tweetgen_local.template import Template

from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def diagram() -> str:
    return mermaid(Template.load(REPO_ROOT / "template.yaml"))


def test_every_function_and_its_triggers_are_drawn(diagram: str) -> None:
    template = Template.load(REPO_ROOT / "template.yaml")
    for logical_id in template.functions:
        assert f"  {logical_id}([" in diagram, logical_id
    assert "EventsQueue -->|SQS| RecorderFunction" in diagram
    assert "Api -->|POST /generations| GenerateFunction" in diagram
    assert "ArtifactBucket -->|EventBridgeRule| RolloutStateMachine" in diagram
    assert "RolloutStateMachine -->|task| RolloutValidateFunction" in diagram


def test_the_readme_shows_the_current_diagram_and_configuration(
    diagram: str, tmp_path: Path
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text((REPO_ROOT / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    config = configuration(Template.load(REPO_ROOT / "template.yaml"))
    assert not update_readme(readme, diagram, config), "README.md is out of date: make diagram"


def test_the_configuration_lists_every_parameter_and_variable() -> None:
    template = Template.load(REPO_ROOT / "template.yaml")
    config = configuration(template)
    for name in template.parameters:
        assert f"| `{name}` |" in config, name
    for function in template.functions.values():
        for variable in function.environment:
            assert f"| `{variable}` |" in config, variable


def test_update_replaces_only_the_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{BEGIN}\nold\n{END}\n\nrest\n", encoding="utf-8")
    assert update_readme(readme, "flowchart LR\n  A --> B\n")
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# x\n\n") and text.endswith(f"{END}\n\nrest\n")
    assert "```mermaid\nflowchart LR\n  A --> B\n```" in text and "old" not in text
    with pytest.raises(ValueError, match="no"):
        (tmp_path / "other.md").write_text("nothing\n")
        update_readme(tmp_path / "other.md", "x")
