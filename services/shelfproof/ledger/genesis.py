"""The genesis of a shelfproof network: its first organizations, their GS1 Company Prefixes, roles,
agents and people, with their keys.

``shelfproof up`` creates a development genesis once (kept under the state dir, keys with mode 0600)
that exercises the authorization model (README, "Trust model"): a consortium with its verifier
agents, a brand, a distributor, two stores and a supplier, each with service agents (``admin-N``,
transaction keys) and people (``person-N``, approvals keys). A real network writes its own genesis
with its members' public keys.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

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
    seed: bytes
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
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "chain_id": self.chain_id,
            "app_state": self.app_state_json(),
            "accounts": [
                {
                    "agent_id": a.agent_id, "organization_gln": a.organization_gln, "seed": a.seed.hex(),
                    "purpose": txpb.KeyPurpose.Name(a.purpose), "person_id": a.person_id,
                }
                for a in self.accounts.values()
            ],
        }
        path.write_text(json.dumps(payload, indent=2))
        path.chmod(0o600)

    @classmethod
    def load(cls, path: Path) -> "Genesis":
        payload = json.loads(path.read_text())
        state = json_format.ParseDict(payload["app_state"], st.GenesisState())
        accounts = {
            a["agent_id"]: GenesisAccount(
                a["agent_id"], a["organization_gln"], bytes.fromhex(a["seed"]),
                txpb.KeyPurpose.Value(a.get("purpose", "KEY_PURPOSE_TRANSACTIONS")), a.get("person_id", ""),
            )
            for a in payload.get("accounts", [])
        }
        return cls(payload["chain_id"], state, accounts)


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
