"""fold_frozen_batchnorm: the same backbone function and gradients, the same state-dict keys."""
from __future__ import annotations

import copy

import pytest
import torch
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops import FrozenBatchNorm2d

from atss_bench.model.backbone import Backbone
from atss_bench.model.fold_bn import FoldedConv2d, fold_frozen_batchnorm


def _randomise_norms(net: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, FrozenBatchNorm2d):
            c = module.weight.shape[0]
            module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
            module.bias.copy_(torch.rand(c, generator=generator) - 0.5)
            module.running_mean.copy_(torch.rand(c, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)


def _small_resnet(block: type) -> ResNet:
    torch.manual_seed(0)
    net = ResNet(block, [1, 1, 1, 1], norm_layer=FrozenBatchNorm2d)
    _randomise_norms(net)
    return net


@pytest.mark.parametrize(("block", "expected"),
                         [(Bottleneck, 1 + 4 * 3 + 4), (BasicBlock, 1 + 4 * 2 + 3)])
def test_folded_resnet_computes_the_same_outputs_and_gradients(block: type, expected: int) -> None:
    plain = _small_resnet(block)
    folded = copy.deepcopy(plain)
    keys = list(plain.state_dict())
    assert fold_frozen_batchnorm(folded) == expected  # stem + every conv/norm pair + downsamples
    assert list(folded.state_dict()) == keys
    x = torch.rand(2, 3, 32, 32)
    out_plain, out_folded = plain(x), folded(x)
    torch.testing.assert_close(out_folded, out_plain, rtol=1e-5, atol=1e-5)
    out_plain.square().sum().backward()
    out_folded.square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), folded.parameters()):
        # float rounding differs (s applied to W, not to the output): relative to the largest
        scale = p.grad.abs().max().item()
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-4 * scale,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_weights_loaded_after_folding_take_effect() -> None:
    source = _small_resnet(Bottleneck)
    target = ResNet(Bottleneck, [1, 1, 1, 1], norm_layer=FrozenBatchNorm2d)
    fold_frozen_batchnorm(target)
    target.load_state_dict(source.state_dict())
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(target(x), source(x), rtol=1e-5, atol=1e-5)


def test_backbone_folds_only_frozen_bn_and_keeps_deformable_convs() -> None:
    frozen = Backbone("resnet18", width=0.25, norm="frozen_bn")
    assert isinstance(frozen.body.layer3[0].conv2, FoldedConv2d)
    trainable = Backbone("resnet18", width=0.25, norm="bn")
    assert not any(isinstance(m, FoldedConv2d) for m in trainable.modules())
    deformable = Backbone("resnet18", width=0.25, norm="frozen_bn", dcn_stages=(4, 5))
    assert not isinstance(deformable.body.layer4[0].conv2, FoldedConv2d)  # DCN: not folded
    assert type(deformable.body.layer4[0].bn2) is FrozenBatchNorm2d  # so its norm still runs
    assert isinstance(deformable.body.layer4[0].conv1, FoldedConv2d)


def _backward_nodes(outputs: list[torch.Tensor]) -> list[str]:
    """Names of every autograd node the outputs' backward would run (each node once)."""
    seen: set[object] = set()
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    names = []
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack += [next_fn for next_fn, _ in node.next_functions if next_fn is not None]
    return names


@pytest.mark.parametrize(("frozen_stages", "trainable_convs"),
                         [(2, 15), (1, 19), (0, 20)])  # resnet18: stem 1 + 4 + 5 + 5 + 5
def test_frozen_stages_run_no_backward_convolution(frozen_stages: int,
                                                   trainable_convs: int) -> None:
    # The paper's setting freezes stem + res2: their folded convolutions must not enter the
    # backward graph at all (no input gradient, no weight gradient), the others must train.
    torch.manual_seed(0)
    backbone = Backbone("resnet18", width=0.25, norm="frozen_bn", frozen_stages=frozen_stages)
    backbone.train()
    features = list(backbone(torch.rand(1, 3, 64, 64)).values())
    nodes = _backward_nodes(features)
    assert nodes.count("ConvolutionBackward0") == trainable_convs
    sum(f.square().sum() for f in features).backward()
    frozen = [name for name, _ in backbone.named_parameters()
              if name.split(".")[1] in backbone.frozen_names]
    assert len(frozen) == {2: 5, 1: 1, 0: 0}[frozen_stages]  # the convs' weights only: folded
    for name, parameter in backbone.named_parameters():
        assert (parameter.grad is None) == (name in frozen), name
