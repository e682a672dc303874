"""What TMRL processes share (tmrl_vla.rl.distributed): alone, cheap no-ops; in a 2-process gloo
group, averaged gradients, a shared non-finite stop, summed counters and rank 0's weights."""

import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn

from tmrl_vla.rl.distributed import (
    NonFiniteLossError,
    all_reduce_sum,
    barrier,
    broadcast_module,
    rank,
    sync_gradients,
    world_size,
)

# ---------------------------------------------------------------------------------- one process


def linear_with_grads() -> nn.Linear:
    layer = nn.Linear(3, 2)
    layer.weight.grad = torch.arange(6.0).reshape(2, 3)
    layer.bias.grad = torch.tensor([-1.0, 0.5])
    return layer


def test_without_a_process_group_there_is_one_process_of_rank_zero():
    assert not dist.is_initialized()
    assert world_size() == 1 and rank() == 0


def test_all_reduce_sum_alone_returns_the_values_in_a_new_list():
    values = [1.5, 0.0, 3.0]
    summed = all_reduce_sum(values)
    assert summed == [1.5, 0.0, 3.0] and summed is not values


def test_broadcast_module_and_barrier_alone_change_nothing():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    assert broadcast_module(module) is None and barrier() is None
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_sync_gradients_alone_keeps_finite_gradients():
    layer = linear_with_grads()
    weight_grad = layer.weight.grad
    sync_gradients(layer.parameters(), torch.tensor(0.7), "critic/loss")
    assert layer.weight.grad is weight_grad  # untouched, not even copied
    assert torch.equal(layer.weight.grad, torch.arange(6.0).reshape(2, 3))
    assert torch.equal(layer.bias.grad, torch.tensor([-1.0, 0.5]))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_loss_raises_naming_the_loss_and_its_value(value):
    layer = linear_with_grads()
    with pytest.raises(NonFiniteLossError, match=rf"actor/loss is not finite \(value {value!r} on this process\)"):
        sync_gradients(layer.parameters(), torch.tensor(value), "actor/loss")


def test_a_nan_gradient_raises_though_the_loss_is_finite():
    layer = linear_with_grads()
    layer.bias.grad[1] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"critic/loss is not finite \(value 0\.25 on this process\)"):
        sync_gradients(layer.parameters(), torch.tensor(0.25), "critic/loss")


def test_non_finite_loss_error_is_a_floating_point_error():
    assert issubclass(NonFiniteLossError, FloatingPointError)


def test_parameters_that_do_not_require_grad_are_not_checked():
    layer = linear_with_grads()
    layer.bias.requires_grad_(False)
    layer.bias.grad = torch.tensor([float("nan"), 0.0])  # a frozen parameter's stale gradient
    sync_gradients(layer.parameters(), torch.tensor(1.0), "critic/loss")  # does not raise
    assert torch.equal(layer.weight.grad, torch.arange(6.0).reshape(2, 3))


def test_sync_gradients_alone_gives_a_zero_gradient_to_a_parameter_without_one():
    layer = linear_with_grads()
    layer.bias.grad = None
    sync_gradients(layer.parameters(), torch.tensor(1.0), "critic/loss")
    assert layer.bias.grad is not None and torch.equal(layer.bias.grad, torch.zeros(2))


def test_a_parameter_without_a_gradient_alone_does_not_break_the_check():
    layer = linear_with_grads()
    layer.bias.grad = None
    sync_gradients(layer.parameters(), torch.tensor(1.0), "critic/loss")
    assert torch.equal(layer.weight.grad, torch.arange(6.0).reshape(2, 3))
    layer.weight.grad[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="critic/loss"):
        sync_gradients(layer.parameters(), torch.tensor(1.0), "critic/loss")


# ---------------------------------------------------------------------------------- two processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_ranks(r: int, port: int, out: str) -> None:
    """One rank of the 2-process test: runs every shared operation and saves what it saw."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=r, world_size=2)
    seen: dict = {"world_size": world_size(), "rank": rank()}
    try:
        # averaged gradients; rank 0's bias has no gradient (counts as zero)
        layer = nn.Linear(2, 1)
        layer.weight.grad = torch.tensor([[1.0, 2.0]]) * (r + 1)  # rank 0: [1, 2], rank 1: [2, 4]
        layer.bias.grad = None if r == 0 else torch.tensor([4.0])
        sync_gradients(layer.parameters(), torch.tensor(1.0 + r), "critic/loss")
        seen["weight_grad"], seen["bias_grad"] = layer.weight.grad.clone(), layer.bias.grad.clone()

        # a NaN loss on rank 1 only stops both ranks
        layer.weight.grad, layer.bias.grad = torch.ones(1, 2), torch.ones(1)
        loss = torch.tensor(float("nan") if r == 1 else 0.5)
        try:
            sync_gradients(layer.parameters(), loss, "actor/loss")
            seen["nan_loss"] = None
        except NonFiniteLossError as err:
            seen["nan_loss"] = str(err)

        # a NaN gradient on rank 0 only stops both ranks too
        layer.weight.grad = torch.tensor([[float("nan") if r == 0 else 1.0, 1.0]])
        try:
            sync_gradients(layer.parameters(), torch.tensor(0.5), "temperature/loss")
            seen["nan_grad"] = None
        except NonFiniteLossError as err:
            seen["nan_grad"] = str(err)

        seen["sum"] = all_reduce_sum([1.0 + r, 10.0 * r, 0.5])

        torch.manual_seed(100 + r)  # different weights on each rank before the broadcast
        module = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
        module[1].running_mean.fill_(float(r + 1))
        seen["own_state"] = {k: v.clone() for k, v in module.state_dict().items()}
        broadcast_module(module)
        seen["state"] = {k: v.clone() for k, v in module.state_dict().items()}
        barrier()
    finally:
        dist.destroy_process_group()
    torch.save(seen, f"{out}/rank{r}.pt")


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("distributed")
    mp.spawn(two_ranks, args=(free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def test_two_processes_know_their_rank_and_count(two_process_results):
    assert [(s["world_size"], s["rank"]) for s in two_process_results] == [(2, 0), (2, 1)]


def test_sync_gradients_averages_over_processes(two_process_results):
    for seen in two_process_results:
        assert torch.equal(seen["weight_grad"], torch.tensor([[1.5, 3.0]]))
        assert torch.equal(seen["bias_grad"], torch.tensor([2.0]))  # (0 for the missing one + 4) / 2


def test_one_ranks_nan_loss_stops_both(two_process_results):
    first, second = (s["nan_loss"] for s in two_process_results)
    assert first == "actor/loss is not finite (value 0.5 on this process)"  # rank 0's own loss was finite
    assert second == "actor/loss is not finite (value nan on this process)"


def test_one_ranks_nan_gradient_stops_both(two_process_results):
    for seen in two_process_results:
        assert seen["nan_grad"] == "temperature/loss is not finite (value 0.5 on this process)"


def test_all_reduce_sum_sums_over_processes(two_process_results):
    assert [s["sum"] for s in two_process_results] == [[3.0, 10.0, 1.0]] * 2


def test_broadcast_module_copies_rank_zeros_weights_and_buffers(two_process_results):
    rank0, rank1 = two_process_results
    assert not torch.equal(rank0["own_state"]["0.weight"], rank1["own_state"]["0.weight"])  # they differed
    for key, value in rank0["own_state"].items():
        assert torch.equal(rank0["state"][key], value), key  # rank 0 kept its own
        assert torch.equal(rank1["state"][key], value), key  # rank 1 got rank 0's
    assert torch.equal(rank1["state"]["1.running_mean"], torch.ones(2))
