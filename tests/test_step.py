"""The hand-written optimizer of the shared GAN step against PyTorch's own."""

import pytest
import torch

from mtgan.phases.step import Update


# Adam runs in PyTorch's fused kernel when it can, in multi-tensor operations with per-element
# scales, and out of place when the update must stay differentiable: all three must agree.
@pytest.mark.parametrize(
    "kind, options",
    [
        ("adam", {}),
        ("adam", {"scales": {"w": torch.ones(4, 3)}}),
        ("adam", {"differentiable": True}),
        ("sgd", {}),
    ],
    ids=["adam-fused", "adam-scaled", "adam-differentiable", "sgd"],
)
def test_update_matches_torch_optimizers(kind, options):
    torch.manual_seed(0)
    ours = torch.randn(4, 3, requires_grad=True)
    theirs = ours.detach().clone().requires_grad_()
    update = Update(["w"], lr=0.01, kind=kind, betas=(0.5, 0.999), **options)
    if kind == "adam":
        opt = torch.optim.Adam([theirs], lr=0.01, betas=(0.5, 0.999), eps=1e-8)
    else:
        opt = torch.optim.SGD([theirs], lr=0.01)
    for step in range(6):
        target = torch.randn(4, 3, generator=torch.Generator().manual_seed(step))
        (grad,) = torch.autograd.grad(((ours - target) ** 2).sum(), [ours])
        ours = update({"w": ours}, [grad])["w"]
        opt.zero_grad()
        ((theirs - target) ** 2).sum().backward()
        opt.step()
    torch.testing.assert_close(ours, theirs)


def test_differentiable_update_returns_new_tensors_with_a_graph():
    w = torch.randn(3, requires_grad=True)
    scale = torch.tensor(2.0, requires_grad=True)
    update = Update(["w"], lr=0.1, kind="sgd", differentiable=True)
    (grad,) = torch.autograd.grad((scale * w).sum(), [w], create_graph=True)
    new = update({"w": w}, [grad])["w"]
    assert new is not w and new.requires_grad
    (d_scale,) = torch.autograd.grad(new.sum(), [scale])
    assert d_scale.item() == pytest.approx(-0.1 * 3)  # new = w - 0.1 * scale
