"""The shared deterministic log generator (../shared/bench/gen_logs.py), loaded by path."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

_CANDIDATES = [
    os.environ.get("MINISOURCE_GEN_LOGS", ""),
    str(Path(__file__).resolve().parents[2] / "shared" / "bench" / "gen_logs.py"),
    str(Path(__file__).resolve().parents[1] / "bench" / "gen_logs.py"),
]


def load_gen_logs() -> ModuleType:
    for candidate in _CANDIDATES:
        if candidate and Path(candidate).is_file():
            spec = importlib.util.spec_from_file_location("gen_logs", candidate)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise FileNotFoundError(
        "gen_logs.py not found: set MINISOURCE_GEN_LOGS or keep shared/ beside the repo"
    )
