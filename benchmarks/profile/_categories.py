"""The fixed category map: every sampled stack of a native-mode py-spy profile, and every CPU second of every
thread, lands in one of transport, handler, learner, GC, timers, Redis client, or unexplained.

A stack belongs to GC when the collector is anywhere on it (whatever allocated, the collector did the
work). Otherwise its innermost *owned* frame decides, walking from the leaf towards the root: generic
frames (libc, the interpreter, the standard library, protobuf) count for whoever called them, so `malloc`
under VW's predict is VW's, `json.dumps` under the decision log is the decision log's, and protobuf under
grpc's serializer is transport while protobuf under Tailor's response builder is the handler's.

Owned frames, by owner:

- transport: grpc (cygrpc and grpc's Python), the event loop's dispatch (`_run_once`, `Handle._run`, the
  C task step) and its selector, and every thread grpc's C-core runs on its own (event_engine, timers);
- timers: asyncio's timer handles and sleeps, and Tailor's periodic tasks (sweeps, snapshots, watchers);
- Redis client: redis-py, hiredis, Tailor's lean pipelines and scripts (`server/state/_redis.py`);
- learner: Tailor's learner (`server/learning`, but the reward joiner), what it calls, VW's learn;
- handler: the rest of Tailor's code on a call's path, split by what it does (keys and admission,
  validation, session context, VW predict, encoding and sampling, decision log, reward join, metrics,
  servicer and response).

What matches none (the interpreter's start-up frames alone, stacks py-spy could not unwind) is unexplained.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

CATEGORIES = ("transport", "handler", "learner", "GC", "timers", "Redis client", "unexplained")

#: Threads grpc's C-core starts for itself: no Python on them, all transport.
_NATIVE_THREADS = ("event_engine", "grpc_global_tim", "lifeguard", "default-executo", "resolver-execut", "grpc")
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<where>[^()]*)\)$")
_LOOP = {"_run_once", "BaseEventLoop._run_once", "BaseEventLoop.run_forever", "Handle._run"}
_LOOP_NATIVE = ("task_step", "TaskStepMethWrapper", "task_wakeup", "FutureObj_", "future_schedule_callbacks")
_TIMER = ("call_later", "call_at", "TimerHandle", "sleep", "_call_soon")
_PERIODIC = ("App._sweep", "App._snapshots", "App._follow", "App._watch_", "App._refresh")
_HANDLER = (  # module prefix -> what the handler does there (first match wins)
    ("server/api/_guard.py", "keys and admission"),
    ("server/api/_keys.py", "keys and admission"),
    ("server/api/_validation.py", "validation"),
    ("server/sessions/", "session context"),
    ("server/state/sessions/", "session context"),
    ("server/learning/_joiner.py", "reward join"),
    ("server/state/decision_log/", "decision log"),
    ("server/state/_decide.py", "decision log"),
    ("server/state/evidence/", "decision log"),
    ("server/core/_metrics.py", "metrics"),
    ("policies/", "encoding and sampling"),
    ("server/decisions/", "decide"),
    ("server/api/", "servicer and response"),
    ("server/", "other"),
    ("tailor/", "other"),
)


def _parse(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    return (match["name"], match["where"]) if match else (frame, "")


def _is_learner(name: str, where: str) -> bool:
    return where.startswith("server/learning/") and not where.startswith("server/learning/_joiner.py")


def classify(frames: Sequence[str]) -> tuple[str, str]:
    """(category, detail) of one sampled stack, frames root first."""
    parsed = [_parse(f) for f in frames]
    if any(name.startswith("gc_collect") or where.startswith("gcmodule.c") for name, where in parsed):
        return "GC", "collector"
    if any(n.startswith("_poll_wrapper") for n, _ in parsed):
        return "transport", "grpc poller thread"
    if any(w.startswith("socketserver.py") for _, w in parsed):
        return "transport", "metrics endpoint (HTTP)"
    learner = any(_is_learner(n, w) or n.startswith("VWPolicy.learn") for n, w in parsed)
    periodic = any(
        (w.startswith("server/_app.py") and n.startswith(_PERIODIC)) or w.startswith("concurrent/futures/thread.py")
        for n, w in parsed
    )  # Tailor's periodic tasks, and the executor thread their file and model work runs on
    for name, where in reversed(parsed):
        owner = _owner(name, where, learner, periodic)
        if owner is not None:
            return owner
    return "unexplained", parsed[-1][0] if parsed else ""


def _owner(name: str, where: str, learner: bool, periodic: bool) -> tuple[str, str] | None:
    if "cygrpc" in where or where.startswith("grpc/"):
        return "transport", "grpc"
    if where.startswith("redis/") or "hiredis" in where or where.startswith("server/state/_redis.py"):
        return "Redis client", "redis-py, hiredis, lean pipelines"
    if where.startswith("asyncio/"):
        if name.startswith(_TIMER) or name.split(".")[-1].startswith(_TIMER):
            return "timers", "asyncio timers"
        return ("transport", "event loop") if name in _LOOP else None
    if where.startswith("_asynciomodule.c") or name.startswith(_LOOP_NATIVE):
        return "transport", "event loop"
    if where.startswith("selectors.py") or name in ("epoll_wait", "epoll_ctl"):
        return "transport", "event loop"
    if "pylibvw" in where or name.startswith(("VWPolicy.learn", "VWPolicy.predict")):
        return ("learner", "VW learn") if learner else ("handler", "VW predict")
    if where.startswith("prometheus_client/"):
        return ("learner", "metrics") if learner else ("timers", "metrics") if periodic else ("handler", "metrics")
    if periodic and where.startswith(("server/", "concurrent/futures/thread.py")):
        return "timers", "periodic tasks"
    if where.startswith("server/state/evidence/") and learner:
        return "learner", "decision log (DSJSON evidence)"
    if _is_learner(name, where) or (learner and where.startswith(("server/", "policies/"))):
        return "learner", "bookkeeping and examples"
    for prefix, detail in _HANDLER:
        if where.startswith(prefix):
            return "handler", detail
    return None


#: A thread blocked in one of these is waiting, not running: py-spy's native mode samples it all the same.
_WAITS = (
    "epoll_wait", "poll", "select", "pthread_cond_timedwait", "pthread_cond_wait", "sem_wait", "sem_timedwait",
    "sem_clockwait", "futex_wait", "__futex_abstimed_wait", "nanosleep", "clock_nanosleep", "PyThread_acquire_lock",
    "take_gil",
)  # fmt: skip


def waiting(frames: Sequence[str]) -> bool:
    """Whether a sampled stack is a thread blocked in a wait (the wait's own frame at most two from the leaf: a
    libc address under it is its inside)."""
    return any(_parse(f)[0].startswith(_WAITS) for f in frames[-3:])


def thread_samples(collapsed: str) -> dict[int, Counter[tuple[str, str]]]:
    """Per OS thread id: samples per (category, detail), from py-spy's raw output recorded with --threads. A
    thread's samples blocked in a wait use no CPU and are left out (but for a thread with nothing else, so its
    few ticks still land where it waits)."""
    running: dict[int, Counter[tuple[str, str]]] = {}
    idle: dict[int, Counter[tuple[str, str]]] = {}
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        head, *frames = stack.split(";")
        tid = int(head.split("(")[1].split(")")[0], 0) if head.startswith("thread (") else 0
        into = idle if waiting(frames) else running
        into.setdefault(tid, Counter())[classify(frames)] += int(count)
    return {tid: running.get(tid) or idle[tid] for tid in running.keys() | idle.keys()}


def breakdown(collapsed: str, thread_cpu_us: Mapping[int, tuple[str, float]]) -> dict[tuple[str, str], float]:
    """CPU µs per decision by (category, detail): each thread's CPU (from /proc, per decision) split by the
    shares of its samples; threads py-spy did not see go by their name (grpc's C-core threads are transport)."""
    samples = thread_samples(collapsed)
    result: dict[tuple[str, str], float] = {}
    for tid, (name, us) in thread_cpu_us.items():
        counts = samples.get(tid)
        if counts:
            total = sum(counts.values())
            for key, n in counts.items():
                result[key] = result.get(key, 0.0) + us * n / total
        elif name.startswith(_NATIVE_THREADS):
            result["transport", "grpc C-core threads"] = result.get(("transport", "grpc C-core threads"), 0.0) + us
        else:
            result["unexplained", f"thread {name}"] = us
    return result
