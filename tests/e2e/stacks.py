"""What the end-to-end modules share: a local stack from the real template with both tiny
models rolled out through the real rollout."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tweetgen_local.deploy import deploy_model, find_target
from tweetgen_local.stack import LocalStack, StackOptions

from tests.conftest import REPO_ROOT


@contextmanager
def rolled_out_stack(
    state: Path, artifacts: Mapping[str, Path], overrides: Mapping[str, Any] | None = None
) -> Iterator[LocalStack]:
    """A started stack in ``state`` serving version v1 of the lstm and gpt2 artifacts."""
    stack = LocalStack(
        StackOptions(
            state_dir=state,
            template=REPO_ROOT / "template.yaml",
            parameter_overrides=dict(overrides or {}),
        ),
        log=lambda _: None,
    )
    stack.start()
    try:
        target = find_target(state)
        for variant in ("lstm", "gpt2"):
            status = deploy_model(
                artifacts[variant],
                variant=variant,
                version="v1",
                target=target,
                wait=True,
                timeout_s=180,
                out=lambda _: None,
            )
            assert status == 0, f"{variant} did not roll out"
        yield stack
    finally:
        stack.stop()
