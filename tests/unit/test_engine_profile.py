"""The planner's engine settings follow the machine: bf16 only where the CPU computes it natively."""

from __future__ import annotations

import os

import pytest

from shelfproof.planner.llm import LLMConfig, LLMSettings, _engine_env, engine_profile
from shelfproof.runtime.machine import Machine, _cpuinfo_fields, calibration, this_machine

ZEN3 = Machine("AMD EPYC 7B13", 2, frozenset({"avx2", "fma", "sse4_2"}), 24 * 2**30)
ZEN4 = Machine("AMD EPYC 9B14", 2, frozenset({"avx2", "avx512f", "avx512_bf16"}), 24 * 2**30)
SAPPHIRE = Machine("Intel Xeon Platinum 8481C", 16, frozenset({"avx512f", "amx_bf16", "amx_tile"}), 128 * 2**30)


def test_dtype_is_bf16_only_with_native_bf16() -> None:
    assert engine_profile("cpu", machine=ZEN3).dtype == "float32"
    assert "no native bf16" in engine_profile("cpu", machine=ZEN3).dtype_reason
    assert engine_profile("cpu", machine=ZEN4).dtype == "bfloat16"
    assert engine_profile("cpu", machine=SAPPHIRE).dtype == "bfloat16"
    assert "amx_bf16" in engine_profile("cpu", machine=SAPPHIRE).dtype_reason
    # the GPU path is unchanged; a setting wins over the machine
    assert engine_profile("gpu", machine=ZEN3).dtype == "bfloat16"
    assert engine_profile("cpu", dtype="bfloat16", machine=ZEN3).dtype == "bfloat16"


def test_threads_and_kv_cache_from_the_machine() -> None:
    small, big = engine_profile("cpu", machine=ZEN3), engine_profile("cpu", machine=SAPPHIRE)
    assert (small.omp_threads, small.cpu_kv_cache_gib) == (1, 1)  # two cores: one for the engine
    assert (big.omp_threads, big.cpu_kv_cache_gib) == (15, 8)  # one core left for the platform
    assert engine_profile("cpu", omp_threads=64, machine=ZEN3).omp_threads == 2  # never more than there are


def test_settings_reach_the_config_and_the_engine_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELFPROOF_PLANNER_DTYPE", "float32")
    monkeypatch.setenv("SHELFPROOF_PLANNER_OMP_THREADS", "1")
    config = LLMSettings().llm_config(model_path="/nonexistent", model_name="m", weights_digest="sha256:00")
    resolved = config.resolved()
    assert (resolved.dtype, resolved.omp_threads, resolved.dtype_reason) == ("float32", 1, "set by SHELFPROOF_PLANNER_DTYPE")
    env = _engine_env(resolved)
    assert env["VLLM_HOST_IP"] == "127.0.0.1"
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 1:  # fewer threads than cores: not pinned to the first ones (two engines would share them)
        assert (env["VLLM_CPU_OMP_THREADS_BIND"], env["OMP_NUM_THREADS"]) == ("nobind", "1")
    every = _engine_env(resolved.model_copy(update={"omp_threads": len(cores)}))
    assert every["VLLM_CPU_OMP_THREADS_BIND"] == ",".join(map(str, cores)) and "OMP_NUM_THREADS" not in every
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    with pytest.raises(ValueError):
        LLMConfig(dtype="int3")


def test_cpuinfo_parsing_and_calibration() -> None:
    model, flags = _cpuinfo_fields("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\n")
    assert model == "AMD EPYC 7B13" and flags == {"fpu", "avx2", "fma"}
    here = this_machine()
    assert here.cores >= 1 and here.memory_bytes > 2**30 and here.cpu_model
    measured = calibration(seconds=0.05)
    assert measured["cpu_model"] == here.cpu_model and measured["cores"] == here.cores
    assert measured["ed25519_verify_per_s_per_core"] > 1_000 and measured["sha256_1k_mb_per_s"] > 50
