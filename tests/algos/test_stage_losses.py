"""sft_loss and bradley_terry_loss against values computed by hand."""

import math

import torch

from reinforcepp.algos import bradley_terry_loss, sft_loss


def test_bt_equal_rewards_give_log2_and_zero_accuracy():
    r = torch.tensor([0.3, -1.0, 5.0])
    loss, acc = bradley_terry_loss(r, r.clone())
    assert math.isclose(loss.item(), math.log(2.0), rel_tol=1e-6)
    assert acc.item() == 0.0  # a tie is not a correct ranking


def test_bt_known_margins():
    chosen = torch.tensor([2.0, 0.0])
    rejected = torch.tensor([0.5, 1.0])  # margins 1.5 and -1
    loss, acc = bradley_terry_loss(chosen, rejected)
    expected = (math.log1p(math.exp(-1.5)) + math.log1p(math.exp(1.0))) / 2
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    assert acc.item() == 0.5


def test_bt_is_stable_for_huge_margins():
    loss, acc = bradley_terry_loss(torch.tensor([1e4, -1e4]), torch.tensor([0.0, 0.0]))
    assert torch.isfinite(loss)
    assert math.isclose(loss.item(), 1e4 / 2, rel_tol=1e-6)  # log(1 + e^1e4) = 1e4; the other ~ 0
    assert acc.item() == 0.5


def test_bt_global_normalizer_sums_over_micro_batches():
    c, r = torch.randn(6), torch.randn(6)
    whole, _ = bradley_terry_loss(c, r)
    parts = bradley_terry_loss(c[:2], r[:2], num_pairs=6)[0] + bradley_terry_loss(c[2:], r[2:], num_pairs=6)[0]
    assert torch.allclose(whole, parts, atol=1e-6)


def test_bt_gradient_matches_closed_form_and_finite_differences():
    c = torch.tensor([0.7, -0.2, 1.1], dtype=torch.float64, requires_grad=True)
    r = torch.tensor([0.1, 0.4, -0.3], dtype=torch.float64, requires_grad=True)
    loss, _ = bradley_terry_loss(c, r)
    loss.backward()
    # d/dc [-log sigmoid(c - r)] / N = -(1 - sigmoid(c - r)) / N
    expected = -(1 - torch.sigmoid(c.detach() - r.detach())) / 3
    assert torch.allclose(c.grad, expected, atol=1e-6)
    assert torch.allclose(r.grad, -expected, atol=1e-6)
    assert torch.autograd.gradcheck(lambda a, b: bradley_terry_loss(a, b)[0], (c.detach().requires_grad_(),
                                                                             r.detach().requires_grad_()))


def test_sft_loss_by_hand_on_tiny_vocabulary():
    # Vocabulary of 3; B=1, T=3; the first position is a prompt token (masked out).
    logits = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, 0.0]]])
    targets = torch.tensor([[0, 1, 1]])
    mask = torch.tensor([[0, 1, 1]])
    l1 = math.log(3.0)  # uniform logits
    l2 = -(2.0 - math.log(math.exp(1.0) + math.exp(2.0) + 1.0))
    assert math.isclose(sft_loss(logits, targets, mask).item(), (l1 + l2) / 2, rel_tol=1e-6)
    # Changing the masked position's logits or target changes nothing.
    logits2 = logits.clone()
    logits2[0, 0] = torch.tensor([-9.0, 9.0, 3.0])
    assert math.isclose(sft_loss(logits2, torch.tensor([[2, 1, 1]]), mask).item(), (l1 + l2) / 2, rel_tol=1e-6)


def test_sft_loss_global_normalizer_and_gradient():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, 7, dtype=torch.float64)
    targets = torch.randint(0, 7, (4, 5))
    mask = (torch.rand(4, 5) > 0.3).long()
    whole = sft_loss(logits, targets, mask)
    n = mask.sum()
    parts = sft_loss(logits[:1], targets[:1], mask[:1], num_tokens=n) + sft_loss(
        logits[1:], targets[1:], mask[1:], num_tokens=n
    )
    assert torch.allclose(whole, parts)
    x = logits.clone().requires_grad_()
    sft_loss(x, targets, mask).backward()
    # d CE / d z = softmax(z) - onehot(y), on unmasked positions, divided by the token count.
    expected = (torch.softmax(logits, -1) - torch.nn.functional.one_hot(targets, 7)) * mask[..., None] / n
    assert torch.allclose(x.grad, expected, atol=1e-10)
