"""The genesis of a shelfproof network: its first organizations, their GS1 Company Prefixes, roles,
agents and people, with their keys.

``shelfproof up`` creates a development genesis once under the state dir: ``genesis.json``, the file every
service loads, holds public keys only; the development private keys are one file per agent (mode 0600)
in ``dev-keys/`` beside it, and each service reads only its own (``own_account``)
that exercises the authorization model (README, "Trust model"): a consortium with its verifier
agents, a brand, a distributor, two stores and a supplier, each with service agents (``admin-N``,
transaction keys) and people (``person-N``, approvals keys). A real network writes its own genesis
with its members' public keys.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from google.protobuf import json_format
from nacl.signing import SigningKey

from shelfproof.ledger.core.rules import CONSORTIUM_PERMISSIONS, PERMISSIONS
from shelfproof.ledger.core.tx import key_id_for
from shelfproof.ledger.signer import AccountSigner
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

ALL_PERMISSIONS = sorted(set(PERMISSIONS.values()))
ORGANIZATION_PERMISSIONS = [p for p in ALL_PERMISSIONS if p not in CONSORTIUM_PERMISSIONS]
APPROVER_PERMISSIONS = ["order::acknowledge", "order::approve-ai-draft"]
VERIFIER_PERMISSIONS = ["scan::record"]

CONSORTIUM_GLN = "0000000000017"  # GS1 reserves no meaning here; a valid GLN for the dev operator
DEMO_BRAND_GLN = "0614141000005"
DEMO_BRAND_PREFIX = "0614141"
DEMO_RETAILER_GLN = "4012345000009"
DEMO_RETAILER_PREFIX = "4012345"
DEMO_RETAILER_STORE_GLN = "4012345000016"
DEMO_SECOND_STORE_GLN = "4098765000003"
DEMO_DISTRIBUTOR_GLN = "5412345000006"
DEMO_SUPPLIER_GLN = "8712345000004"
# Beside a development genesis file: one private key per agent, readable by its owner only.
DEV_KEYS_DIR = "dev-keys"


def dev_key_file(genesis_file: Path, agent_id: str) -> Path:
    """Where the development key of ``agent_id`` is kept, beside ``genesis_file``."""
    return genesis_file.parent / DEV_KEYS_DIR / f"{agent_id.replace('/', '_')}.key"


@dataclass(frozen=True)
class Member:
    """An organisation of the genesis: its party GLN, name and GS1 Company Prefixes."""

    gln: str
    name: str
    company_prefixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenesisAccount:
    agent_id: str
    organization_gln: str
    seed: bytes = field(repr=False)  # never in a log line
    purpose: int = txpb.KEY_PURPOSE_TRANSACTIONS
    person_id: str = ""

    def signer(self, chain_id: str) -> AccountSigner:
        return AccountSigner(chain_id, self.agent_id, SigningKey(self.seed))


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    state: st.GenesisState
    accounts: dict[str, GenesisAccount]

    def app_state_json(self) -> dict:
        return json.loads(json_format.MessageToJson(self.state, preserving_proto_field_name=True))

    def save(self, path: Path) -> None:
        """The genesis with public keys only at ``path``; each agent's private key in its own file under
        ``dev-keys/`` beside it (folder 0700, files 0600)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "chain_id": self.chain_id,
            "app_state": self.app_state_json(),
            "accounts": [
                {
                    "agent_id": a.agent_id, "organization_gln": a.organization_gln,
                    "purpose": txpb.KeyPurpose.Name(a.purpose), "person_id": a.person_id,
                }
                for a in self.accounts.values()
            ],
        }
        if self.accounts:
            (path.parent / DEV_KEYS_DIR).mkdir(mode=0o700, exist_ok=True)
        for account in self.accounts.values():
            key_file = dev_key_file(path, account.agent_id)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(account.seed.hex())
        path.write_text(json.dumps(payload, indent=2))

    @classmethod
    def load(cls, path: Path, *, with_dev_keys: bool = True) -> "Genesis":
        """The genesis; with ``with_dev_keys`` (the development tools: demo seed, benches, tests) every agent's
        key from ``dev-keys/``. A service loads it without, and reads its own key with ``own_account``.
        A file written before the split still carries its seeds inline (refused outside development)."""
        payload = json.loads(path.read_text())
        state = json_format.ParseDict(payload["app_state"], st.GenesisState())
        accounts = {}
        for a in payload.get("accounts", []):
            seed = a.get("seed")
            if seed is None and with_dev_keys and (key_file := dev_key_file(path, a["agent_id"])).exists():
                seed = key_file.read_text().strip()
            if seed is None:
                continue
            accounts[a["agent_id"]] = GenesisAccount(
                a["agent_id"], a["organization_gln"], bytes.fromhex(seed),
                txpb.KeyPurpose.Value(a.get("purpose", "KEY_PURPOSE_TRANSACTIONS")), a.get("person_id", ""),
            )
        return cls(payload["chain_id"], state, accounts)


def service_account(
    genesis_file: Path, agent_id: str, *, key_file: Path | None, key: SecretStr | None, environment: str, tls
) -> tuple[Genesis, GenesisAccount]:
    """What a service's main() loads: the public genesis and the one account it signs as (``own_account``);
    outside development it refuses development keys and, with ``tls`` (TlsSettings), the development CA."""
    from shelfproof.runtime.identity import refuse_development_material

    genesis = Genesis.load(genesis_file, with_dev_keys=False)
    account, dev_key = own_account(genesis, genesis_file, agent_id, key_file=key_file, key=key)
    refuse_development_material(environment, tls, holds_private_keys=bool(genesis.accounts) or dev_key)
    return genesis, account


def own_account(
    genesis: Genesis, genesis_file: Path, agent_id: str, *, key_file: Path | None = None, key: SecretStr | None = None
) -> tuple[GenesisAccount, bool]:
    """The one account a service signs as: its private key from ``key`` (an environment variable) or
    ``key_file``, else (development) its file in ``dev-keys/`` or a pre-split genesis's inline seed. The key
    must be the one the genesis registered for the agent. Returns the account and whether its key is a
    development key. Errors never show the key."""
    agent = next((a for a in genesis.state.agents if a.agent_id == agent_id), None)
    dev = key is None and key_file is None
    try:
        if key is not None:
            seed = bytes.fromhex(key.get_secret_value().strip())
        elif key_file is not None:
            seed = bytes.fromhex(key_file.read_text().strip())
        elif dev_key_file(genesis_file, agent_id).exists():
            seed = bytes.fromhex(dev_key_file(genesis_file, agent_id).read_text().strip())
        elif agent_id in genesis.accounts:
            seed = genesis.accounts[agent_id].seed
        else:
            raise SystemExit(f"no signing key for agent {agent_id}: set the service's SIGNING_KEY_FILE or SIGNING_KEY")
    except (OSError, ValueError) as error:
        raise SystemExit(f"the signing key of agent {agent_id} is unreadable ({type(error).__name__})") from None
    if len(seed) != 32:
        raise SystemExit(f"the signing key of agent {agent_id} is not a 32-byte Ed25519 seed")
    if agent is not None and bytes(SigningKey(seed).verify_key) != agent.public_key:
        raise SystemExit(f"the signing key given is not the key the genesis registered for agent {agent_id}")
    gln = agent.organization_gln if agent is not None else agent_id.split("/", 1)[0]
    purpose = agent.purpose if agent is not None else txpb.KEY_PURPOSE_TRANSACTIONS
    person_id = agent.person_id if agent is not None else ""
    return GenesisAccount(agent_id, gln, seed, purpose, person_id), dev


def build_genesis(
    chain_id: str,
    organizations: list[Member | tuple],
    *,
    agents_per_org: int = 1,
    consortium_gln: str | None = None,
    people_per_org: int = 0,
) -> Genesis:
    """Organizations as ``Member`` or (gln, name[, prefixes]). Each gets an ``admin`` role (every
    organisation permission), an ``approver`` role, ``agents_per_org`` admin service agents and
    ``people_per_org`` people (``person-N``: a PERSON agent with its own approvals key).

    The organization ``consortium_gln`` is the consortium: its admin role holds the consortium
    permissions too, and it gets ``agents_per_org`` verifier agents (``verifier-N``, scan::record only).
    """
    state = st.GenesisState(consortium_gln=consortium_gln or "")
    accounts: dict[str, GenesisAccount] = {}

    def agent(gln: str, name: str, roles: list[str], kind: int, purpose: int, person_id: str = "") -> None:
        agent_id = f"{gln}/{name}"
        seed = secrets.token_bytes(32)
        public_key = bytes(SigningKey(seed).verify_key)
        state.agents.append(
            txpb.AddAgent(
                agent_id=agent_id, organization_gln=gln, key_id=key_id_for(public_key), public_key=public_key,
                roles=roles, kind=kind, person_id=person_id, purpose=purpose,
            )
        )
        accounts[agent_id] = GenesisAccount(agent_id, gln, seed, purpose, person_id)

    for org in organizations:
        member = org if isinstance(org, Member) else Member(org[0], org[1], tuple(org[2]) if len(org) > 2 else ())
        gln, consortium = member.gln, member.gln == consortium_gln
        state.organizations.add(gln=gln, name=member.name, company_prefixes=member.company_prefixes)
        state.roles.add(organization_gln=gln, role="admin", permissions=ALL_PERMISSIONS if consortium else ORGANIZATION_PERMISSIONS)
        state.roles.add(organization_gln=gln, role="approver", permissions=APPROVER_PERMISSIONS)
        if consortium:
            state.roles.add(organization_gln=gln, role="verifier", permissions=VERIFIER_PERMISSIONS)
        for n in range(agents_per_org):
            agent(gln, f"admin-{n}", ["admin"], txpb.AGENT_KIND_SERVICE, txpb.KEY_PURPOSE_TRANSACTIONS)
            if consortium:
                agent(gln, f"verifier-{n}", ["verifier"], txpb.AGENT_KIND_SERVICE, txpb.KEY_PURPOSE_TRANSACTIONS)
        for n in range(people_per_org):
            agent(gln, f"person-{n}", ["approver"], txpb.AGENT_KIND_PERSON, txpb.KEY_PURPOSE_APPROVALS, f"person-{n}")
    return Genesis(chain_id, state, accounts)


def development_genesis(chain_id: str = "shelfproof-dev") -> Genesis:
    return build_genesis(
        chain_id,
        [
            Member(CONSORTIUM_GLN, "shelfproof consortium"),
            Member(DEMO_BRAND_GLN, "Demo Brand Co", (DEMO_BRAND_PREFIX,)),
            Member(DEMO_DISTRIBUTOR_GLN, "Demo Distribution Co", ("5412345",)),
            Member(DEMO_RETAILER_GLN, "Demo Retail Co", (DEMO_RETAILER_PREFIX,)),
            Member(DEMO_SECOND_STORE_GLN, "Corner Store Co", ("4098765",)),
            Member(DEMO_SUPPLIER_GLN, "Demo Packaging Supplier", ("8712345",)),
        ],
        consortium_gln=CONSORTIUM_GLN,
        # Several agents each: services that sign concurrently (verify workers) need their own nonces.
        agents_per_org=4,
        # Two people per organisation: approval quorums of two distinct persons.
        people_per_org=2,
    )
