"""Broker fixtures: the test bed's real mosquitto brokers and subscribers, stopped at each test's teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from testbed.broker import PASSWORD, USERNAME, Broker, Subscriber, TlsFiles, free_port, make_tls_files


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def broker_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Broker]]:
    """Start extra brokers in a test (e.g. with persistence); all are stopped at teardown."""
    started: list[Broker] = []

    def make(**kwargs: object) -> Broker:
        broker = Broker(workdir=tmp_path_factory.mktemp("mosquitto"), port=free_port(), **kwargs)  # type: ignore[arg-type]
        broker.start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def mosquitto_broker(broker_factory: Callable[..., Broker]) -> Broker:
    """Plain MQTT, anonymous."""
    return broker_factory()


@pytest.fixture
def mosquitto_auth_broker(broker_factory: Callable[..., Broker]) -> Broker:
    """Plain MQTT with a password file; anonymous clients are refused."""
    return broker_factory(username=USERNAME, password=PASSWORD)


@pytest.fixture
def mosquitto_tls_broker(broker_factory: Callable[..., Broker], tls_files: TlsFiles) -> Broker:
    """MQTT over TLS (server certificate from a test CA) with a password file."""
    return broker_factory(username=USERNAME, password=PASSWORD, tls=tls_files)


@pytest.fixture
def subscriber() -> Iterator[Callable[..., Subscriber]]:
    """``subscriber(broker, topic)`` -> a connected `Subscriber`; all are closed at teardown."""
    made: list[Subscriber] = []

    def make(broker: Broker, topic: str = "#", **kwargs: object) -> Subscriber:
        sub = Subscriber(broker, topic, **kwargs)  # type: ignore[arg-type]
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()
