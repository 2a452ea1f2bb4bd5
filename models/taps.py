"""A torchvision model cut down to the graph of its taps: pre-ReLU taps, batch norms folded into convs."""
from __future__ import annotations

from typing import cast

from torch import fx, nn, relu
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.feature_extraction import create_feature_extractor


def tap_graph(model: nn.Module, taps: tuple[str, ...], pre_relu: bool = False) -> fx.GraphModule:
    """The graph from the input to the `taps` (node names, e.g. "layer1", "features.3"), returning
    their tensors as a tuple. Only what the taps need is kept: no later stage, pooling or classifier.

    pre_relu: each tap ends in a ReLU (a ResNet stage's last block); its input is returned instead, and
    that ReLU, if a later tap needs it, runs out of place so the returned tensor is not overwritten."""
    traced = create_feature_extractor(model.eval(), return_nodes=list(taps))  # traced in eval mode
    graph = traced.graph
    output = next(node for node in reversed(graph.nodes) if node.op == "output")
    nodes = [output.args[0][tap] for tap in taps]
    if pre_relu:
        modules = dict(traced.named_modules())
        for i, node in enumerate(nodes):
            if not (node.op == "call_module" and isinstance(modules[node.target], nn.ReLU)):
                raise ValueError(f"tap {taps[i]} does not end in a ReLU")
            with graph.inserting_after(node):
                out_of_place = graph.call_function(relu, (node.args[0],))
            node.replace_all_uses_with(out_of_place)
            graph.erase_node(node)
            nodes[i] = out_of_place.args[0]
    output.args = (tuple(nodes),)
    graph.eliminate_dead_code()
    return fx.GraphModule(traced, graph)


def fold_batch_norms(body: fx.GraphModule) -> fx.GraphModule:
    """Replaces each eval-mode BatchNorm2d that only follows a Conv2d by one conv with a bias: in the
    graph, and inside the Sequential blocks it calls whole (torchvision.ops' Conv2dNormActivation is
    one node)."""
    for node in body.graph.nodes:
        if node.op == "call_module" and isinstance(body.get_submodule(node.target), nn.Sequential):
            _fold_children(cast(nn.Sequential, body.get_submodule(node.target)))  # checked just above
    modules = dict(body.named_modules())
    calls: dict[str, int] = {}
    for node in body.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(body.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        conv = node.args[0]
        if not (isinstance(conv, fx.Node) and conv.op == "call_module" and isinstance(modules[conv.target], nn.Conv2d)
                and len(conv.users) == 1 and calls[cast(str, conv.target)] == 1 and calls[node.target] == 1):
            continue
        parent, _, attribute = cast(str, conv.target).rpartition(".")  # a call_module node names its module
        setattr(body.get_submodule(parent), attribute, fuse_conv_bn_eval(modules[conv.target], modules[node.target]))
        node.replace_all_uses_with(conv)
        body.graph.erase_node(node)
    body.delete_all_unused_submodules()
    body.recompile()
    return body


def _fold_children(sequence: nn.Sequential) -> None:
    previous_name, previous = None, None
    for name, child in list(sequence.named_children()):
        if isinstance(child, nn.BatchNorm2d) and isinstance(previous, nn.Conv2d):
            assert previous_name is not None  # set with previous
            setattr(sequence, previous_name, fuse_conv_bn_eval(previous, child))
            setattr(sequence, name, nn.Identity())
        elif isinstance(child, nn.Sequential):
            _fold_children(child)
        previous_name, previous = name, child
