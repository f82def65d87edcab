"""Network guards: a testnet stage never trades a mainnet, whatever the config says."""

from __future__ import annotations

import pytest

from engine.guards import classify_evm, classify_solana, live_mode, live_problems, network_problems
from engine.settings import Settings, SettingsError
from engine.stages import stage

from chains.evm_tester import serve


def live_settings(tmp_path, profile: str, **chain) -> Settings:
    return Settings(home=tmp_path, profile=profile, mode="live", chains={"base": {"kind": "evm", **chain}})


async def test_testnet_stage_refuses_an_endpoint_that_is_mainnet(tmp_path):
    with serve(chain_id=1) as url:  # the in-process EVM, told it is Ethereum mainnet
        settings = live_settings(tmp_path, "testnet", rpc_url=url)
        with pytest.raises(SettingsError) as info:
            await live_mode(settings)
    assert str(info.value) == ("chains.base: the endpoint is chain id 1 (Ethereum mainnet), a mainnet network; "
                               "stage testnet trades on paper and testnet only")


async def test_testnet_stage_refuses_a_config_that_claims_a_testnet_id_for_a_mainnet(tmp_path):
    with serve(chain_id=8453) as url:
        settings = live_settings(tmp_path, "testnet", rpc_url=url, chain_id=84532)
        with pytest.raises(SettingsError, match=r"Base\), a mainnet network.*\(and 1 more\)"):
            await live_mode(settings)


async def test_testnet_stage_accepts_a_test_network(tmp_path):
    with serve(chain_id=11155111) as url:  # Sepolia
        settings = live_settings(tmp_path, "testnet", rpc_url=url, chain_id=11155111)
        await live_mode(settings)


async def test_an_unreachable_endpoint_is_named_without_its_credentials(tmp_path):
    settings = live_settings(tmp_path, "testnet", rpc_url="http://user:secret@127.0.0.1:9/rpc?key=k")
    with pytest.raises(SettingsError) as info:
        await live_mode(settings)
    assert str(info.value).startswith("chains.base: endpoint http://127.0.0.1:9/… unreachable: ")
    assert "secret" not in str(info.value) and "key=k" not in str(info.value)


async def test_a_node_down_is_exit_1_but_never_hides_a_setting_that_is_wrong(tmp_path):
    """Unreachable (exit 1: the same command may get past it later) only when nothing is wrong in the
    settings themselves: a wrong chain id on another chain is exit 2 and is named first."""
    from engine.settings import Unreachable

    from chains.jsonrpc import serve as answer

    down = {"kind": "evm", "rpc_url": "http://127.0.0.1:9/rpc"}
    with pytest.raises(Unreachable) as info:
        await live_mode(Settings(home=tmp_path, profile="testnet", mode="live", chains={"alpha": down}))
    assert info.value.code == 1 and "chains.alpha: endpoint http://127.0.0.1:9/… unreachable" in str(info.value)
    with serve(chain_id=8453) as url:  # Base mainnet, configured as Base Sepolia
        chains = {"alpha": down, "zeta": {"kind": "evm", "rpc_url": url, "chain_id": 84532}}
        with pytest.raises(SettingsError) as info:
            await live_mode(Settings(home=tmp_path, profile="testnet", mode="live", chains=chains))
    assert info.value.code == 2 and str(info.value).startswith("chains.zeta: ") and "more)" in str(info.value)
    # a node that answers with a JSON-RPC error says what it answered, not "not a JSON-RPC endpoint?"
    with answer(lambda method, params: {"error": {"code": -32005, "message": "daily request count exceeded"}}) as url:
        limited = {"kind": "evm", "rpc_url": url + "/v3/SECRETKEY"}
        with pytest.raises(Unreachable) as info:
            await live_mode(Settings(home=tmp_path, profile="testnet", mode="live", chains={"alpha": limited}))
    assert "it answered 'daily request count exceeded'" in str(info.value) and "SECRETKEY" not in str(info.value)


@pytest.mark.parametrize("url", ["mainnet.helius-rpc.com/?api-key=SECRET123", "https://rpc.example.org/v2/SECRET x",
                                 "ftp://host/SECRET"])
def test_an_endpoint_that_is_not_a_url_is_refused_without_echoing_it(clean_env, monkeypatch, url):
    from engine.settings import load_settings

    monkeypatch.setenv("BOTCTL_CHAINS__BASE__KIND", "evm")
    monkeypatch.setenv("BOTCTL_CHAINS__BASE__RPC_URL", url)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith("BOTCTL_CHAINS__BASE__RPC_URL: Value error, must be an http(s)://")
    assert "SECRET" not in str(info.value)


async def test_a_secret_in_the_endpoint_path_never_reaches_the_message(tmp_path):
    settings = live_settings(tmp_path, "testnet", rpc_url="http://127.0.0.1:9/v2/SECRETKEY")
    with pytest.raises(SettingsError) as info:
        await live_mode(settings)
    assert "SECRETKEY" not in str(info.value)


@pytest.mark.parametrize("chain_id, network", [(1, "mainnet"), (8453, "mainnet"), (11155111, "testnet"),
                                               (31337, "testnet"), (424242, "mainnet")])
def test_evm_networks_are_testnet_only_when_known_to_be(chain_id, network):
    assert classify_evm(chain_id).network == network


@pytest.mark.parametrize("genesis, url, network", [
    ("5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d", "http://127.0.0.1:8899", "mainnet"),
    ("EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG", "https://api.devnet.solana.com", "testnet"),
    ("SomeLocalGenesis1111111111111111111111111111", "http://127.0.0.1:8899", "testnet"),
    ("SomeLocalGenesis1111111111111111111111111111", "https://rpc.example.com", "mainnet"),
])
def test_solana_networks_by_genesis_hash(genesis, url, network):
    assert classify_solana(genesis, url).network == network


def test_live_funds_need_a_stage_that_allows_them_and_keys_when_dry_run_is_off(tmp_path):
    mainnet = {"base": classify_evm(8453)}
    settings = Settings(home=tmp_path, profile="testnet", mode="live", dry_run=False)
    assert live_problems(stage("testnet"), settings, mainnet, {"base": None}) == [
        "stage testnet does not allow live funds (promote with botctl rollout)"]
    assert live_problems(stage("soft-launch"), settings, mainnet, {"base": "no keystore configured"}) == [
        "chains.base: no keystore configured"]
    assert live_problems(stage("soft-launch"), settings, mainnet, {"base": None}) == []
    assert network_problems(stage("soft-launch"), mainnet, {"base": 8453}) == []


def test_an_endpoint_with_credentials_in_its_url_is_asked_with_http_basic_auth():
    """`https://user:secret@host/...` is how some providers take their key: urllib alone would read
    `user:secret@host` as the host. The probe sends the credentials as HTTP Basic instead."""
    import base64

    from engine.guards import _rpc

    from chains.jsonrpc import serve

    seen = {}
    with serve(lambda method, params: {"result": "0x7a69"}, lambda path, headers: seen.update(path=path, **headers)) \
            as url:
        port = url.rsplit(":", 1)[1]
        assert _rpc(f"http://us%40er:s3cret@127.0.0.1:{port}/v1/KEY", "eth_chainId", 5) == "0x7a69"
    assert base64.b64decode(seen["Authorization"].split()[1]) == b"us@er:s3cret" and seen["path"] == "/v1/KEY"
