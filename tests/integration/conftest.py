"""Fixtures shared by the integration tests: the planner's real model, one engine per test session."""

from tests.integration.planner_fixtures import planner_llm  # noqa: F401
