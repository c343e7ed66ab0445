"""Training entry point: ``tweetgen train`` as a SageMaker script-mode job, or from a shell.

Inside a SageMaker training job (``SM_MODEL_DIR`` is set) the command line is only SageMaker's
copy of the hyperparameters, so the arguments come from the job's environment instead (see
``tweetgen_build.sagemaker_job.script_mode_argv``). Anywhere else the command line is
``tweetgen train``'s own: ``python model_build/train.py --model lstm --data DIR --out OUT``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run one training and return its exit status (2 for bad input, as ``tweetgen train``)."""
    # Imports wait until here so that a bad environment fails fast, before TensorFlow loads.
    from tweetgen_build.errors import InputError
    from tweetgen_build.sagemaker_job import (
        hyperparameters_from_env,
        in_training_job,
        script_mode_argv,
    )

    environ = os.environ if env is None else env
    if in_training_job(environ):
        try:
            train_argv = script_mode_argv(environ, hyperparameters_from_env(environ))
        except InputError as exc:
            print(f"train.py: error: {exc}", file=sys.stderr)
            return 2
        print("train.py: tweetgen train " + " ".join(train_argv), flush=True)
    else:
        train_argv = list(sys.argv[1:] if argv is None else argv)

    from tweetgen_build.cli import train_main

    return train_main(train_argv)


if __name__ == "__main__":
    sys.exit(main())
