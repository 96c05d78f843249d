"""SQLAlchemy engines over psycopg 3, built from a DSN that settings hand in."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import create_engine


def sqlalchemy_url(dsn: str) -> str:
    """postgresql://… → postgresql+psycopg://… (psycopg 3 rather than SQLAlchemy's psycopg2 default)."""
    if dsn.startswith("postgresql://"):
        return "postgresql+psycopg://" + dsn.removeprefix("postgresql://")
    if dsn.startswith("postgres://"):
        return "postgresql+psycopg://" + dsn.removeprefix("postgres://")
    return dsn


def make_engine(dsn: str, *, pool_size: int = 5) -> Engine:
    return create_engine(sqlalchemy_url(dsn), pool_size=pool_size, pool_pre_ping=True)
