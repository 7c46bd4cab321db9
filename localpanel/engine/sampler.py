"""Drawing a token from a logits row: llama.cpp's own sampler chain (penalties, top-k, top-p, min-p, temperature,
a seeded draw), and the greedy stand-in that takes the most probable token (an integer vote, unless drawn)."""

from __future__ import annotations

import ctypes
import math

import llama_cpp as L
import numpy as np

from localpanel.engine.runtime import Sampling

def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max()
    return x - m - math.log(np.exp(x - m).sum())


class Sampler:
    """A llama.cpp sampler chain (penalties, top-k, top-p, min-p, temperature, seeded draw) over a logits row."""

    def __init__(self, n_vocab: int, sampling: Sampling, seed: int):
        self.chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if sampling.repeat_penalty > 1.0:
            L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_penalties(n_vocab, 64, sampling.repeat_penalty, 0.0, 0.0))
        if sampling.temperature <= 0.0:
            L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_greedy())
        else:
            if sampling.top_k > 0:
                L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_top_k(sampling.top_k))
            L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_top_p(sampling.top_p, 1))
            if sampling.min_p > 0:
                L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_min_p(sampling.min_p, 1))
            L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_temp(sampling.temperature))
            L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        self.ids = np.arange(n_vocab, dtype=np.int32)
        self.data = np.zeros(n_vocab, dtype=np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)]))
        self.array = L.llama_token_data_array(
            data=self.data.ctypes.data_as(L.llama_token_data_p), size=n_vocab, selected=-1, sorted=False
        )

    def sample(self, logits: np.ndarray) -> int:
        self.data["id"] = self.ids
        self.data["logit"] = logits
        self.array.size, self.array.selected, self.array.sorted = len(self.ids), -1, False
        L.llama_sampler_apply(self.chain, ctypes.byref(self.array))
        return int(self.data["id"][self.array.selected])

    def accept(self, token: int) -> None:
        L.llama_sampler_accept(self.chain, token)

    def close(self) -> None:
        if self.chain is not None:
            L.llama_sampler_free(self.chain)
            self.chain = None


class Greedy:
    """A sampler's stand-in that takes the most probable token the logits allow (what a vote is, unless drawn); the
    sampler still hears each token taken, so that its state stays what it was."""

    def __init__(self, sampler):
        self.sampler = sampler

    def sample(self, logits: np.ndarray) -> int:
        return int(np.argmax(logits))

    def accept(self, tok: int) -> None:
        self.sampler.accept(tok)
