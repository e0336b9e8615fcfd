"""A pool of workers sharing jobs through a queue group.

Three workers of different speeds join the queue group "resize", so each job
goes to one of them rather than to all three. Jobs arrive every 8 ms. Each
worker has a buffer of one job and the BLOCK policy: a worker whose buffer is
still full is passed over in favour of one with room, so the fast worker ends
up with the most jobs; and if all three were full, the publisher would wait
instead of dropping a job. An audit subscription outside the group still sees
every job, and every job carries a correlation ID in its headers.

It runs on trio's mock clock, so the timings are exact and the run takes no
real time; drop the ``clock=`` argument at the bottom to run it in real time.
"""

from __future__ import annotations

import trio
import trio.testing

from trio_pubsub import Broker, OverflowPolicy

JOBS = 120
INTERVAL = 0.008  # seconds between two jobs
WORKERS = {"fast": 0.010, "medium": 0.030, "slow": 0.090}  # seconds per job


async def main() -> None:
    broker = Broker(str)
    done: dict[str, list[str]] = {name: [] for name in WORKERS}
    audited: list[str] = []

    async def worker(
        name: str, seconds: float, *, task_status: trio.TaskStatus[None]
    ) -> None:
        async with broker.subscribe(
            "images.*.resize",
            queue="resize",
            max_buffer_size=1,
            policy=OverflowPolicy.BLOCK,
        ) as jobs:
            task_status.started()
            async for job in jobs:
                await trio.sleep(seconds)  # the work itself
                done[name].append(job.headers["correlation-id"])

    async def audit(*, task_status: trio.TaskStatus[None]) -> None:
        async with broker.subscribe("images.>", max_buffer_size=JOBS) as everything:
            task_status.started()
            audited.extend([job.payload async for job in everything])

    async with trio.open_nursery() as nursery:
        for name, seconds in WORKERS.items():
            await nursery.start(worker, name, seconds)
        await nursery.start(audit)
        start = trio.current_time()
        for number in range(JOBS):
            await trio.sleep(INTERVAL)  # jobs arrive over time
            await broker.publish(
                f"images.{number}.resize",
                f"image-{number}.png",
                headers={"correlation-id": f"job-{number}"},
            )
        await broker.aclose()  # the workers finish what they hold, then stop
    took = trio.current_time() - start

    print(f"{'worker':<8} {'s/job':>6} {'jobs':>5} {'share':>6}")
    for name, seconds in WORKERS.items():
        share = len(done[name]) / JOBS
        print(f"{name:<8} {seconds:>6.3f} {len(done[name]):>5} {share:>6.0%}")
    every_id = sorted(job for jobs in done.values() for job in jobs)
    once = every_id == sorted(f"job-{n}" for n in range(JOBS))
    print(f"each job done exactly once: {once} ({len(every_id)} of {JOBS})")
    print(f"audit saw {len(audited)} of {JOBS} jobs")
    print(
        f"{JOBS} jobs arrived over {JOBS * INTERVAL:.2f} s; "
        f"all done {took:.2f} s after the start"
    )


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
