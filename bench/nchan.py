"""nginx + Nchan, the C reference: installed if missing, configured from nginx.conf.template
(one worker, Redis storage, subscribers at `/jobs/<id>/events`, publisher at `/pub/<id>`),
run in the foreground as a child of the bench and stopped with it.

    python -m bench.nchan --redis-url redis://127.0.0.1:6379/0 --port 8002
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from string import Template

from bench.processes import ServiceFailed, free_port, service, wait_for_port

__all__ = ["INSTALL_SCRIPT", "NCHAN_MODULE", "NchanServer", "ensure_installed", "nchan", "render"]

BENCH_DIR = Path(__file__).resolve().parent
INSTALL_SCRIPT = BENCH_DIR / "install_nchan.sh"
TEMPLATE = BENCH_DIR / "nginx.conf.template"
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
# Deep enough for the deepest resume storm the bench runs (100 behind) with room to spare.
BUFFER_LENGTH = 1_000
# The per-process open-file limit here (hard): nginx may hold this many descriptors.
OPEN_FILES = 20_000


class NchanServer:
    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def publish_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/pub/{{job}}"


def ensure_installed() -> None:
    if shutil.which("nginx") and NCHAN_MODULE.exists():
        return
    subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True)


def render(run_dir: Path, port: int, redis_url: str, open_files: int = OPEN_FILES) -> str:
    return Template(TEMPLATE.read_text()).substitute(
        run_dir=run_dir,
        port=port,
        redis_url=redis_url,
        module=NCHAN_MODULE,
        open_files=open_files,
        connections=open_files - 100,
        buffer_length=BUFFER_LENGTH,
    )


@contextmanager
def nchan(redis_url: str, port: int | None = None) -> Iterator[NchanServer]:
    ensure_installed()
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="jobwire-bench-nginx-") as tmp:
        run_dir = Path(tmp)
        config = run_dir / "nginx.conf"
        config.write_text(render(run_dir, port, redis_url))
        command = ["nginx", "-c", str(config), "-p", str(run_dir)]
        with service("nginx", command, log=run_dir / "nginx.out") as process:
            try:
                wait_for_port("nginx", port, process)
            except ServiceFailed:
                print((run_dir / "error.log").read_text(errors="replace"), flush=True)
                raise
            yield NchanServer(port, process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    with nchan(args.redis_url, args.port) as server:
        print(
            f"nchan: subscribe http://127.0.0.1:{server.port}/jobs/<id>/events, "
            f"publish {server.publish_url}; Ctrl-C stops",
            flush=True,
        )
        with suppress(KeyboardInterrupt):
            server.process.wait()


if __name__ == "__main__":
    main()
