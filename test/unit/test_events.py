"""The event bus: domains, bounded subscribers that never block publishers, history, Docker translation."""
from __future__ import annotations

import asyncio

import pytest

from pkg import errors
from pkg.docker.events import docker_events
from pkg.events import (
    CRI_DOMAIN,
    DOCKER_DOMAIN,
    ContainerEvent,
    ContainerEventType,
    DockerEvent,
    Event,
    EventBus,
)
from pkg.model.container import ContainerConfig, ContainerMetadata


def _metadata(cid: str = "c" * 64, name: str = "web", labels: dict[str, str] | None = None) -> ContainerMetadata:
    return ContainerMetadata(id=cid, sandbox_id="s" * 64, config=ContainerConfig(name=name, image="busybox",
                             labels=labels or {}), image_id="sha256:" + "1" * 64,
                             image_ref="docker.io/library/busybox:latest", created_at=0)


async def test_subscriber_sees_events_published_after_it_subscribed() -> None:
    bus = EventBus()
    bus.publish("before", "s", ContainerEventType.CREATED)
    async with bus.subscribe() as sub:
        bus.publish("after", "s", ContainerEventType.STARTED)
        event = await sub.get()
    assert isinstance(event, ContainerEvent)
    assert (event.container_id, event.type, event.domain) == ("after", ContainerEventType.STARTED, CRI_DOMAIN)
    assert bus.subscribers == 0


async def test_stalled_subscriber_is_cut_off_and_never_blocks_publishing() -> None:
    bus = EventBus(queue_size=8)
    overflows: list[int] = []
    bus.on_overflow = lambda: overflows.append(1)
    async with bus.subscribe() as stalled, bus.subscribe() as healthy:
        for i in range(20):  # synchronous: publish cannot wait for anyone
            bus.publish(f"c{i}", "s", ContainerEventType.CREATED)
            assert isinstance(await healthy.get(), ContainerEvent)
        assert stalled.dropped == 9
        assert stalled.pending() == 1  # only the overflow mark: the backlog was freed
        with pytest.raises(errors.ResourceExhausted, match="fell behind"):
            await stalled.get()
        with pytest.raises(errors.ResourceExhausted):
            await stalled.get()  # stays cut off
        assert bus.subscribers == 1  # the healthy one
    assert overflows == [1]
    assert bus.overflows == 1


async def test_a_reader_blocked_in_get_is_woken_by_its_overflow() -> None:
    bus = EventBus(queue_size=2)
    async with bus.subscribe() as sub:
        reader = asyncio.create_task(sub.get())
        await asyncio.sleep(0)  # the reader waits on an empty queue
        for i in range(5):
            bus.publish(f"c{i}", "s", ContainerEventType.CREATED)
        # It was woken by c0, but the backlog (c0 included) was freed before it ran: it sees the overflow.
        with pytest.raises(errors.ResourceExhausted):
            await asyncio.wait_for(reader, 5)


async def test_match_filters_at_publish_so_foreign_events_do_not_fill_the_queue() -> None:
    bus = EventBus(queue_size=2)

    def cri_only(e: Event) -> bool:
        return isinstance(e, ContainerEvent) and e.domain == CRI_DOMAIN

    async with bus.subscribe(cri_only) as sub:
        docker = bus.domain(DOCKER_DOMAIN)
        for _ in range(10):
            docker.publish("d", "s", ContainerEventType.CREATED, _metadata("d"))
        bus.domain(CRI_DOMAIN).publish("k", "s", ContainerEventType.CREATED)
        event = await sub.get()
    assert isinstance(event, ContainerEvent) and event.container_id == "k"


async def test_docker_domain_publishes_docker_container_events_with_attributes() -> None:
    bus = EventBus()
    md = _metadata(labels={"com.example": "x"})
    async with bus.subscribe(lambda e: isinstance(e, DockerEvent)) as sub:
        docker = bus.domain(DOCKER_DOMAIN)
        docker_events(docker)
        docker.publish(md.id, md.sandbox_id, ContainerEventType.CREATED, md)
        docker_events(docker).container("kill", md, signal="15")
        docker.publish(md.id, md.sandbox_id, ContainerEventType.STOPPED, md, 137)
        docker.publish(md.id, md.sandbox_id, ContainerEventType.DELETED, md)
        got = [await sub.get() for _ in range(4)]
    actions = [(e.action, dict(e.attributes)) for e in got if isinstance(e, DockerEvent)]
    base = {"com.example": "x", "image": "docker.io/library/busybox:latest", "name": "web"}
    assert actions == [("create", base), ("kill", {**base, "signal": "15"}), ("die", {**base, "exitCode": "137"}),
                       ("destroy", base)]
    assert [e.time_ns for e in bus.history(lambda e: True)] == [e.time_ns for e in got if isinstance(e, DockerEvent)]


async def test_cri_domain_publishes_no_docker_events() -> None:
    bus = EventBus()
    cri = bus.domain(CRI_DOMAIN)
    md = _metadata()
    docker_events(cri)
    cri.publish(md.id, md.sandbox_id, ContainerEventType.CREATED, md)
    cri.oom_killed(md)
    docker_events(cri).container("kill", md, signal="9")
    assert bus.history(lambda e: True) == []


def test_the_core_publishes_no_docker_event_itself() -> None:
    """Without the Docker domain's translator a domain's facts are CRI events only (the core is neutral)."""
    bus = EventBus()
    docker = bus.domain(DOCKER_DOMAIN)
    heard: list[tuple[str, str]] = []
    docker.listeners.append(lambda news: heard.append((news.fact.value, news.container_id)))
    md = _metadata()
    docker.publish(md.id, md.sandbox_id, ContainerEventType.CREATED, md)
    docker.oom_killed(md)
    assert bus.history(lambda e: True) == []
    assert heard == [("created", md.id), ("oom-killed", md.id)]


def test_an_exit_is_oom_then_the_unmounts_then_die_with_its_code_and_run_time() -> None:
    bus = EventBus()
    docker = bus.domain(DOCKER_DOMAIN)
    translator = docker_events(docker)
    assert docker_events(docker) is translator  # one per domain: it hears each fact once
    translator.before_die = lambda cid: bus.publish_docker("volume", "unmount", "v1", {"container": cid})
    md = _metadata()
    docker.oom_killed(md)
    docker.publish(md.id, md.sandbox_id, ContainerEventType.STOPPED, md, 137, ran_for_s=3)
    got = [(e.type, e.action, dict(e.attributes)) for e in bus.history(lambda e: True)]
    base = {"image": "docker.io/library/busybox:latest", "name": "web"}
    assert got == [("container", "oom", base), ("volume", "unmount", {"container": md.id}),
                   ("container", "die", {**base, "exitCode": "137", "execDuration": "3"})]


def test_pods_shown_to_docker_have_their_lifecycle_and_docker_only_actions() -> None:
    bus = EventBus()
    cri = bus.domain(CRI_DOMAIN)
    docker_events(cri).shown_to_docker = True
    md = _metadata()
    cri.publish(md.id, md.sandbox_id, ContainerEventType.STARTED, md)
    cri.oom_killed(md)
    docker_events(cri).container("kill", md, signal="9")
    assert [e.action for e in bus.history(lambda e: True)] == ["start", "oom", "kill"]


def test_pods_not_shown_to_docker_publish_no_docker_event() -> None:
    bus = EventBus()
    cri = bus.domain(CRI_DOMAIN)
    md = _metadata()
    cri.publish(md.id, md.sandbox_id, ContainerEventType.STARTED, md)
    cri.oom_killed(md)
    docker_events(cri).container("kill", md, signal="9")
    assert [e.action for e in bus.history(lambda e: isinstance(e, DockerEvent))] == []


def test_history_is_a_bounded_ring_filtered_by_time_and_match() -> None:
    bus = EventBus(history=3)
    for i in range(5):
        bus.publish_docker("image", "pull", f"img{i}", {"name": f"img{i}"})
    kept = bus.history(lambda e: True)
    assert [e.actor_id for e in kept] == ["img2", "img3", "img4"]
    assert [e.actor_id for e in bus.history(lambda e: True, since_ns=kept[1].time_ns)][0] in ("img2", "img3")
    assert bus.history(lambda e: isinstance(e, DockerEvent) and e.actor_id == "img4") == [kept[2]]


async def test_docker_attributes_come_from_the_describe_hook_when_installed() -> None:
    bus = EventBus()
    docker = bus.domain(DOCKER_DOMAIN)
    md = _metadata(labels={"a": "1"})
    docker_events(docker).describe = lambda cid: {"image": "busybox", "name": "web-1"} if cid == md.id else None
    docker.publish(md.id, md.sandbox_id, ContainerEventType.STARTED, md)
    docker.publish("other", md.sandbox_id, ContainerEventType.STARTED, _metadata("other"))
    mine, other = bus.history(lambda e: True)
    assert dict(mine.attributes) == {"a": "1", "image": "busybox", "name": "web-1"}
    assert other.attributes["image"] == "docker.io/library/busybox:latest"  # the core's view as the fallback


async def test_a_broken_reader_filter_never_reaches_the_publisher() -> None:
    bus = EventBus()

    def broken(_: Event) -> bool:
        raise KeyError("bug")

    async with bus.subscribe(broken), bus.subscribe() as healthy:
        bus.publish("c", "s", ContainerEventType.CREATED)  # no exception here
        assert isinstance(await healthy.get(), ContainerEvent)
