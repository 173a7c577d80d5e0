"""Shared-prefix forwards: each distinct prompt computed once gives the log-probs, entropy and gradients of the
unshared forward (float64), with left padding, prompts of different lengths, groups in any row order, and
micro-batches that hold a whole group, part of one, or one row of it."""

import pytest
import torch

from reinforcepp.testing import tiny_model
from reinforcepp.train.experience import Experience
from reinforcepp.train.forward import checkpointing, policy_logprobs
from reinforcepp.train.shared_prefix import prompt_groups, shared_prefix_hidden

V, LP, T = 40, 9, 6
# float64 throughout: the shared and the unshared forward sum in another order (the group's gradient summed before
# the prompt's backward instead of after it), which moves results by ~1e-15 relative; float32 would move ~1e-7.
TOL = dict(rtol=0, atol=1e-11)


@pytest.fixture(autouse=True)
def float64_rms_norm(monkeypatch):
    """HF's RMSNorm computes in float32 whatever the input (hidden.to(float32)), so a float64 model's gradients
    carry float32 rounding (~1e-7 relative) wherever the two paths sum in another order. Here it computes in the
    input's dtype, as its formula says: w * x / sqrt(mean(x^2) + eps), so that float64 tolerances apply."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    for cls in (LlamaRMSNorm, Qwen2RMSNorm):
        monkeypatch.setattr(cls, "forward", forward)


def grouped_experience(prompt_lens=(9, 3, 6), n=4, seed=0, shuffle=True) -> Experience:
    """len(prompt_lens) prompts (left padded to LP) x n samples, uneven right-padded responses, rows shuffled."""
    g = torch.Generator().manual_seed(seed)
    P = len(prompt_lens)
    lens = torch.tensor(prompt_lens)
    prompt_mask = (torch.arange(LP)[None] >= LP - lens[:, None]).long()
    prompt_ids = torch.randint(3, V, (P, LP), generator=g) * prompt_mask
    response_lens = torch.randint(1, T + 1, (P * n,), generator=g)
    response_lens[0] = T
    response_mask = (torch.arange(T)[None] < response_lens[:, None]).long()
    order = torch.randperm(P * n, generator=g) if shuffle else torch.arange(P * n)
    exp = Experience(
        prompt_ids=prompt_ids.repeat_interleave(n, 0)[order],
        prompt_mask=prompt_mask.repeat_interleave(n, 0)[order],
        response_ids=(torch.randint(3, V, (P * n, T), generator=g) * response_mask)[order],
        response_mask=response_mask[order],
    )
    return exp


def gqa_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False)
    return LlamaForCausalLM(config).double().eval()


def qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return Qwen2ForCausalLM(config).double().eval()


MODELS = {"llama": lambda: tiny_model(V).double(), "llama-gqa": gqa_llama, "qwen2": qwen2}


def test_prompt_groups_numbers_rows_by_first_appearance():
    exp = grouped_experience(prompt_lens=(4, 9, 4, 2), n=3, seed=1)
    first, inverse = prompt_groups(exp.prompt_ids, exp.prompt_mask)
    seen: dict[tuple, int] = {}  # independent: a dictionary of row tuples in row order
    want_inverse, want_first = [], []
    for b, (ids, mask) in enumerate(zip(exp.prompt_ids.tolist(), exp.prompt_mask.tolist())):
        key = (tuple(ids), tuple(mask))
        if key not in seen:
            seen[key] = len(seen)
            want_first.append(b)
        want_inverse.append(seen[key])
    assert first.tolist() == want_first and inverse.tolist() == want_inverse
    assert torch.equal(exp.prompt_ids[first][inverse], exp.prompt_ids)


def test_same_ids_with_another_padding_are_other_prompts():
    ids = torch.tensor([[0, 5, 6], [5, 5, 6], [0, 5, 6]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1], [0, 1, 1]])
    first, inverse = prompt_groups(ids, mask)
    assert first.tolist() == [0, 1] and inverse.tolist() == [0, 1, 0]


def test_hidden_states_equal_the_whole_rows_forward():
    model = tiny_model(V).double()
    exp = grouped_experience()
    with torch.no_grad():
        groups = prompt_groups(exp.prompt_ids, exp.prompt_mask)
        got = shared_prefix_hidden(model.model, exp, torch.device("cpu"), groups)
        want = model.model(**exp.model_inputs("cpu"), use_cache=False).last_hidden_state[:, -T - 1 : -1]
    torch.testing.assert_close(got, want, **TOL)


def _loss_and_grads(model, exp, shared, chunked, temperature):
    g = torch.Generator().manual_seed(7)
    g_logp, g_ent = (torch.randn(exp.response_ids.shape, generator=g, dtype=torch.float64) for _ in range(2))
    logp, ent = policy_logprobs(model, exp, temperature, with_entropy=True, chunked=chunked, shared_prefix=shared)
    loss = (logp * g_logp * exp.response_mask).sum() + (ent * g_ent * exp.response_mask).sum()
    return logp, ent, torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("chunked", [False, True])
def test_log_probs_entropy_and_gradients_equal_the_unshared_forward(name, chunked):
    model = MODELS[name]()
    exp = grouped_experience()
    want_logp, want_ent, want = _loss_and_grads(model, exp, False, chunked, 0.7)
    logp, ent, got = _loss_and_grads(model, exp, True, chunked, 0.7)
    torch.testing.assert_close(logp * exp.response_mask, want_logp * exp.response_mask, **TOL)
    torch.testing.assert_close(ent * exp.response_mask, want_ent * exp.response_mask, **TOL)
    for a, b in zip(got, want):  # every weight, the embedding (tied or not) and the LM head included
        torch.testing.assert_close(a, b, **TOL)
    assert max(a.abs().max() for a in got) > 0


@pytest.mark.parametrize("rows", [
    [0, 1, 2, 3, 4, 5],        # a micro-batch that splits groups (shuffled rows: parts of several)
    [5, 7, 2, 11, 8, 3, 0],   # another split, rows out of order
    list(range(12)),           # every group whole
])
def test_micro_batches_that_split_a_group_or_not(rows):
    """The experience passes and the update run micro-batches of ``exp.rows``: a group whose rows fall in several
    computes its prompt once in each, with the numbers of the unshared forward."""
    model = gqa_llama()
    mb = grouped_experience().rows(torch.tensor(rows))
    want_logp, _, want = _loss_and_grads(model, mb, False, False, 1.0)
    logp, _, got = _loss_and_grads(model, mb, True, False, 1.0)
    torch.testing.assert_close(logp * mb.response_mask, want_logp * mb.response_mask, **TOL)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL)


def test_without_gradient_equals_the_unshared_forward():
    model = tiny_model(V).double()
    exp = grouped_experience(prompt_lens=(1, 9), n=5, seed=3)
    with torch.no_grad():
        want, _ = policy_logprobs(model, exp, 1.0)
        got, _ = policy_logprobs(model, exp, 1.0, shared_prefix=True)
    torch.testing.assert_close(got * exp.response_mask, want * exp.response_mask, **TOL)


def _count_shared_calls(monkeypatch) -> list:
    import reinforcepp.train.forward as forward

    calls = []
    real = forward.shared_prefix_hidden
    monkeypatch.setattr(forward, "shared_prefix_hidden", lambda *a: calls.append(1) or real(*a))
    return calls


def test_falls_back_where_it_cannot_run_or_cannot_pay(monkeypatch):
    calls = _count_shared_calls(monkeypatch)
    model = tiny_model(V).double()
    exp = grouped_experience()
    with torch.no_grad():
        policy_logprobs(model, exp, 1.0, shared_prefix=True)
        assert calls == [1]
        policy_logprobs(model, exp.rows(torch.tensor([0, 3, 4])), 1.0, shared_prefix=True)  # distinct prompts
        assert calls == [1], "no prompt repeats: nothing to share"
    model.gradient_checkpointing_enable()
    with checkpointing(model, True):
        want, _, want_grads = _loss_and_grads(model, exp, False, False, 1.0)
        got, _, got_grads = _loss_and_grads(model, exp, True, False, 1.0)
    assert calls == [1], "checkpointed layers drop the cache: the unshared forward runs"
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_other_models_take_their_own_forward(monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel

    calls = _count_shared_calls(monkeypatch)
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=32, n_layer=1, n_head=2, n_positions=64)).eval()
    exp = grouped_experience()
    with torch.no_grad():
        got, _ = policy_logprobs(gpt2, exp, 1.0, shared_prefix=True)
        want, _ = policy_logprobs(gpt2, exp, 1.0)
    assert calls == []
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("micro", [12, 4, 3])
def test_update_takes_the_same_step_shared_or_not(micro):
    """update_actor with train.shared_prefix on and off: the same SGD step (float64), whether the shuffled
    micro-batches hold whole groups (12 rows) or parts of them (4 or 3 rows)."""
    import copy

    from reinforcepp.config import load_config
    from reinforcepp.train.update import Optimization, shuffled_orders, update_actor

    model = gqa_llama()
    exp = grouped_experience(n=4, seed=5)
    g = torch.Generator().manual_seed(2)
    exp.advantages = torch.randn(exp.response_ids.shape, generator=g, dtype=torch.float64) * exp.response_mask
    exp.ref_logp = -torch.rand(exp.response_ids.shape, generator=g, dtype=torch.float64) * exp.response_mask
    with torch.no_grad():
        exp.old_logp = policy_logprobs(model, exp, 1.0)[0] + 0.05 * exp.ref_logp

    def step(shared):
        cfg = load_config(None, ["rollout.batch_size=3", "rollout.n_samples_per_prompt=4", "train.batch_size=12",
                                 f"train.micro_batch_size={micro}", "algo.kl.placement=loss", "algo.kl.estimator=k3",
                                 "algo.kl.coef=0.1", "algo.loss.entropy_coef=0.01",
                                 f"train.shared_prefix={str(shared).lower()}"])
        trained = copy.deepcopy(model)
        before = [p.detach().clone() for p in trained.parameters()]
        optimizer = torch.optim.SGD(trained.parameters(), lr=1.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        orders = shuffled_orders(cfg, exp.response_ids.shape[0], torch.Generator().manual_seed(0))
        update_actor(Optimization(trained, optimizer, scheduler, None), copy.deepcopy(exp), cfg, orders)
        return [b - p.detach() for b, p in zip(before, trained.parameters())]

    shared, unshared = step(True), step(False)
    for a, b in zip(shared, unshared):
        torch.testing.assert_close(a, b, **TOL)
    assert max(d.abs().max() for d in unshared) > 0


def test_a_lora_policy_shares_through_its_inner_model():
    """A PEFT LoRA policy (adapters on q, v and the MLP): the shared forward runs its inner model's layers, which
    carry the adapters, and gives the unshared numbers and adapter gradients."""
    peft = pytest.importorskip("peft")
    base = tiny_model(V).double()
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"],
                             init_lora_weights=False)  # B != 0: the adapters change the forward
    model = peft.get_peft_model(base, config).eval()
    exp = grouped_experience(seed=4)
    want_logp, _, want = _loss_and_grads(model, exp, False, False, 1.0)
    logp, _, got = _loss_and_grads(model, exp, True, False, 1.0)
    torch.testing.assert_close(logp * exp.response_mask, want_logp * exp.response_mask, **TOL)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL)
