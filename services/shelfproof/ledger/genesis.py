"""The genesis of a shelfproof network: its first organizations, roles, agents and their keys.

``shelfproof up`` creates a development genesis once (kept under the state dir, keys with mode 0600):
a consortium operator and a demo brand and retailer, each with an admin agent holding every
permission of its organization. A real network writes its own genesis with its members' public keys.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format
from nacl.signing import SigningKey

from shelfproof.ledger.rules import PERMISSIONS
from shelfproof.ledger.tx import AccountSigner, key_id_for
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

ALL_PERMISSIONS = sorted(set(PERMISSIONS.values()))
ORGANIZATION_PERMISSIONS = [p for p in ALL_PERMISSIONS if p != "org::register"]

CONSORTIUM_GLN = "0000000000017"  # GS1 reserves no meaning here; a valid GLN for the dev operator
DEMO_BRAND_GLN = "0614141000005"
DEMO_RETAILER_GLN = "0614141000012"


@dataclass(frozen=True)
class GenesisAccount:
    agent_id: str
    organization_gln: str
    seed: bytes

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
                {"agent_id": a.agent_id, "organization_gln": a.organization_gln, "seed": a.seed.hex()}
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
            a["agent_id"]: GenesisAccount(a["agent_id"], a["organization_gln"], bytes.fromhex(a["seed"]))
            for a in payload.get("accounts", [])
        }
        return cls(payload["chain_id"], state, accounts)


def build_genesis(
    chain_id: str,
    organizations: list[tuple[str, str]],
    *,
    agents_per_org: int = 1,
    consortium_gln: str | None = None,
) -> Genesis:
    """Organizations (gln, name), each with an ``admin`` role and ``agents_per_org`` admin agents.

    The organization ``consortium_gln`` also gets ``org::register``, so it can onboard members.
    """
    state = st.GenesisState()
    accounts: dict[str, GenesisAccount] = {}
    for gln, name in organizations:
        state.organizations.add(gln=gln, name=name)
        permissions = ALL_PERMISSIONS if gln == consortium_gln else ORGANIZATION_PERMISSIONS
        state.roles.add(organization_gln=gln, role="admin", permissions=permissions)
        for n in range(agents_per_org):
            agent_id = f"{gln}/admin-{n}"
            seed = secrets.token_bytes(32)
            public_key = bytes(SigningKey(seed).verify_key)
            state.agents.append(
                txpb.AddAgent(
                    agent_id=agent_id, organization_gln=gln, key_id=key_id_for(public_key), public_key=public_key, roles=["admin"]
                )
            )
            accounts[agent_id] = GenesisAccount(agent_id, gln, seed)
    return Genesis(chain_id, state, accounts)


def development_genesis(chain_id: str = "shelfproof-dev") -> Genesis:
    return build_genesis(
        chain_id,
        [
            (CONSORTIUM_GLN, "shelfproof consortium"),
            (DEMO_BRAND_GLN, "Demo Brand Co"),
            (DEMO_RETAILER_GLN, "Demo Retail Co"),
        ],
        consortium_gln=CONSORTIUM_GLN,
        # Several agents each: services that sign concurrently (verify workers) need their own nonces.
        agents_per_org=4,
    )
