"""`GET /system`: how busy the system is, for the web page's system view (API key needed).

Each figure costs the gateway a command or two, whatever the number of jobs: `workers` alive
(seen within the last three presence beats), `running` (the sum of what each live worker last
reported, a fraction of a second old: see `worker.presence`) and `queued`: the jobs in arq's
queue, less those running — arq keeps a job in its queue until it ends — so jobs waiting to
start, retries waiting out their delay among them.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.endpoints.auth import require_api_key
from gateway.endpoints.services import services
from shared.catalog import ALIVE_WITHIN_S, count_alive
from shared.workload import running_jobs

__all__ = ["system"]


async def system(request: Request) -> JSONResponse:
    require_api_key(request)
    svc = services(request)
    workers = await count_alive(svc.redis, svc.keys, ALIVE_WITHIN_S)
    running = await running_jobs(svc.redis, svc.keys, ALIVE_WITHIN_S)
    in_queue = await svc.queue.zcard(svc.settings.queue_name)
    queued = max(0, in_queue - running)
    return JSONResponse({"workers": workers, "queued": queued, "running": running})
