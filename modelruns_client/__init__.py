"""The Python client of the modelruns HTTP API.

    from modelruns_client import Client

    async with Client.from_config() as client:  # MODELRUNS_URL, MODELRUNS_API_KEY or the config file
        run = await client.trigger({"model": {"name": "iris"}, "steps": [...]})
        async for event in client.events(run.id):
            print(event.runseq, event.type)

It needs aiohttp and pydantic only (not the services' dependencies); `SyncClient` is the same
without an event loop.
"""

from modelruns_client.client import Client
from modelruns_client.config import ClientConfig, load_config
from modelruns_client.errors import (
    ApiError,
    BadRequest,
    ClientError,
    Forbidden,
    IdempotencyKeyReused,
    InvalidResponse,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    TransportError,
    Unauthorized,
)
from modelruns_client.models import (
    ModelRef,
    Problem,
    Run,
    RunEvent,
    RunStatus,
    Step,
    StepSpec,
    StepStatus,
    TestResult,
    TestStatus,
    TriggerRequest,
)
from modelruns_client.retry import Retry
from modelruns_client.sync import SyncClient

__all__ = [
    "ApiError",
    "BadRequest",
    "Client",
    "ClientConfig",
    "ClientError",
    "Forbidden",
    "IdempotencyKeyReused",
    "InvalidResponse",
    "ModelRef",
    "NotFound",
    "PayloadTooLarge",
    "Problem",
    "RateLimited",
    "Retry",
    "Run",
    "RunEvent",
    "RunStatus",
    "ServerError",
    "ServiceUnavailable",
    "Step",
    "StepSpec",
    "StepStatus",
    "SyncClient",
    "TestResult",
    "TestStatus",
    "TransportError",
    "TriggerRequest",
    "Unauthorized",
    "load_config",
]
