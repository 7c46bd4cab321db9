"""The runtime stage: what a backend is asked to do and what it hands back.

A backend turns a conversation and a JSON schema into one constrained generation. The llama.cpp backend
(`localpanel.llama`) is the real one; `localpanel.scripted` replays canned answers for fast tests.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from localpanel.weights.registry import ModelSpec, Participant


class Sampling(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_k: int = Field(default=40, ge=0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    min_p: float = Field(default=0.05, ge=0.0, lt=1.0)
    repeat_penalty: float = Field(default=1.1, ge=1.0, le=2.0)
    # How a choice among alternatives (a vote, who persuaded whom) is made: drawn from the model's probabilities
    # at ``temperature``, or (False) the most probable alternative, the model's own view. Free text is sampled
    # at ``temperature`` either way.
    draw_choices: bool = True
    # An integer answer is a vote too: written greedily (the most probable digit at each step) unless drawn. Runs
    # made before decoder 3 sampled it at ``temperature``, and are decoded so again.
    greedy_integers: bool = False

    @classmethod
    def of(cls, participant: Participant, temperature: float | None = None, draw_choices: bool = True,
           greedy_integers: bool = False) -> "Sampling":
        return cls(
            greedy_integers=greedy_integers,
            temperature=participant.temperature if temperature is None else temperature,
            top_k=participant.top_k,
            top_p=participant.top_p,
            min_p=participant.min_p,
            repeat_penalty=participant.repeat_penalty,
            draw_choices=draw_choices,
        )


class RuntimeSettings(BaseModel):
    """How llama.cpp runs: the same settings (and build) are needed to replay a run bit for bit."""

    model_config = ConfigDict(extra="forbid")
    threads: int | None = Field(default=None, ge=1, description="None: one per physical core")
    batch_size: int = Field(default=512, ge=8, le=8192)
    context_length: int = Field(default=4096, ge=512, description="upper bound; a model's own limit wins if smaller")
    gpu_layers: int = Field(default=0, ge=-1, description="-1: all")
    max_memory: int | None = Field(default=None, ge=1, description="bytes of model weights kept loaded")
    # Participants that share a model and are asked together share a context and each llama_decode. Batched
    # and one-at-a-time runs can differ in the last bits of the logits, so a run replays with its own setting.
    batch_sequences: bool = True


class Message(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    role: Literal["system", "user", "assistant"]
    content: str
    # For an assistant turn: the exact tokens and schema it was decoded with, so that a backend that lost its
    # state (a resumed run, an unloaded model) can rebuild it by evaluating the same tokens the same way.
    tokens: list[int] | None = None
    schema_: dict | None = Field(default=None, alias="schema")
    # For the last user turn: the same message with the options shown in other rotations. The vote is scored
    # after each of them too and the probabilities averaged, which cancels a preference for a position.
    variants: list[str] | None = None


class GenerationRequest(BaseModel):
    """One constrained generation in one participant's ongoing conversation."""

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)
    key: str = Field(description="whose conversation (one KV state per key)")
    model: ModelSpec
    model_path: Path
    messages: list[Message]
    schema_: dict = Field(alias="schema")
    sampling: Sampling
    seed: int
    max_tokens: int = Field(default=512, ge=8)
    # Contexts are sized to the most tokens this conversation will need (at most the model's window): the
    # tokens of ``context_base`` (its first prompt), counted once the model is loaded, plus ``context_extra``.
    context_base: list[Message] | None = None
    context_extra: int = Field(default=0, ge=0)
    # A turn already recorded (in a journal): decode exactly these tokens, sampling nothing, so that a batch it
    # was part of is composed again as it was. Its generation is not reported.
    replay: list[int] | None = None
    # The copy guard (see copyguard.py): texts this turn's free text may not copy a run of ``copy_guard`` words
    # from (the peers' rationales, its own earlier ones, its prompt's instructions) unless ``quotable`` (the
    # question and options) holds it; shorter quotes stay possible. ``copy_guard_by`` "tokens": the guard of
    # runs saved before it counted words.
    avoid: list[str] | None = None
    quotable: list[str] | None = None
    copy_guard: int | None = Field(default=None, ge=2)
    copy_guard_by: Literal["words", "tokens"] = "words"
    # The scripts free text may use besides Latin (the question's; see scripts.py); None: any, as runs made
    # before decoder 3 had it.
    scripts: tuple[str, ...] | None = None
    # The requests of a batch open alike (the shared layout, the moderator's passages): a backend may evaluate
    # their common opening once and copy it to each (see turns.share). Only fresh prompts (no earlier answers) share.
    share_prefix: bool = False


class ChoiceRecord(BaseModel):
    """A choice among alternatives, with the model's own probability of each complete alternative: averaged
    over the rotations of the options scored, with ``raw`` those of the order shown alone (None: one order)."""

    values: list[Any]
    probabilities: list[float]
    chosen: int
    raw: list[float] | None = None


class Generation(BaseModel):
    text: str
    tokens: list[int]
    choices: dict[str, ChoiceRecord] = Field(default_factory=dict)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    prompt_seconds: float = 0.0  # of ``seconds``, evaluating the prompt's new tokens
    # Time spent re-evaluating earlier turns because the state was lost (resume, unloaded model).
    rebuild_seconds: float = 0.0
    failure: str | None = None


TokenCallback = Callable[[int], None]
DoneCallback = Callable[[int, Generation], None]


class Backend(Protocol):
    def generate(self, request: GenerationRequest, on_token: TokenCallback | None = None) -> Generation:
        """Run one constrained generation."""

    def generate_many(
        self,
        requests: list[GenerationRequest],
        on_token: Callable[[int, int], None] | None = None,
        on_done: DoneCallback | None = None,
    ) -> list[Generation | None]:
        """Run independent requests (one round's turns), in whatever grouping the backend likes, calling
        ``on_done(i, generation)`` as each finishes. Requests with ``replay`` are not run or reported unless
        the backend needs them to rebuild a batch as it was."""

    def count_tokens(self, model: ModelSpec, model_path: Path, messages: list[Message]) -> int:
        """How many tokens the prompt for ``messages`` takes (no weights loaded)."""

    def token_bound(self, model: ModelSpec, model_path: Path, messages: list[Message]) -> int:
        """At least ``count_tokens``, and cheap: what a check that a prompt fits can use before any model loads."""

    def context_length(self, model: ModelSpec, model_path: Path) -> int:
        """The context window a conversation with this model gets."""

    def describe(self) -> dict:
        """What a rerun needs to know about this backend (versions, build, threads, device)."""

    def close(self) -> None: ...


def each_alone(
    backend: Backend,
    requests: list[GenerationRequest],
    on_token: Callable[[int, int], None] | None = None,
    on_done: DoneCallback | None = None,
) -> list[Generation | None]:
    """``generate_many`` for a backend that runs one request at a time: recorded turns are skipped (a
    conversation's state is rebuilt from its messages when it is next needed)."""
    results: list[Generation | None] = [None] * len(requests)
    for i, request in enumerate(requests):
        if request.replay is not None:
            continue
        g = backend.generate(request, (lambda n, i=i: on_token(i, n)) if on_token else None)
        results[i] = g
        if on_done:
            on_done(i, g)
    return results


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, bounded by a cgroup CPU quota (a container's
    --cpus), not the host's count that /proc/cpuinfo and os.cpu_count() report."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(n, quota)) if quota else max(1, n)


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> int | None:
    """CPUs allowed by the cgroup quota, rounded up (v2 ``cpu.max``, else v1 ``cfs_quota_us``); None: no quota."""
    try:
        with open(f"{root}/cpu.max", encoding="utf-8") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    try:
        with open(f"{root}/cpu/cpu.cfs_quota_us", encoding="utf-8") as f:
            quota = int(f.read())
        with open(f"{root}/cpu/cpu.cfs_period_us", encoding="utf-8") as f:
            period = int(f.read())
        return None if quota <= 0 else max(1, -(-quota // period))
    except (OSError, ValueError):
        return None


def physical_cores(cpuinfo: str = "/proc/cpuinfo") -> int:
    """Physical cores (not hyper-threads) among the CPUs this process may use: llama.cpp's spinning threads
    gain nothing from siblings. Where /proc/cpuinfo names no cores (ARM Linux has no SMT to halve), the usable
    CPUs."""
    usable = usable_cpus()
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            text = f.read()
        blocks = [b for b in text.split("\n\n") if b.strip()]
        cores: set[tuple[str, str]] = set()
        logical = 0
        for b in blocks:
            m = re.search(r"physical id\s*:\s*(\d+).*?core id\s*:\s*(\d+)", b, re.S)
            if m:
                cores.add((m.group(1), m.group(2)))
                logical += 1
        if cores:
            threads_per_core = max(1, logical // len(cores))
            return max(1, min(len(cores), usable // threads_per_core or 1))
        if blocks:
            return usable
    except OSError:
        pass
    try:
        import subprocess

        out = subprocess.run(["sysctl", "-n", "hw.physicalcpu"], capture_output=True, text=True, timeout=2)
        if out.returncode == 0 and out.stdout.strip().isdigit():
            return min(int(out.stdout.strip()), usable)
    except (OSError, subprocess.SubprocessError):
        pass
    return usable


def threads_warning(threads: int | None) -> str | None:
    """A warning when more threads are asked for than this process has CPUs: spinning threads then contend."""
    usable = usable_cpus()
    if threads is not None and threads > usable:
        return (f"--threads {threads} is more than the {usable} CPU{'s' if usable > 1 else ''} this process may use "
                "(affinity and container quota): expect generation to be many times slower")
    return None


def busy_cores(window: float = 0.25) -> float | None:
    """How many cores other work keeps busy right now (from /proc/stat; the load average lags a minute)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="utf-8") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields[:8]), idle

    try:
        total0, idle0 = sample()
        time.sleep(window)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except (OSError, AttributeError):
            return None
    if total1 <= total0:
        return 0.0
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / (total1 - total0))


def busy_warning(threads: int) -> str | None:
    """A warning when other work already keeps the cores busy: spinning threads then slow down 10-100x."""
    busy = busy_cores()
    cores = os.cpu_count() or 1
    if busy is not None and busy > max(0.5, cores - threads + 0.5):
        return (
            f"the machine is busy ({busy:.1f} of {cores} cores in use by other work) and llama.cpp wants "
            f"{threads} of them: expect slow generation and unreliable timings"
        )
    return None
