"""The augmentation's math compiles as one graph: torch._dynamo sees apply_weak, apply_strong (both policies)
and normalize without a graph break, and new draws of the same shape reuse the compiled graph.

(The draws stay outside: a torch.Generator argument is a graph break by design, and drawing is a handful of
RNG kernels; a CUDA graph captures them with the generator registered.)
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from ssl_bench.augment import apply_strong, apply_weak, draw_strong, draw_weak, normalize

N, H, W = 16, 32, 32


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randint(0, 256, (N, 3, H, W), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def pieces(policy: str):
    """(name, function, draw(generator) -> extra arguments) of each compiled piece."""
    return [
        ("apply_weak", apply_weak, lambda g: (draw_weak(N, H, W, g),)),
        (f"apply_strong[{policy}]", apply_strong, lambda g: (draw_strong(N, H, W, g, policy),)),
    ]


@pytest.mark.parametrize("policy", ["ramc", "table12"])
def test_dynamo_explain_finds_one_graph_and_no_break(images, policy):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(1)
    for name, fn, draw in pieces(policy):
        for flip in (True, False):
            explained = torch._dynamo.explain(fn)(images, *draw(g), flip=flip)
            assert (explained.graph_count, explained.graph_break_count) == (1, 0), (
                name, [str(b.reason) for b in explained.break_reasons])
    explained = torch._dynamo.explain(normalize)(images, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)


@pytest.mark.parametrize("policy", ["ramc", "table12"])
def test_fullgraph_compile_traces_once_for_any_draws_and_gives_the_eager_images(images, policy):
    """fullgraph=True (a break would raise), one trace for five different draws, the eager result each time."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(2)
    for _, fn, draw in pieces(policy):
        counter = CompileCounter()
        compiled = torch.compile(fn, backend=counter, fullgraph=True, dynamic=False)
        for _ in range(5):
            args = draw(g)
            assert torch.equal(compiled(images, *args, flip=True), fn(images, *args, flip=True))
        assert counter.frame_count == 1


@pytest.mark.slow
def test_inductor_compiled_strong_augmentation_is_bit_identical(images):
    """The real compiler (inductor, C++ on the CPU) fuses the ops and still gives the same pixels."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(3)
    compiled = torch.compile(apply_strong, fullgraph=True)
    for _ in range(2):
        draws = draw_strong(N, H, W, g)
        assert torch.equal(compiled(images, draws, flip=True), apply_strong(images, draws, flip=True))
