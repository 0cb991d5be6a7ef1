"""Nearest-class initialisation: the pretrained class heads kept, and new classes started from
the pretrained classes D recognises in their support images."""

import copy
import json

import pytest
import torch

from mtgan.data.episodes import EpisodeSampler
from mtgan.errors import MtganError
from mtgan.nn.gan import ConditionalGAN, load_gan, save_gan
from mtgan.phases.adapt import adapt
from mtgan.phases.meta_train import meta_train, stack_tasks
from mtgan.phases.pretrain import build_gan


def _gan_favouring(classes: int, favourite: list[float]) -> ConditionalGAN:
    """A GAN of ``classes`` pretrained classes whose CF ignores the image and prefers the
    classes by ``favourite`` (logit biases); NM class column c is filled with c."""
    torch.manual_seed(0)
    gan = ConditionalGAN(classes, image_size=16, z_dim=4, g_width=4, d_width=4).eval()
    with torch.no_grad():
        gan.discriminator.cf.weight.zero_()
        gan.discriminator.cf.bias[:-1] = torch.tensor(favourite)
        gan.generator.nm.weight[:, 4:] = torch.arange(classes, dtype=torch.float)
    return gan


def test_the_first_head_replacement_keeps_the_pretrained_class_heads():
    gan = _gan_favouring(3, [0.0, 50.0, 0.0])
    pretrained_nm = gan.generator.nm.weight[:, 4:].clone()
    gan.reset_heads(2)
    torch.testing.assert_close(gan.bank.nm, pretrained_nm)
    assert gan.bank.cf[:, -1].tolist() == [0.0, 50.0, 0.0]
    gan.reset_heads(4)  # a later replacement keeps the pretrained ones, not the 2-way heads
    torch.testing.assert_close(gan.bank.nm, pretrained_nm)


def test_new_classes_start_from_the_class_d_recognises_and_never_an_excluded_one():
    gan = _gan_favouring(3, [0.0, 50.0, 20.0])
    gan.reset_heads(2)
    heads = {k: v.detach().clone() for k, v in gan.named_parameters()}
    feats, labels = torch.zeros(4, gan.discriminator.fe.out_features), torch.tensor([0, 0, 1, 1])
    gan.bank.start_near(heads, feats, labels, z_dim=4)
    assert torch.allclose(heads["generator.nm.weight"][:, 4:], torch.ones(1), atol=1e-6)
    assert torch.allclose(heads["discriminator.cf.bias"][:-1], torch.tensor(50.0), atol=1e-4)
    tasks = {k: v.expand(2, *v.shape).clone() for k, v in heads.items()}  # a task dimension
    exclude = torch.tensor([[1, 0], [0, 2]])  # task 0 may not use class 1, task 1 not 2
    gan.bank.start_near(tasks, feats.expand(2, 4, -1), labels.expand(2, 4), 4, exclude)
    columns = tasks["generator.nm.weight"][..., 4:]
    assert torch.allclose(columns[0], torch.full_like(columns[0], 2.0), atol=1e-6)
    assert torch.allclose(columns[1], torch.ones_like(columns[1]), atol=1e-6)


def test_the_kept_heads_travel_with_a_checkpoint(tmp_path):
    gan = _gan_favouring(3, [0.0, 50.0, 0.0])
    gan.reset_heads(2)
    save_gan(gan, tmp_path / "m.safetensors")
    loaded, _ = load_gan(tmp_path / "m.safetensors")
    assert len(loaded.bank) == 3
    torch.testing.assert_close(loaded.bank.cf, gan.bank.cf)


def test_adapting_with_nearest_starts_from_the_recognised_class(tiny_cfg, toy_dataset, device):
    gan, z = build_gan(tiny_cfg, 4).eval(), tiny_cfg.model.z_dim
    with torch.no_grad():
        gan.discriminator.cf.weight.zero_()
        gan.discriminator.cf.bias[:-1] = torch.tensor([0.0, 0.0, 60.0, 0.0])
        gan.generator.nm.weight[:, z:] = torch.arange(4, dtype=torch.float)
    gan.reset_heads(3)
    task = EpisodeSampler(toy_dataset, 3, 2, 2, seed=1).sample()
    cfg = copy.deepcopy(tiny_cfg)
    cfg.adapt.steps, cfg.adapt.lr = 1, 1e-6
    for init, column in (("nearest", 2.0), ("heads", 1.5)):  # class 2's, or the mean
        cfg.adapt.class_init = init
        adapted, _ = adapt(gan, task.support, task.support_labels, cfg, device)
        assert torch.allclose(adapted.generator.nm.weight[:, z:], torch.tensor(column), atol=1e-3)


def test_nearest_without_kept_heads_is_refused(tiny_cfg, toy_dataset, device):
    gan = build_gan(tiny_cfg, 3).eval()
    task = EpisodeSampler(toy_dataset, 3, 2, 2, seed=1).sample()
    cfg = copy.deepcopy(tiny_cfg)
    cfg.adapt.class_init = "nearest"
    with pytest.raises(MtganError, match="adapt.class_init=heads"):
        adapt(gan, task.support, task.support_labels, cfg, device)


def test_meta_training_tasks_carry_their_class_indices(toy_dataset, device):
    sampler = EpisodeSampler(toy_dataset, 3, 2, 2, seed=4)
    tasks = [sampler.sample() for _ in range(2)]
    batch = stack_tasks(tasks, 1, 4, torch.Generator().manual_seed(0), device, toy_dataset.classes)
    expected = [[toy_dataset.classes.index(c) for c in t.classes] for t in tasks]
    assert batch.classes.tolist() == expected
    assert stack_tasks(tasks, 1, 4, torch.Generator(), device).classes.shape == (2, 0)


def test_meta_training_with_nearest_starts_runs_and_learns_scale_and_shift(
    tiny_cfg, toy_dataset, device
):
    torch.manual_seed(0)
    gan = build_gan(tiny_cfg, len(toy_dataset.classes))
    start = {k: v.clone() for k, v in gan.state_dict().items()}
    cfg = copy.deepcopy(tiny_cfg)
    cfg.adapt.class_init = "nearest"
    meta_train(gan, toy_dataset, cfg, device)
    assert len(gan.bank) == len(toy_dataset.classes)
    moved = [
        k
        for k in gan.state_dict()
        if "ss_" in k and not torch.equal(gan.state_dict()[k].cpu(), start[k])
    ]
    assert moved


def test_with_every_kept_class_excluded_new_classes_start_from_their_mean():
    gan = _gan_favouring(2, [0.0, 50.0])
    gan.reset_heads(2)
    heads = {k: v.detach().clone() for k, v in gan.named_parameters()}
    feats, labels = torch.zeros(2, gan.discriminator.fe.out_features), torch.tensor([0, 1])
    gan.bank.start_near(heads, feats, labels, 4, exclude=torch.tensor([0, 1]))
    assert torch.allclose(heads["generator.nm.weight"][:, 4:], torch.tensor(0.5))


def test_a_checkpoint_saved_before_banks_and_rates_loads_and_keeps_no_bank(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    gan = _gan_favouring(3, [0.0, 50.0, 0.0])
    gan.reset_heads(2)
    path = tmp_path / "old.safetensors"
    save_gan(gan, path)
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["mtgan"])
    del meta["architecture"]["bank_classes"]
    tensors = {k: v for k, v in load_file(path).items() if not k.startswith(("bank.", "rates."))}
    save_file(tensors, path, metadata={"mtgan": json.dumps(meta)})
    old, _ = load_gan(path)
    assert len(old.bank) == 0
    old.reset_heads(4)  # its 2-way heads are not pretrained classes: not kept
    assert len(old.bank) == 0


def test_meta_training_with_nearest_and_no_kept_heads_is_refused(tiny_cfg, toy_dataset, device):
    """A model loaded from an old checkpoint keeps no pretrained heads: the inner loops may not
    start its classes from nothing (zeros)."""
    gan = build_gan(tiny_cfg, len(toy_dataset.classes))
    gan.bank.closed = True
    cfg = copy.deepcopy(tiny_cfg)
    cfg.adapt.class_init = "nearest"
    with pytest.raises(MtganError, match="adapt.class_init=heads"):
        meta_train(gan, toy_dataset, cfg, device)
