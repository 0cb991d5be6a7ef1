"""Issue #13's backbone candidates: resize-then-convolve upsampling in IC, R1 in D's loss,
MSGAN's mode seeking in G's loss, a decaying learning rate (each off by default)."""

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtgan.checkpoint import save_tensors
from mtgan.config import with_overrides
from mtgan.errors import MtganError
from mtgan.losses import ClassifierObjective, mode_seeking
from mtgan.nn.gan import ConditionalGAN, load_gan, save_gan
from mtgan.nn.generator import upsampling_plan
from mtgan.nn.ss import SSConvTranspose2d, SSResizeConv2d
from mtgan.phases.pretrain import build_gan, pretrain, same_class_pairs
from mtgan.phases.step import GanStep, Update, generate, trainable_params


@pytest.mark.parametrize("size", [16, 21, 28, 32])
def test_resize_upsampling_has_no_free_transposed_kernel_and_keeps_the_image_size(size):
    gan = ConditionalGAN(3, image_size=size, z_dim=4, g_width=4, d_width=4, upsample="resize")
    layers = list(gan.generator.ic.modules())
    assert not any(isinstance(m, SSConvTranspose2d) for m in layers)
    sizes = upsampling_plan(size)
    odd_steps = sum(b != 2 * a for a, b in itertools.pairwise(sizes))
    assert sum(isinstance(m, nn.Upsample) for m in layers) == odd_steps
    assert sum(isinstance(m, SSResizeConv2d) for m in layers) == len(sizes) - 1 - odd_steps
    assert all("nearest x2" in repr(m) for m in layers if isinstance(m, SSResizeConv2d))
    images = gan.eval().generator(torch.randn(2, 4), torch.tensor([0, 2]))
    assert images.shape == (2, 1, size, size)


@pytest.mark.parametrize("granularity", ["layer", "channel", "kernel"])
def test_the_tied_transposed_convolution_is_resize_then_convolve_with_the_same_gradients(
    granularity,
):
    torch.manual_seed(0)
    ss = SSResizeConv2d(nn.Conv2d(3, 2, 3, padding=1), granularity).double()
    with torch.no_grad():
        ss.ss_scale.uniform_(0.5, 1.5)
        ss.ss_shift.normal_()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    params = [ss.weight, ss.bias, ss.ss_scale, ss.ss_shift]
    weight, bias = ss.scaled()
    plain = F.conv2d(F.interpolate(x, scale_factor=2), weight, bias, padding=1)
    expected = torch.autograd.grad(plain.square().sum(), params)
    tied = ss(x)
    assert torch.allclose(tied, plain)
    for got, want in zip(torch.autograd.grad(tied.square().sum(), params), expected, strict=True):
        assert torch.allclose(got, want)


def test_unknown_upsampling_is_refused():
    with pytest.raises(ValueError, match="unknown upsampling"):
        ConditionalGAN(3, image_size=16, upsample="bilinear")


def test_a_checkpoint_rebuilds_its_upsampling(tmp_path):
    gan = ConditionalGAN(3, image_size=16, z_dim=4, g_width=4, d_width=4, upsample="resize")
    save_gan(gan.eval(), tmp_path / "g.safetensors")
    loaded, _ = load_gan(tmp_path / "g.safetensors")
    z, y = torch.randn(2, 4), torch.tensor([0, 1])
    assert loaded.architecture["upsample"] == "resize"
    assert torch.equal(loaded.eval().generator(z, y), gan.generator(z, y))


def test_spectral_norm_divides_each_fe_weight_by_its_largest_singular_value():
    torch.manual_seed(0)
    gan = ConditionalGAN(3, image_size=16, z_dim=4, g_width=4, d_width=4, spectral_norm=True)
    x = torch.randn(4, 1, 16, 16)
    for _ in range(40):  # power iteration refines its estimate at every training call
        gan.discriminator(x)
    for conv in (gan.discriminator.fe.layers.conv1, gan.discriminator.fe.layers.conv2):
        weight, _ = conv.scaled()
        sigma = torch.linalg.matrix_norm(conv.weight.flatten(1), 2)
        torch.testing.assert_close(weight, conv.weight / sigma, rtol=1e-4, atol=1e-6)
        assert abs(sigma - 1) > 0.1  # the raw weights are not normalised already


def test_a_frozen_spectrally_normalised_fe_computes_the_same_function_every_call(tmp_path):
    gan = ConditionalGAN(3, image_size=16, z_dim=4, g_width=4, d_width=4, spectral_norm=True)
    gan.freeze_backbone()  # adaptation: FE's weights no longer train
    x = torch.randn(4, 1, 16, 16)
    first = gan.discriminator(x)
    gan.train()  # even in training mode, a weight without gradient leaves the estimate alone
    assert torch.equal(gan.discriminator(x), first)
    save_gan(gan.eval(), tmp_path / "sn.safetensors")
    loaded, _ = load_gan(tmp_path / "sn.safetensors")
    assert loaded.architecture["spectral_norm"] is True
    assert torch.equal(loaded.eval().discriminator(x), first)


def test_a_checkpoint_saved_before_the_option_loads_as_transposed(tmp_path):
    gan = ConditionalGAN(3, image_size=16, z_dim=4, g_width=4, d_width=4)
    older = {k: v for k, v in gan.architecture.items() if k != "upsample"}
    save_tensors(tmp_path / "old.safetensors", gan.state_dict(), {"architecture": older})
    loaded, _ = load_gan(tmp_path / "old.safetensors")
    assert loaded.architecture["upsample"] == "transposed"
    resized = {**older, "upsample": "resize"}
    save_tensors(tmp_path / "bad.safetensors", gan.state_dict(), {"architecture": resized})
    with pytest.raises(MtganError, match="does not match"):
        load_gan(tmp_path / "bad.safetensors")


def test_r1_adds_half_gamma_times_the_squared_gradient_of_the_realness():
    """With one class, realness = logit_0 - logit_fake; for linear logits W x its gradient is
    W_0 - W_fake, so the penalty is ||W_0 - W_fake||^2 whatever the images."""
    w = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 2.0]], requires_grad=True)
    d = lambda x: x.flatten(1) @ w.T  # noqa: E731
    real, fake, labels = torch.randn(4, 3), torch.randn(4, 3), torch.zeros(4, dtype=torch.long)
    plain = ClassifierObjective().discriminator_loss(d, real, fake, d(real), d(fake), labels)
    gamma = 0.3
    with_r1 = ClassifierObjective(r1=gamma)
    loss = with_r1.discriminator_loss(d, real, fake, d(real), d(fake), labels)
    assert loss.item() == pytest.approx(plain.item() + gamma / 2 * 14.0, rel=1e-6)
    (grad,) = torch.autograd.grad(loss - plain, w)  # the penalty trains D
    assert torch.allclose(grad, gamma * torch.tensor([[1.0, 3.0, -2.0], [-1.0, -3.0, 2.0]]))
    with pytest.raises(ValueError, match="needs the real images"):
        with_r1.discriminator_loss(d, None, fake, d(real), d(fake), labels)


def test_mode_seeking_adds_its_weighted_term_to_gs_loss_only():
    gan = ConditionalGAN(3, image_size=16, z_dim=4, g_width=4, d_width=4).train()
    real, labels = torch.rand(6, 1, 16, 16) * 2 - 1, torch.tensor([0, 0, 1, 1, 2, 2])
    z = torch.randn(6, 4)
    losses = {}
    for weight in (0.0, 0.5):
        model = copy.deepcopy(gan)
        params = trainable_params(model, model.names("g") + model.names("d"))
        generated = generate(model, params, z, labels).detach()
        upd = lambda group, m=model: Update(m.names(group), 1e-3)  # noqa: E731
        step = GanStep(model, upd("d"), upd("g"), mode_seeking=weight)
        losses[weight] = step(params, real, labels, z)[1]
    assert losses[0.5]["loss_d"] == pytest.approx(losses[0.0]["loss_d"])
    term = 0.5 * mode_seeking(generated, z).item()
    assert losses[0.5]["loss_g"] == pytest.approx(losses[0.0]["loss_g"] + term, rel=1e-5)


def test_same_class_pairs_cover_every_image_of_a_class():
    labels = torch.tensor([2, 0, 1, 0, 2, 2])
    idx = same_class_pairs(labels)(4000, torch.Generator().manual_seed(0))
    assert torch.equal(labels[idx[0::2]], labels[idx[1::2]])
    partners = set(idx[1::2][labels[idx[1::2]] == 2].tolist())
    assert partners == {0, 4, 5}


@pytest.mark.parametrize(
    "option",
    [
        "model.upsample=transposed",
        "pretrain.r1=1",
        "pretrain.mode_seeking=1",
        "pretrain.augment=translation,color",
        "model.spectral_norm=true",
    ],
)
def test_each_candidate_pretrains_to_a_different_finite_model(
    tiny_cfg, toy_dataset, option, device
):
    def pretrained(cfg):
        torch.manual_seed(0)
        gan = build_gan(cfg, len(toy_dataset.classes))
        pretrain(gan, toy_dataset, cfg, device)
        z, labels = torch.zeros(2, 4, device=device), torch.tensor([0, 1], device=device)
        return gan.generator(z, labels)

    images = pretrained(with_overrides(tiny_cfg, [option]))
    assert torch.isfinite(images).all()
    assert not torch.allclose(images, pretrained(tiny_cfg))


def test_the_linear_schedule_keeps_the_rate_for_half_the_steps_then_decays_both(
    tiny_cfg, toy_dataset, monkeypatch, device
):
    import mtgan.phases.pretrain as phase

    seen, call = [], phase.GanStep.__call__

    def recording(self, *args):
        assert self.update_d.lr == self.update_g.lr
        seen.append(self.update_g.lr)
        return call(self, *args)

    monkeypatch.setattr(phase.GanStep, "__call__", recording)
    cfg = copy.deepcopy(tiny_cfg)
    cfg.pretrain.steps, cfg.pretrain.lr, cfg.pretrain.lr_schedule = 4, 1e-3, "linear"
    pretrain(build_gan(cfg, len(toy_dataset.classes)), toy_dataset, cfg, device)
    assert seen == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4])
