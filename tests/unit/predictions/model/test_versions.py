"""predictions/model/versions.py: the active-version pointer, each version's import string,
and the per-process catalog that builds each version's model once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import fakeredis
import pytest

from predictions.infra.keys import InvalidVersion, active_version_key, model_import_key
from predictions.model import LoadedModel, ModelLoadError, load_model
from predictions.model.market_data import PriceWindow
from predictions.model.versions import ModelCatalog, activate_if_none, read_active, register
from tests.harness.doubles import CountingModel

COUNTING = "tests.harness.doubles:CountingModel"
HERE = __name__  # this module, importable: the models below are loaded by import string


class SlowModel:
    """A model whose construction takes a while (a large artifact), counting builds."""

    version = "slow-1"
    build_seconds = 0.3
    builds = 0

    def __init__(self) -> None:
        time.sleep(self.build_seconds)
        type(self).builds += 1

    def predict(self, pair: str, prices: PriceWindow, horizon_seconds: int) -> float:
        return 1.0


class FlakyModel:
    """Fails to build while ``broken`` is set, as a model whose artifact is missing."""

    version = "flaky-1"
    broken = True

    def __init__(self) -> None:
        if self.broken:
            raise RuntimeError("artifact missing")

    def predict(self, pair: str, prices: PriceWindow, horizon_seconds: int) -> float:
        return 2.0


@pytest.fixture(autouse=True)
def _reset_models() -> Iterator[None]:
    SlowModel.builds = 0
    FlakyModel.broken = True
    yield


def counting() -> LoadedModel:
    return LoadedModel(CountingModel())


# --- the pointer and the import strings -------------------------------------------------


def test_register_records_the_import_string_under_the_version(
    redis_client: fakeredis.FakeRedis,
) -> None:
    register(redis_client, counting(), COUNTING)
    assert redis_client.get(model_import_key("counting-1")) == COUNTING.encode()


def test_register_without_an_import_string_records_nothing(
    redis_client: fakeredis.FakeRedis,
) -> None:
    register(redis_client, counting(), None)  # a model handed over in code
    assert redis_client.keys() == []


def test_register_refuses_a_version_unfit_for_a_key(redis_client: fakeredis.FakeRedis) -> None:
    model = CountingModel()
    model.version = "has spaces"
    with pytest.raises(InvalidVersion):
        register(redis_client, LoadedModel(model), COUNTING)
    assert redis_client.keys() == []


def test_the_first_version_becomes_active_and_later_ones_do_not(
    redis_client: fakeredis.FakeRedis,
) -> None:
    assert read_active(redis_client) is None
    assert activate_if_none(redis_client, counting(), COUNTING) == "counting-1"
    assert read_active(redis_client) == "counting-1"
    # Another process starting with another MODEL: recorded, but only a rollout flips.
    slow = load_model(f"{HERE}:SlowModel")
    assert activate_if_none(redis_client, slow, f"{HERE}:SlowModel") == "counting-1"
    assert redis_client.get(active_version_key()) == b"counting-1"
    assert redis_client.get(model_import_key("slow-1")) == f"{HERE}:SlowModel".encode()


# --- the catalog ----------------------------------------------------------------------


def test_the_default_model_needs_no_redis(redis_client: fakeredis.FakeRedis) -> None:
    default = counting()
    catalog = ModelCatalog(default)
    assert catalog.model(redis_client, "counting-1") is default
    assert catalog.default_if_ready(0) is default


def test_another_version_is_built_once_from_its_recorded_import_string(
    redis_client: fakeredis.FakeRedis,
) -> None:
    redis_client.set(model_import_key("slow-1"), f"{HERE}:SlowModel")
    catalog = ModelCatalog(counting())
    found: list[LoadedModel] = []
    threads = [
        threading.Thread(target=lambda: found.append(catalog.model(redis_client, "slow-1")))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(found) == 6 and len({id(model) for model in found}) == 1
    assert found[0].version == "slow-1"
    assert SlowModel.builds == 1


def test_a_version_without_an_import_string_is_refused(
    redis_client: fakeredis.FakeRedis,
) -> None:
    catalog = ModelCatalog(counting())
    with pytest.raises(ModelLoadError, match="no import string"):
        catalog.model(redis_client, "unknown-1")


def test_an_import_string_that_now_builds_another_version_is_refused(
    redis_client: fakeredis.FakeRedis,
) -> None:
    # The artifact behind "m-7" was replaced: it builds counting-1 now.
    redis_client.set(model_import_key("m-7"), COUNTING)
    catalog = ModelCatalog(COUNTING)
    for _ in range(2):  # refused every time, never kept under the wrong name
        with pytest.raises(ModelLoadError, match="now builds 'counting-1'"):
            catalog.model(redis_client, "m-7")


def test_the_default_is_built_once_on_first_need(redis_client: fakeredis.FakeRedis) -> None:
    catalog = ModelCatalog(f"{HERE}:SlowModel")
    assert catalog.activate_default_if_none(redis_client) == "slow-1"
    assert read_active(redis_client) == "slow-1"
    first = catalog.default_model()
    assert catalog.model(redis_client, "slow-1") is first
    assert SlowModel.builds == 1


def test_model_if_ready_waits_at_most_the_given_time_and_the_build_goes_on(
    redis_client: fakeredis.FakeRedis,
) -> None:
    redis_client.set(model_import_key("slow-1"), f"{HERE}:SlowModel")
    catalog = ModelCatalog(counting())
    started = time.monotonic()
    assert catalog.model_if_ready(redis_client, "slow-1", wait_seconds=0.01) is None
    assert time.monotonic() - started < SlowModel.build_seconds
    model = catalog.model_if_ready(redis_client, "slow-1", wait_seconds=5)
    assert model is not None and model.version == "slow-1"
    # Built in the background once, and kept for every later caller.
    assert catalog.model(redis_client, "slow-1") is model
    assert SlowModel.builds == 1


def test_a_failed_background_build_is_reported_then_tried_again(
    redis_client: fakeredis.FakeRedis,
) -> None:
    redis_client.set(model_import_key("flaky-1"), f"{HERE}:FlakyModel")
    catalog = ModelCatalog(counting())
    with pytest.raises(ModelLoadError, match="artifact missing"):
        catalog.model_if_ready(redis_client, "flaky-1", wait_seconds=5)
    FlakyModel.broken = False  # the artifact is back
    model = catalog.model_if_ready(redis_client, "flaky-1", wait_seconds=5)
    assert model is not None and model.version == "flaky-1"


def test_default_if_ready_builds_the_default_in_the_background() -> None:
    catalog = ModelCatalog(f"{HERE}:SlowModel")
    assert catalog.default_if_ready(0.01) is None
    model = catalog.default_if_ready(5)
    assert model is not None and model.version == "slow-1"
    assert catalog.default is model
