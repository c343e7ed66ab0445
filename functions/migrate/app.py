"""The deploy-time schema migration, as a CloudFormation custom resource.

Create and Update apply the missing versioned migrations (the same code the local stack and
the tests run, serialised by a database lock); Delete leaves the data alone. The resource's
``SchemaVersion`` property changes with each new migration, so a deploy that brings one runs it.
"""

from __future__ import annotations

import gc

gc.disable()  # until coldstart.setup_done() at the end of this module

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from tweetgen import coldstart
from tweetgen.adapters.cloudformation import CustomResourceResult, custom_resource
from tweetgen.adapters.database import Database, applied_versions
from tweetgen.adapters.tracing import new_tracer

logger = Logger()
tracer = new_tracer()

PHYSICAL_ID = "tweetgen-schema"


@custom_resource
def migrate(event: dict[str, Any], context: LambdaContext) -> CustomResourceResult:
    if event["RequestType"] == "Delete":
        logger.info("stack delete: the schema and its data stay")
        return str(event.get("PhysicalResourceId") or PHYSICAL_ID), {}
    database = Database.from_environment()
    applied = database.migrate()
    current = max(applied_versions(database.engine), default=0)
    logger.info("schema migrated", extra={"applied": applied, "schema_version": current})
    return PHYSICAL_ID, {"SchemaVersion": current, "Applied": ",".join(map(str, applied))}


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.info("custom resource request", extra={"request_type": event.get("RequestType")})
    return migrate(event, context)


coldstart.setup_done()
