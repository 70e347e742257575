"""The fixed category map of `benchmarks.profile`: where a sampled stack's CPU goes."""

from __future__ import annotations

import pytest

from benchmarks.profile._categories import breakdown, classify

LOOP = [
    "_run_module_as_main (<frozen runpy>:198)",
    "main (server/_cli.py:278)",
    "BaseEventLoop._run_once (asyncio/base_events.py:1922)",
    "Handle._run (asyncio/events.py:80)",
    "task_step_impl (_asynciomodule.c:2704)",
    "0x7f73b20e6dd2 (grpc/_cython/cygrpc.cpython-311-x86_64-linux-gnu.so)",
]
DECIDE = [
    *LOOP,
    "DecisionServicer.Decide (server/api/_servicer.py:63)",
    "DecisionService.decide (server/decisions/_service.py:141)",
]
LEARN = [*LOOP, "Learner.run (server/learning/_learner.py:70)", "Learner._learn (server/learning/_learner.py:99)"]


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        ([*LOOP[:3], "EpollSelector.select (selectors.py:468)", "epoll_wait (libc.so.6)"], ("transport", "event loop")),
        ([*LOOP, "sendmsg (libc.so.6)"], ("transport", "grpc")),
        ([*DECIDE, "VWPolicy.predict (policies/_vw.py:168)", "0x7f00 (pylibvw.cpython-311-x86_64-linux-gnu.so)",
                   "malloc (libc.so.6)"], ("handler", "VW predict")),
        ([*DECIDE, "encode_features (policies/_encoding.py:88)"], ("handler", "encoding and sampling")),
        ([*DECIDE, "decide_response (server/api/_servicer.py:37)", "PyUpb_Message_InitAttributes (_message.abi3.so)"],
         ("handler", "servicer and response")),
        ([*DECIDE, "intent_text (server/sessions/_intent.py:50)", "gc_collect_main (libpython3.11.so.1.0)"],
         ("GC", "collector")),
        ([*LEARN, "EvidenceRecorder._record (server/learning/_evidence.py:70)",
                  "dsjson_line (server/state/evidence/_format.py:110)", "encoder_encode_float (_json.c:1368)"],
         ("learner", "decision log (DSJSON evidence)")),
        ([*LEARN, "learn_example (server/learning/_learner.py:150)", "VWPolicy.learn (policies/_vw.py:193)",
                  "0x7f00 (pylibvw.cpython-311-x86_64-linux-gnu.so)"], ("learner", "VW learn")),
        ([*LEARN, "Counter.inc (prometheus_client/metrics.py:300)"], ("learner", "metrics")),
        ([*DECIDE, "LeanPipeline.execute (server/state/_redis.py:200)", "sendto (libc.so.6)"],
         ("Redis client", "redis-py, hiredis, lean pipelines")),
        ([*LOOP[:4], "App._sweep (server/_app.py:460)",
                      "InMemoryDecisionLog.expired (server/state/decision_log/_memory.py:9)"],
         ("timers", "periodic tasks")),
        (["_run_module_as_main (<frozen runpy>:198)", "PyObject_Call (libpython3.11.so.1.0)"],
         ("unexplained", "PyObject_Call")),
    ],
)  # fmt: skip
def test_a_stack_goes_to_its_innermost_owner(frames: list[str], expected: tuple[str, str]) -> None:
    assert classify(frames) == expected


def test_each_threads_cpu_is_split_by_its_own_samples_and_unseen_threads_by_name() -> None:
    collapsed = "\n".join(
        [
            "thread (11): MainThread;" + ";".join([*DECIDE, "encode_features (policies/_encoding.py:88)"]) + " 3",
            "thread (11): MainThread;" + ";".join([*LOOP, "sendmsg (libc.so.6)"]) + " 1",
            "thread (12): Thread-1 (_poll_wrapper);_poll_wrapper (grpc/_cython/cygrpc.so);epoll_wait (libc.so.6) 5",
        ]
    )
    cpu = {11: ("python", 400.0), 12: ("python", 50.0), 13: ("event_engine", 30.0), 14: ("mystery", 7.0)}
    assert breakdown(collapsed, cpu) == {
        ("handler", "encoding and sampling"): 300.0,
        ("transport", "grpc"): 100.0,
        ("transport", "grpc poller thread"): 50.0,
        ("transport", "grpc C-core threads"): 30.0,
        ("unexplained", "thread mystery"): 7.0,
    }
