"""``python -m shelfproof.console``: the Streamlit console on 127.0.0.1 (``SHELFPROOF_CONSOLE_HOST``, ``_PORT``),
headless, without usage statistics, reaching the services at ``SHELFPROOF_CONSOLE_*_ADDRESS``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENTRY = Path(__file__).resolve().parents[3] / "ui" / "console.py"


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHELFPROOF_CONSOLE_", extra="ignore")
    # 0.0.0.0 only in a container, where the pod's network namespace is the boundary.
    host: str = "127.0.0.1"
    port: int = Field(default=8501, ge=1, le=65535)


def main() -> None:
    settings = ConsoleSettings()
    # exec, so `shelfproof up`'s SIGTERM (and the parent-death signal) reach Streamlit itself
    os.execv(sys.executable, [
        sys.executable, "-m", "streamlit", "run", str(ENTRY),
        "--server.address", settings.host, "--server.port", str(settings.port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none", "--global.developmentMode", "false",
        "--client.toolbarMode", "minimal",
    ])


if __name__ == "__main__":
    main()
