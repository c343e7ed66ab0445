"""The boto3 clients of every adapter: one session, SageMaker's and S3's API models cut to the
calls made.

A botocore client parses its service's whole API model when it is created. SageMaker's lists
434 operations and 3,260 shapes (about 6 MB of JSON once unzipped): creating a SageMaker client
took 84 ms here, against 6 ms for a model of the six operations the adapters call. S3's model
is smaller, but cutting it to the artifact store's calls still takes 92M of the 395M
instructions that creating an S3 client costs (the rest is S3's endpoint rules and
customisations, and what any first client pays). So the layer carries those models
(``service_models/``, written from the pinned botocore by ``scripts/trim_service_models.py``;
``make service-models`` after a botocore upgrade) and the adapters' session looks there before
botocore's own data. Every other file of these services (endpoint rules, paginators, waiters)
and every other service still come from botocore.

An operation that is not in :data:`TRIMMED_OPERATIONS` is not a method of these clients: add it
there and regenerate the model.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

__all__ = ["SERVICE_MODELS", "TRIMMED_OPERATIONS", "client"]

SERVICE_MODELS = Path(__file__).with_name("service_models")

# The operations of a service whose model the layer carries cut down: what the adapters call.
TRIMMED_OPERATIONS: dict[str, tuple[str, ...]] = {
    "sagemaker": (
        "DeleteEndpointConfig",
        "DeleteModel",
        "DescribeEndpoint",
        "DescribeEndpointConfig",
        "DescribeModel",
        "UpdateEndpointWeightsAndCapacities",
    ),
    # The artifact store: the validator streams an object and copies what passed; uploads go
    # whole or multipart.
    # HeadBucket and CreateSession are botocore's own calls: it asks a bucket's region when a
    # request went to the wrong one, and opens a session for a directory bucket.
    "s3": (
        "AbortMultipartUpload",
        "CompleteMultipartUpload",
        "CopyObject",
        "CreateMultipartUpload",
        "CreateSession",
        "GetObject",
        "HeadBucket",
        "HeadObject",
        "PutObject",
        "UploadPart",
    ),
}


def client(service_name: str, **kwargs: Any) -> Any:
    """``boto3.client(service_name, **kwargs)`` from the adapters' session."""
    return _session().client(service_name, **kwargs)


@functools.cache
def _session() -> Any:
    """A boto3 session whose loader reads :data:`SERVICE_MODELS` first (then ``AWS_DATA_PATH``)."""
    import boto3
    import botocore.session

    core = botocore.session.get_session()
    configured = core.get_config_variable("data_path")
    paths = [str(SERVICE_MODELS), *([configured] if configured else [])]
    core.set_config_variable("data_path", os.pathsep.join(paths))
    return boto3.session.Session(botocore_session=core)
