"""Keys: the genesis every service loads carries public keys only, each development key lives in a file of
its own (0600), and a service gets exactly its own key, checked against the key the genesis registered,
without the key ever appearing in an error or a repr."""

from __future__ import annotations

import json
import stat

import pytest
from nacl.signing import SigningKey
from pydantic import SecretStr

from shelfproof.ledger.genesis import (
    DEMO_BRAND_GLN, DEMO_BRAND_PREFIX, DEMO_RETAILER_GLN, DEMO_RETAILER_PREFIX, DEV_KEYS_DIR, Genesis, build_genesis,
    dev_key_file, own_account,
)

BRAND_AGENT = f"{DEMO_BRAND_GLN}/admin-0"


@pytest.fixture
def saved(tmp_path):
    genesis = build_genesis("keys-test", [(DEMO_BRAND_GLN, "brand", [DEMO_BRAND_PREFIX]),
                                          (DEMO_RETAILER_GLN, "retailer", [DEMO_RETAILER_PREFIX])], agents_per_org=2, people_per_org=1)
    path = tmp_path / "ledger" / "genesis.json"
    genesis.save(path)
    return genesis, path


def test_the_genesis_file_holds_public_keys_only_and_each_key_has_its_own_private_file(saved):
    genesis, path = saved
    text = path.read_text()
    assert "seed" not in text
    for account in genesis.accounts.values():
        assert account.seed.hex() not in text
        key_file = dev_key_file(path, account.agent_id)
        assert key_file.read_text() == account.seed.hex()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((path.parent / DEV_KEYS_DIR).stat().st_mode) == 0o700
    assert len(list((path.parent / DEV_KEYS_DIR).iterdir())) == len(genesis.accounts) == 6
    assert Genesis.load(path, with_dev_keys=False).accounts == {}  # what a service loads
    assert Genesis.load(path).accounts == genesis.accounts  # what the development tools load
    assert json.loads(text)["app_state"]["agents"]  # the public keys themselves are there


def test_a_service_gets_its_own_key_from_a_file_or_a_variable_checked_against_the_genesis(saved, tmp_path):
    genesis, path = saved
    public = Genesis.load(path, with_dev_keys=False)
    seed = genesis.accounts[BRAND_AGENT].seed
    own = tmp_path / "registry.key"
    own.write_text(seed.hex())
    account, dev = own_account(public, path, BRAND_AGENT, key_file=own)
    assert (account.seed, account.organization_gln, dev) == (seed, DEMO_BRAND_GLN, False)
    account, dev = own_account(public, path, BRAND_AGENT, key=SecretStr(seed.hex()))
    assert (account.seed, dev) == (seed, False)
    account, dev = own_account(public, path, BRAND_AGENT)  # development: its file in dev-keys/
    assert (account.seed, dev) == (seed, True)
    assert seed.hex() not in repr(account) and seed.hex() not in repr(SecretStr(seed.hex()))


@pytest.mark.parametrize("wrong", ["another agent's key", "a fresh key", "not hex", "too short", "missing"])
def test_a_key_that_is_not_the_agents_own_is_refused_without_showing_it(saved, tmp_path, wrong):
    genesis, path = saved
    public = Genesis.load(path, with_dev_keys=False)
    text = {
        "another agent's key": genesis.accounts[f"{DEMO_RETAILER_GLN}/admin-0"].seed.hex(),
        "a fresh key": bytes(SigningKey.generate()).hex(),
        "not hex": "zz" * 32,
        "too short": "00" * 16,
        "missing": None,
    }[wrong]
    key_file = tmp_path / "svc.key"
    if text is not None:
        key_file.write_text(text)
    with pytest.raises(SystemExit) as refused:
        own_account(public, path, BRAND_AGENT, key_file=key_file)
    assert BRAND_AGENT in str(refused.value) and (text is None or text not in str(refused.value))
    # and an agent with no key anywhere (no dev-keys file, nothing given) cannot start
    with pytest.raises(SystemExit, match="no signing key"):
        own_account(public, tmp_path / "elsewhere" / "genesis.json", BRAND_AGENT)


def test_outside_development_a_service_starts_only_with_a_key_it_was_given(saved, tmp_path):
    from shelfproof.ledger.genesis import service_account
    from shelfproof.runtime.settings import TlsSettings
    from shelfproof.runtime.tls import DevCertificateAuthority

    genesis, path = saved
    ca = DevCertificateAuthority.create_or_load(tmp_path / "ca", name="a member network's CA")
    tls = TlsSettings(cert_file=ca.issue("registry", DEMO_BRAND_GLN, "registry").cert_file, key_file=ca.directory / "registry.key",
                      ca_file=ca.ca_file, crl_file=ca.crl_file)
    with pytest.raises(SystemExit, match="development private keys"):  # the dev-keys/ fallback
        service_account(path, BRAND_AGENT, key_file=None, key=None, environment="production", tls=tls)
    given = SecretStr(genesis.accounts[BRAND_AGENT].seed.hex())
    public, account = service_account(path, BRAND_AGENT, key_file=None, key=given, environment="production", tls=tls)
    assert public.accounts == {} and account.seed == genesis.accounts[BRAND_AGENT].seed
