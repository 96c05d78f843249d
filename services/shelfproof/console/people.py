"""People who use the console, their roles, and their encrypted ledger keys.

``PEOPLE`` is the one table that says which ledger agent a person signs as; re-point it when the
genesis gives people agents of their own. The role decides the menu only: the services and the ledger
check every action against the agent's organisation and permissions themselves.

A key file holds the person's 32-byte Ed25519 seed sealed with ``nacl.secret.SecretBox`` under a key
derived from the passphrase with Argon2id (``nacl.pwhash.argon2id``), mode 0600. The seed is unsealed at
login and kept only in the session.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils
from nacl.signing import SigningKey

from shelfproof.ledger.genesis import CONSORTIUM_GLN, DEMO_BRAND_GLN, DEMO_DISTRIBUTOR_GLN, DEMO_RETAILER_GLN, DEMO_SUPPLIER_GLN

WAREHOUSE_STAFF = "warehouse staff"
STORE_MANAGER = "store manager"
BRAND_ADMIN = "brand admin"
SUPPLIER = "supplier"
AUDITOR = "auditor"


@dataclass(frozen=True)
class Person:
    login: str
    name: str
    role: str
    agent_id: str

    @property
    def organization_gln(self) -> str:
        return self.agent_id.split("/", 1)[0]


# person -> ledger agent: each person signs as a PERSON agent of the genesis (``<org GLN>/person-N``)
# with that person's approvals key, so an approval counts a distinct person (the planner submits drafts
# as the retailer's admin-1 service agent). Everything else a person does goes through the services,
# which sign with their own service agents (the registry as the brand).
PEOPLE: dict[str, Person] = {
    p.login: p
    for p in (
        Person("maria", "Maria Rossi", STORE_MANAGER, f"{DEMO_RETAILER_GLN}/person-0"),
        Person("sam", "Sam Okafor", STORE_MANAGER, f"{DEMO_RETAILER_GLN}/person-1"),
        Person("wes", "Wes Lindqvist", WAREHOUSE_STAFF, f"{DEMO_DISTRIBUTOR_GLN}/person-0"),
        Person("bea", "Bea Novak", BRAND_ADMIN, f"{DEMO_BRAND_GLN}/person-0"),
        Person("sol", "Sol Janssen", SUPPLIER, f"{DEMO_SUPPLIER_GLN}/person-0"),
        Person("ada", "Ada Mensah", AUDITOR, f"{CONSORTIUM_GLN}/person-0"),
    )
}

# Pages each role sees (file names under ui/pages/).
PAGES_BY_ROLE: dict[str, tuple[str, ...]] = {
    WAREHOUSE_STAFF: ("today", "scan", "stock", "ledger"),
    STORE_MANAGER: ("today", "scan", "stock", "drafts", "prices", "authenticity", "ledger"),
    BRAND_ADMIN: ("today", "scan", "products", "drafts", "authenticity", "ledger"),  # drafts: the orders it supplies
    SUPPLIER: ("today", "scan", "drafts", "ledger"),
    AUDITOR: ("today", "scan", "stock", "drafts", "prices", "authenticity", "ledger"),
}
# What a role may do on the Scan page and elsewhere (the ledger decides in the end).
ACTIONS_BY_ROLE: dict[str, tuple[str, ...]] = {
    WAREHOUSE_STAFF: ("receive", "ship"),
    STORE_MANAGER: ("receive", "sell", "report stolen", "destroy", "approve"),
    # the brand supplies the stores (acknowledge) and judges alarms on its codes (clear)
    BRAND_ADMIN: ("register", "commission", "void", "recall", "destroy", "acknowledge", "clear"),
    SUPPLIER: ("ship", "acknowledge"),
    AUDITOR: (),
}

KDF_OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
KDF_MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE


class WrongPassphrase(ValueError):
    pass


def key_dir(state_dir: Path) -> Path:
    return state_dir / "console" / "keys"


def key_file(state_dir: Path, login: str) -> Path:
    return key_dir(state_dir) / f"{login}.key"


def _box(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> nacl.secret.SecretBox:
    key = nacl.pwhash.argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase.encode(), salt, opslimit=opslimit, memlimit=memlimit)
    return nacl.secret.SecretBox(key)


def write_key_file(path: Path, person: Person, seed: bytes, passphrase: str) -> None:
    """Seal ``seed`` under ``passphrase`` into ``path`` (mode 0600 from the start)."""
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    sealed = _box(passphrase, salt, KDF_OPSLIMIT, KDF_MEMLIMIT).encrypt(seed)
    payload = {
        "agent_id": person.agent_id, "kdf": "argon2id", "opslimit": KDF_OPSLIMIT, "memlimit": KDF_MEMLIMIT,
        "salt": salt.hex(), "sealed": bytes(sealed).hex(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(payload, out)
    path.chmod(0o600)


def unlock_key_file(path: Path, passphrase: str, agent_id: str) -> SigningKey:
    """The person's signing key, or WrongPassphrase (also for a file sealed for another agent)."""
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise WrongPassphrase("no key file for this person; run the demo seed or ask an administrator") from None
    if payload.get("agent_id") != agent_id:
        raise WrongPassphrase("this key file belongs to another agent")
    # bounded so a crafted file cannot make the login spend minutes or gigabytes
    opslimit = min(int(payload["opslimit"]), nacl.pwhash.argon2id.OPSLIMIT_MODERATE)
    memlimit = min(int(payload["memlimit"]), nacl.pwhash.argon2id.MEMLIMIT_MODERATE)
    try:
        seed = _box(passphrase, bytes.fromhex(payload["salt"]), opslimit, memlimit).decrypt(bytes.fromhex(payload["sealed"]))
    except nacl.exceptions.CryptoError:
        raise WrongPassphrase("the passphrase does not open this key file") from None
    return SigningKey(seed)
