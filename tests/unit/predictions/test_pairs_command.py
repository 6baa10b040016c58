"""The pairs command (python -m predictions.pairs) against fakeredis."""

from __future__ import annotations

import io
from pathlib import Path

import fakeredis
import pytest
import redis

from predictions import pairs as command
from predictions.infra.keys import registry_key
from predictions.pairs import BadInput, canonical_pairs, parse_entry, parse_lines, parser, run
from predictions.registry import SOURCE_COMMAND, Freshness, PairRegistry, RegistryRefused
from predictions.settings import Settings

DEFAULTS = Freshness(ttl_seconds=30, refresh_seconds=10)


@pytest.fixture
def registry(redis_client: fakeredis.FakeRedis) -> PairRegistry:
    return PairRegistry(redis_client, max_pairs=6)


def _run(settings: Settings, registry: PairRegistry, *argv: str) -> str:
    return run(parser().parse_args(argv), settings, registry)


def test_a_file_takes_a_pair_a_line_with_comments_blanks_and_columns() -> None:
    lines = [
        "# the pairs we serve",
        "",
        "eth-eur",
        "  BTC-EUR   60   20  # volatile",
        "SOL-EUR 120",
        "ADA-EUR - 5",
        "XRP-EUR - -",
        "   ",
    ]
    assert parse_lines(lines, DEFAULTS) == {
        "ETH-EUR": "",
        "BTC-EUR": "60:20",
        "SOL-EUR": "120:",
        "ADA-EUR": ":5",
        "XRP-EUR": "",
    }


def test_every_bad_line_is_named_by_its_number() -> None:
    lines = [
        "ETH-EUR",
        "BTC-USD 30 10 20",  # 2: four columns
        "BTC_EUR",  # 3: malformed
        "SOL-EUR 0",  # 4: TTL not > 0
        "",
        "ADA-EUR 30 30",  # 6: refresh not within the TTL
        "XRP-EUR 5",  # 7: the settings' refresh (10 s) outlives a 5 s TTL
        "DOT-EUR abc",  # 8
        "# fine",
    ]
    with pytest.raises(BadInput) as caught:
        parse_lines(lines, DEFAULTS)
    message = str(caught.value).splitlines()
    assert [line.split(":")[0] for line in message] == [
        "line 2",
        "line 3",
        "line 4",
        "line 6",
        "line 7",
        "line 8",
    ]
    assert "4 columns" in message[0]
    assert "'BTC_EUR' is not a currency pair" in message[1]


def test_many_bad_lines_are_named_up_to_a_bound_then_counted() -> None:
    lines = ["ETH-EUR"] + [f"bad pair {i} x" for i in range(25)]
    with pytest.raises(BadInput) as caught:
        parse_lines(lines, DEFAULTS)
    message = str(caught.value).splitlines()
    assert len(message) == command.SHOWN_ERRORS + 1
    assert message[0].startswith("line 2:") and message[19].startswith("line 21:")
    assert message[-1] == "... and 5 more bad lines"


def test_parse_entry_checks_the_pair_s_values_against_the_settings() -> None:
    assert parse_entry("ETH-EUR", None, None, DEFAULTS) == ""
    assert parse_entry("ETH-EUR", "60", None, DEFAULTS) == "60:"
    assert parse_entry("ETH-EUR", "-", "5", DEFAULTS) == ":5"
    with pytest.raises(ValueError, match="shorter than the TTL"):
        parse_entry("ETH-EUR", None, "30", DEFAULTS)


def test_canonical_pairs_spells_each_once_and_names_every_bad_one() -> None:
    assert canonical_pairs(["eth-eur", "ETH-EUR", "btc-eur"]) == ["ETH-EUR", "BTC-EUR"]
    with pytest.raises(BadInput) as caught:
        canonical_pairs(["ETH-EUR", "x", "y!"])
    assert len(str(caught.value).splitlines()) == 2


def test_list_before_anything_is_seeded_prints_pairs_and_writes_nothing(
    settings: Settings, registry: PairRegistry, redis_client: fakeredis.FakeRedis
) -> None:
    assert _run(settings, registry, "list").splitlines() == list(settings.pairs)
    assert redis_client.dbsize() == 0


def test_a_first_add_starts_from_pairs(settings: Settings, registry: PairRegistry) -> None:
    assert _run(settings, registry, "add", "sol-eur") == "1 added, 0 updated; 5 known pairs"
    assert _run(settings, registry, "list").splitlines() == sorted([*settings.pairs, "SOL-EUR"])
    assert registry.read().source == SOURCE_COMMAND


def test_add_sets_a_pair_s_own_freshness_and_list_long_shows_it(
    settings: Settings, registry: PairRegistry
) -> None:
    out = _run(settings, registry, "add", "SOL-EUR", "ETH-EUR", "--ttl", "90", "--refresh", "15")
    assert out == "1 added, 1 updated; 5 known pairs"
    assert registry.read().entries["ETH-EUR"] == "90:15"
    long = _run(settings, registry, "list", "--long").splitlines()
    assert "ETH-EUR  ttl=90  refresh=15" in long
    assert "BTC-EUR  ttl=30  refresh=10  (the settings')" in long


def test_add_of_a_bad_pair_or_value_writes_nothing(
    settings: Settings, registry: PairRegistry, redis_client: fakeredis.FakeRedis
) -> None:
    with pytest.raises(BadInput, match="not a currency pair"):
        _run(settings, registry, "add", "SOL-EUR", "nope")
    with pytest.raises(BadInput, match="shorter than the TTL"):
        _run(settings, registry, "add", "SOL-EUR", "--refresh", "45")
    with pytest.raises(BadInput, match="ttl"):
        _run(settings, registry, "add", "SOL-EUR", "--ttl", "-3")
    assert not redis_client.hexists(registry_key(), "SOL-EUR")


def test_add_past_the_bound_is_refused_and_adds_nothing(
    settings: Settings, registry: PairRegistry
) -> None:
    _run(settings, registry, "add", "SOL-EUR")  # 5 of 6
    before = registry.read()
    with pytest.raises(RegistryRefused, match="REGISTRY_MAX_PAIRS"):
        _run(settings, registry, "add", "ADA-EUR", "XRP-EUR")
    assert registry.read() == before


def test_remove_of_an_unknown_pair_removes_nothing(
    settings: Settings, registry: PairRegistry
) -> None:
    registry.seed(settings.pairs)
    with pytest.raises(RegistryRefused, match="not known pairs: SOL-EUR"):
        _run(settings, registry, "remove", "ETH-EUR", "SOL-EUR")
    assert set(registry.read().entries) == set(settings.pairs)
    out = _run(settings, registry, "remove", "eth-eur", "ETH-EUR")
    assert out == "1 removed; their predictions expire on their own"
    assert set(registry.read().entries) == set(settings.pairs) - {"ETH-EUR"}


def test_load_makes_the_known_pairs_a_file_s(
    settings: Settings, registry: PairRegistry, tmp_path: Path
) -> None:
    registry.seed(settings.pairs)
    path = tmp_path / "pairs.txt"
    path.write_text("# two pairs\nETH-EUR 60\nsol-eur\n", encoding="utf-8")
    assert _run(settings, registry, "load", str(path)) == "2 known pairs: 1 added, 3 removed"
    assert registry.read().entries == {"ETH-EUR": "60:", "SOL-EUR": ""}


def test_load_merge_adds_and_keeps_the_others(
    settings: Settings, registry: PairRegistry, tmp_path: Path
) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text("ETH-EUR 60\nSOL-EUR\n", encoding="utf-8")
    out = _run(settings, registry, "load", "--merge", str(path))
    assert out == "1 added, 1 updated; 5 known pairs"
    assert registry.read().entries["ETH-EUR"] == "60:"
    assert set(registry.read().entries) == {*settings.pairs, "SOL-EUR"}


def test_load_of_a_file_with_bad_lines_writes_nothing(
    settings: Settings, registry: PairRegistry, tmp_path: Path
) -> None:
    registry.seed(settings.pairs)
    before = registry.read()
    path = tmp_path / "pairs.txt"
    path.write_text("SOL-EUR\nbad!\nADA-EUR 1 2\n", encoding="utf-8")
    with pytest.raises(BadInput) as caught:
        _run(settings, registry, "load", str(path))
    assert str(caught.value).splitlines() == [
        "line 2: 'bad!' is not a currency pair: expected BASE-QUOTE, two to ten letters or "
        "digits each, such as ETH-EUR",
        "line 3: refresh every 2 s must be shorter than the TTL of 1 s (a third of it is "
        "best: two refreshes in a row can then fail before the pair goes cold); the "
        "settings give the one not set (PREDICTION_TTL_SECONDS=30, "
        "REFRESH_INTERVAL_SECONDS=10)",
    ]
    assert registry.read() == before


def test_load_past_the_bound_writes_nothing(
    settings: Settings, registry: PairRegistry, tmp_path: Path
) -> None:
    registry.seed(settings.pairs)
    before = registry.read()
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join(f"P{i}-EUR" for i in range(7)), encoding="utf-8")
    with pytest.raises(RegistryRefused, match="nothing was written"):
        _run(settings, registry, "load", str(path))
    assert registry.read() == before


def test_load_reads_standard_input_and_names_a_file_it_cannot_read(
    settings: Settings,
    registry: PairRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("SOL-EUR\n"))
    assert _run(settings, registry, "load", "-") == "1 known pairs: 1 added, 4 removed"
    missing = tmp_path / "missing.txt"
    with pytest.raises(BadInput, match=f"cannot read {missing}"):
        _run(settings, registry, "load", str(missing))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BadInput, match="cannot read"):
        _run(settings, registry, "load", str(binary))
    assert set(registry.read().entries) == {"SOL-EUR"}


@pytest.fixture
def main_env(
    monkeypatch: pytest.MonkeyPatch, redis_client: fakeredis.FakeRedis
) -> fakeredis.FakeRedis:
    """main() with the environment's settings, against fakeredis."""
    monkeypatch.setenv("PAIRS", "ETH-EUR,BTC-EUR")
    monkeypatch.setenv("REGISTRY_MAX_PAIRS", "3")
    monkeypatch.setattr(command, "make_redis", lambda settings, client_name: redis_client)
    # Its loggers are the test run's: leave them as they are.
    monkeypatch.setattr(command, "configure_logging", lambda *args: None)
    return redis_client


def test_main_prints_the_result_and_exits_0(
    main_env: fakeredis.FakeRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert command.main(["list"]) == 0
    assert capsys.readouterr().out == "ETH-EUR\nBTC-EUR\n"
    assert command.main(["add", "SOL-EUR"]) == 0
    assert capsys.readouterr().out == "1 added, 0 updated; 3 known pairs\n"


def test_main_says_what_it_refused_on_stderr_and_exits_1(
    main_env: fakeredis.FakeRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert command.main(["add", "SOL-EUR", "ADA-EUR"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pairs add: the registry would hold 4 pairs")
    assert command.main(["remove", "XRP-EUR"]) == 1
    assert (
        capsys.readouterr().err == "pairs remove: not known pairs: XRP-EUR; nothing was removed\n"
    )
    assert set(PairRegistry(main_env, 3).read().entries) == {"ETH-EUR", "BTC-EUR"}


def test_main_names_redis_without_its_password_when_it_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Down(fakeredis.FakeRedis):
        def execute_command(self, *args: object, **options: object) -> object:
            raise redis.ConnectionError("Error connecting to redis://:s3cret@cache:6379/0")

    monkeypatch.setenv("REDIS_URL", "redis://:s3cret@cache:6379/0")
    monkeypatch.setattr(command, "make_redis", lambda settings, client_name: Down())
    monkeypatch.setattr(command, "configure_logging", lambda *args: None)
    assert command.main(["add", "SOL-EUR"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pairs add: Redis at redis://")
    assert "s3cret" not in err
