"""What `jobwire submit --watch` and `jobwire watch` show: a live progress line, or JSON lines.

`LiveView` draws one line for the job — state, stage, bar, percent, count, rate, ETA, elapsed
time — and types the job's partial output (`data` events with a `token`) above it as it comes.
Logs, errors, retries and the outcome are printed above the line. When the connection is lost
the state reads "reconnecting…" and everything else stays as it was until events flow again.

`JsonLines` prints each event as one JSON object per line, for scripts; connection notices go
to stderr so stdout stays parseable.
"""

from __future__ import annotations

import asyncio
import time
from typing import IO, Any, Protocol

import orjson
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from jobwire.client.events import JobEvent
from jobwire.client.stream import ConnectionState

__all__ = ["JsonLines", "LiveView", "View"]

_STATE_STYLES = {
    "connecting…": "dim",
    "queued": "dim",
    "running": "cyan",
    "retrying": "yellow",
    "reconnecting…": "bold yellow",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "magenta",
}


# Redrawn from the event loop, not rich's own refresh thread, so rendering never races the
# event handlers that change the view.
_REFRESH_S = 0.125
_BAR_WIDTH = 20


class View(Protocol):
    async def __aenter__(self) -> View: ...
    async def __aexit__(self, *exc_info: object) -> None: ...
    def event(self, event: JobEvent) -> None: ...
    def connection(self, state: ConnectionState) -> None: ...


class JsonLines:
    def __init__(self, out: IO[str], err: IO[str]) -> None:
        self._out, self._err = out, err
        self._lost = False

    async def __aenter__(self) -> JsonLines:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._out.flush()

    def event(self, event: JobEvent) -> None:
        self._out.write(orjson.dumps(event.to_dict(), option=orjson.OPT_NON_STR_KEYS).decode())
        self._out.write("\n")
        self._out.flush()

    def connection(self, state: ConnectionState) -> None:
        if state.connected and self._lost:
            print("jobwire: reconnected", file=self._err, flush=True)
        elif not state.connected and not self._lost:
            print(f"jobwire: {_lost_text(state)}", file=self._err, flush=True)
        self._lost = not state.connected


class LiveView:
    def __init__(self, console: Console, job_name: str | None = None) -> None:
        self._console = console
        self._name = job_name or ""
        self._state = "connecting…"
        self._lost = False
        self._attempt = 0
        self._progress: dict[str, Any] = {}
        self._typed = Text()
        self._started = time.monotonic()
        self._live = Live(_Renderable(self), console=console, auto_refresh=False)
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveView:
        self._live.start()
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        self._flush_typed()
        self._live.stop()
        if not self._console.is_terminal:
            self._console.line()  # rich ends the last line itself only on a terminal

    async def _tick(self) -> None:
        while True:
            self._live.refresh()
            await asyncio.sleep(_REFRESH_S)

    def connection(self, state: ConnectionState) -> None:
        if not state.connected and not self._lost:
            self._print(Text(f"{_lost_text(state)}", style="yellow"))
        self._lost = not state.connected
        self._live.refresh()

    def event(self, event: JobEvent) -> None:
        handler = getattr(self, f"_on_{event.type}", None)
        if handler is not None:
            handler(event)

    def render(self) -> RenderableType:
        line = Table.grid(padding=(0, 1))
        state = "reconnecting…" if self._lost else self._state
        bar = self._bar()
        cells: list[RenderableType] = [Text(state, style=_STATE_STYLES.get(state, ""))]
        cells.append(Text(self._title(), overflow="ellipsis", no_wrap=True))
        cells.append(bar)
        cells.append(Text(self._figures(), style="dim"))
        for _ in cells:
            line.add_column(no_wrap=True)
        line.columns[1].max_width = 40
        line.add_row(*cells)
        return Group(self._typed, line) if self._typed else line

    def _title(self) -> str:
        stage, message = self._progress.get("stage"), self._progress.get("message")
        parts = [self._name] + [str(p) for p in (stage, message) if p]
        if self._attempt > 1:
            parts.append(f"attempt {self._attempt}")
        return " · ".join(p for p in parts if p)

    def _bar(self) -> ProgressBar:
        total, current = self._progress.get("total"), self._progress.get("current")
        if self._state == "completed":
            return ProgressBar(total=1, completed=1, width=_BAR_WIDTH)
        if isinstance(total, int | float) and total > 0 and isinstance(current, int | float):
            return ProgressBar(total=float(total), completed=float(current), width=_BAR_WIDTH)
        if self._state == "running":  # no total yet: a pulse shows the job is alive
            return ProgressBar(total=None, width=_BAR_WIDTH)
        return ProgressBar(total=1, completed=0, width=_BAR_WIDTH)

    def _figures(self) -> str:
        p = self._progress
        figures = []
        if p.get("percent") is not None:
            figures.append(f"{p['percent']:5.1f}%")
        if p.get("current") is not None:
            total = f"/{_number(p['total'])}" if p.get("total") is not None else ""
            figures.append(f"{_number(p['current'])}{total}")
        if p.get("rate"):
            figures.append(f"{p['rate']:.3g}/s")
        if p.get("eta_s") is not None and self._state == "running":
            figures.append(f"ETA {_duration(p['eta_s'])}")
        figures.append(_duration(time.monotonic() - self._started))
        return "  ".join(figures)

    def _print(self, renderable: RenderableType) -> None:
        self._console.print(renderable)

    def _flush_typed(self) -> None:
        if self._typed:
            self._print(self._typed)
            self._typed = Text()

    def _type(self, token: str) -> None:
        *done, rest = token.split("\n")
        for piece in done:
            self._typed.append(piece)
            self._print(self._typed)
            self._typed = Text()
        self._typed.append(rest)

    def _on_queued(self, event: JobEvent) -> None:
        self._name = str(event.data.get("name") or self._name)
        self._state = "queued"

    def _on_started(self, event: JobEvent) -> None:
        self._state, self._attempt = "running", event.attempt

    def _on_progress(self, event: JobEvent) -> None:
        self._state = "running"
        self._progress = event.data

    def _on_data(self, event: JobEvent) -> None:
        token = event.data.get("token")
        if isinstance(token, str):
            self._type(token)
        else:
            self._print(Text(_json(event.data), style="dim"))

    def _on_log(self, event: JobEvent) -> None:
        level = str(event.data.get("level", "info"))
        self._print(Text(f"{level}: {event.data.get('message', '')}", style="dim"))

    def _on_error(self, event: JobEvent) -> None:
        data = event.data
        text = f"error: {data.get('type', 'Error')}: {data.get('message', '')}"
        self._print(Text(text, style="yellow"))

    def _on_retrying(self, event: JobEvent) -> None:
        data = event.data
        self._state = "retrying"
        self._print(
            Text(
                f"retrying: attempt {data.get('attempt')} in {data.get('delay_s')} s"
                f" ({data.get('reason', '')})",
                style="yellow",
            )
        )

    def _on_reset(self, event: JobEvent) -> None:
        state = event.data.get("state")
        if isinstance(state, dict):
            self._name = str(state.get("name") or self._name)
            if isinstance(state.get("progress"), dict):
                self._progress = state["progress"]
        reason = event.data.get("reason", "unknown_position")
        self._print(Text(f"the stream restarted from what it still holds ({reason})", "yellow"))

    def _on_completed(self, event: JobEvent) -> None:
        self._flush_typed()
        self._state = "completed"
        self._print(Text(f"completed: {_json(event.data.get('result'))}", style="green"))

    def _on_failed(self, event: JobEvent) -> None:
        self._flush_typed()
        self._state = "failed"
        data = event.data
        self._print(Text(f"failed: {data.get('type', 'Error')}: {data.get('message', '')}", "red"))

    def _on_cancelled(self, event: JobEvent) -> None:
        self._flush_typed()
        self._state = "cancelled"
        self._print(Text(f"cancelled: {event.data.get('reason', '')}", style="magenta"))


class _Renderable:
    """Lets `Live` ask the view for a fresh rendering at every refresh (elapsed time moves)."""

    def __init__(self, view: LiveView) -> None:
        self._view = view

    def __rich__(self) -> RenderableType:
        return self._view.render()


def _lost_text(state: ConnectionState) -> str:
    wait = "" if state.retry_in_s is None else f" in {state.retry_in_s:.1f} s"
    return f"connection lost ({state.reason}); reconnecting{wait}…"


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    whole = int(max(seconds, 0))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"
