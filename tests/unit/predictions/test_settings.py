from __future__ import annotations

import dataclasses

import pytest

from predictions.settings import DEFAULT_PAIRS, Settings, SettingsError


def test_defaults_are_valid_and_documented_values() -> None:
    settings = Settings.from_env({})
    assert settings.pairs == DEFAULT_PAIRS
    assert settings.refresh_interval_seconds < settings.prediction_ttl_seconds
    assert settings.prediction_horizon_seconds == 300
    assert settings.simulated_model_latency_seconds == 1.0
    assert settings.api_bind == "127.0.0.1:8000"


def test_values_are_coerced_and_pairs_canonicalised() -> None:
    settings = Settings.from_env(
        {
            "PAIRS": " eth-eur, SOL-USD,,ETH-EUR ",
            "PREDICTION_TTL_SECONDS": "4.5",
            "REFRESH_INTERVAL_SECONDS": "1",
            "SIMULATED_MODEL_LATENCY_SECONDS": "0",
            "REDIS_MAX_CONNECTIONS": "7",
            "LOG_LEVEL": "debug",
        }
    )
    assert settings.pairs == ("ETH-EUR", "SOL-USD")
    assert settings.prediction_ttl_seconds == 4.5
    assert settings.refresh_interval_seconds == 1.0
    assert settings.simulated_model_latency_seconds == 0.0
    assert settings.redis_max_connections == 7
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PREDICTION_TTL_SECONDS", "soon"),
        ("PREDICTION_TTL_SECONDS", "-1"),
        ("PREDICTION_TTL_SECONDS", "nan"),
        ("REFRESH_INTERVAL_SECONDS", "inf"),
        ("PREDICTION_HORIZON_SECONDS", "2.5"),
        ("SIMULATED_MODEL_LATENCY_SECONDS", "-0.1"),
        ("REDIS_URL", "http://localhost:6379"),
        ("REDIS_URL", "redis://localhost:6379/zero"),
        ("REDIS_URL", "redis://localhost:port/0"),
        ("REDIS_URL", "redis://localhost:6379/16"),
        ("REDIS_SENTINELS", "s1"),
        ("REDIS_SENTINELS", "s1:26379,s2:port"),
        ("REDIS_SENTINEL_MASTER", "my master"),
        ("CELERY_BROKER_DATABASE", "other"),
        ("PAIRS", "ETH/EUR"),
        ("PAIRS", "EUR-EUR"),
        ("PAIRS", " , "),
        ("MODEL", "no_colon_here"),
        ("MARKET_DATA", "kraken"),
        ("API_BIND", "8000"),
        ("API_WORKERS", "0"),
        ("NEAR_CACHE_SECONDS", "1"),
        ("NEAR_CACHE_SECONDS", "-0.1"),
        ("LOG_LEVEL", "chatty"),
        ("REGISTRY_MAX_PAIRS", "0"),
        ("NEAR_CACHE_MAX_PAIRS", "0"),
        ("METRICS_MAX_PAIR_SERIES", "-1"),
        ("PRECOMPUTE", "sometimes"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_refresh_must_be_shorter_than_ttl() -> None:
    with pytest.raises(SettingsError, match="REFRESH_INTERVAL_SECONDS must be shorter"):
        Settings.from_env({"PREDICTION_TTL_SECONDS": "10", "REFRESH_INTERVAL_SECONDS": "10"})


def test_compute_timeout_must_exceed_model_latency() -> None:
    with pytest.raises(SettingsError, match="COMPUTE_TIMEOUT_SECONDS"):
        Settings.from_env({"SIMULATED_MODEL_LATENCY_SECONDS": "12"})


def test_empty_values_mean_default() -> None:
    assert Settings.from_env({"PAIRS": "", "REDIS_URL": "  "}) == Settings()


@pytest.mark.parametrize(
    ("redis_url", "broker_url"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/1"),
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379/1"),
        ("rediss://user:pw@cache.example:6380/3", "rediss://user:pw@cache.example:6380/4"),
        ("unix:///run/redis.sock?db=2", "redis+socket:///run/redis.sock?virtual_host=3"),
    ],
)
def test_broker_defaults_to_the_next_database(redis_url: str, broker_url: str) -> None:
    assert Settings.from_env({"REDIS_URL": redis_url}).broker_url == broker_url


def test_explicit_broker_wins() -> None:
    env = {"REDIS_URL": "redis://a:6379/0", "CELERY_BROKER_URL": "redis://b:6379/5"}
    assert Settings.from_env(env).broker_url == "redis://b:6379/5"


def test_database_15_has_no_next_one() -> None:
    with pytest.raises(SettingsError, match="CELERY_BROKER_URL"):
        _ = Settings.from_env({"REDIS_URL": "redis://localhost:6379/15"}).broker_url


@pytest.mark.parametrize(
    "url",
    [
        "redis://b:6379/5",
        "rediss://user:pw@b:6380/1",
        "redis+socket:///run/redis.sock?virtual_host=1",
        "amqp://guest:guest@rabbit:5672/vhost",
        "amqps://user:pw@rabbit:5671//",
        "sentinel://s1:26379;sentinel://s2:26379;sentinel://s3:26379/1",
        "sentinel://:pw@s1:26379/2",
    ],
)
def test_every_broker_celery_accepts(url: str) -> None:
    assert Settings.from_env({"CELERY_BROKER_URL": url}).broker_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://user:hunter2@b:80/",
        "amqp://user:hunter2@b:port//",
        "amqp://user:hunter2@b//;amqp://user:hunter2@c//",
        "kafka://user:hunter2@b:9092",
    ],
)
def test_a_bad_broker_is_refused_without_showing_its_secret(url: str) -> None:
    # Read without complaint (the API reads these settings and never uses the broker);
    # refused where the worker and beat read it.
    settings = Settings.from_env({"CELERY_BROKER_URL": url})
    with pytest.raises(SettingsError, match="CELERY_BROKER_URL") as caught:
        _ = settings.broker_url
    assert "hunter2" not in str(caught.value)


def test_broker_in_the_same_database_for_a_redis_with_only_db_0() -> None:
    settings = Settings.from_env(
        {"REDIS_URL": "rediss://u:pw@managed:6380/0", "CELERY_BROKER_DATABASE": "same"}
    )
    assert settings.broker_url == "rediss://u:pw@managed:6380/0"
    assert settings.broker_key_prefix == "celery:"
    assert Settings.from_env({}).broker_key_prefix is None


def test_sentinels_and_master_go_together() -> None:
    with pytest.raises(SettingsError, match="REDIS_SENTINEL_MASTER"):
        Settings.from_env({"REDIS_SENTINELS": "s1:26379"})
    with pytest.raises(SettingsError, match="REDIS_SENTINELS"):
        Settings.from_env({"REDIS_SENTINEL_MASTER": "cache"})
    with pytest.raises(SettingsError, match="REDIS_URL must be a redis://"):
        Settings.from_env(
            {
                "REDIS_URL": "unix:///run/redis.sock",
                "REDIS_SENTINELS": "s1:26379",
                "REDIS_SENTINEL_MASTER": "cache",
            }
        )


def test_broker_follows_the_sentinels() -> None:
    settings = Settings.from_env(
        {
            "REDIS_URL": "redis://:pw@ignored:6379/2",
            "REDIS_SENTINELS": "s1:26379, s2:26380,[::1]:26381",
            "REDIS_SENTINEL_MASTER": "cache",
        }
    )
    assert settings.redis_sentinels == (("s1", 26379), ("s2", 26380), ("::1", 26381))
    assert settings.broker_url == (
        "sentinel://:pw@s1:26379/3;sentinel://:pw@s2:26380/3;sentinel://:pw@[::1]:26381/3"
    )


@pytest.mark.parametrize("field", dataclasses.fields(Settings), ids=lambda field: field.name)
def test_every_field_is_declared_with_a_coercer_and_a_sentence(
    field: dataclasses.Field[object],
) -> None:
    # A field declared without setting(...) would have no variable and no table row.
    assert callable(field.metadata.get("coerce")), f"{field.name}: declare it with setting()"
    doc = field.metadata.get("doc")
    assert isinstance(doc, str) and doc.strip() and "|" not in doc, field.name
    assert field.default is not dataclasses.MISSING, field.name


@pytest.mark.parametrize("field", dataclasses.fields(Settings), ids=lambda field: field.name)
def test_every_field_reads_its_variable(field: dataclasses.Field[object]) -> None:
    name = field.name.upper()
    if name == "CELERY_BROKER_URL":  # read as given, checked when the worker uses it
        settings = Settings.from_env({name: "not a url"})
        assert settings.celery_broker_url == "not a url"
        with pytest.raises(SettingsError, match=name):
            settings.broker_url  # noqa: B018 - the property checks the URL
        return
    with pytest.raises(SettingsError, match=f"^{name}: "):
        Settings.from_env({name: "not valid!"})


def test_a_renamed_setting_is_read_under_its_old_name_with_a_warning() -> None:
    with pytest.warns(FutureWarning, match="EARLY_REFRESH_BETA is deprecated: set EARLY_REVAL"):
        settings = Settings.from_env({"EARLY_REFRESH_BETA": "2.5"})
    assert settings.early_revalidation_beta == 2.5
    # Both set: the new name wins, and the old one is said to be ignored.
    both = {"EARLY_REFRESH_BETA": "2.5", "EARLY_REVALIDATION_BETA": "0.5"}
    with pytest.warns(FutureWarning, match="EARLY_REFRESH_BETA is ignored"):
        assert Settings.from_env(both).early_revalidation_beta == 0.5
    with pytest.raises(SettingsError, match="^EARLY_REFRESH_BETA"), pytest.warns(FutureWarning):
        Settings.from_env({"EARLY_REFRESH_BETA": "-1"})


def test_precompute_takes_the_spellings_of_off_make_run_always_took() -> None:
    for raw in ("off", "0", "false", "No", " none "):
        assert Settings.from_env({"PRECOMPUTE": raw}).precompute == "off"
    assert Settings.from_env({"PRECOMPUTE": "ASKED"}).precompute == "asked"
    assert Settings.from_env({}).precompute == "all"


def test_the_registry_s_bounds_are_read() -> None:
    settings = Settings.from_env(
        {"REGISTRY_MAX_PAIRS": "5", "NEAR_CACHE_MAX_PAIRS": "7", "METRICS_MAX_PAIR_SERIES": "0"}
    )
    assert (
        settings.registry_max_pairs,
        settings.near_cache_max_pairs,
        settings.metrics_max_pair_series,
    ) == (5, 7, 0)
