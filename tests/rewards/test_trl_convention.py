"""Reward functions are called as TRL's GRPOTrainer calls them: keywords only, any parameter order.

The examples are TRL's documented reward functions (docs/source/grpo_trainer.md, "Using a custom reward
function"), written here from the docs; each must give the scores the docs show.
"""

import asyncio
import json
import math
import re

import pytest
import yaml

from reinforcepp.config import Config, config_to_yaml, load_config, save_config
from reinforcepp.data import fill_missing_columns
from reinforcepp.rewards import RewardError, RewardSignatureError, score_completions
from reinforcepp.rewards.function import reward_kwargs, select_kwargs, signature_problem
from reinforcepp.rewards.remote import RemoteRewardFunction, RewardServer
from reinforcepp.train import run as run_module
from reinforcepp.train import train

# --- TRL's documented examples --------------------------------------------------------------------

SKY_PROMPTS = ["The sky is", "The sun is"]
SKY_COMPLETIONS = [" blue.", " in the sky."]
SKY_IDS = [[6303, 13], [304, 279, 12884, 13]]


def token_length_reward(completion_ids, **kwargs):  # TRL example 1
    return [float(len(ids)) for ids in completion_ids]


def char_length_reward(completions, **kwargs):  # TRL example 1.1
    return [float(len(completion)) for completion in completions]


def format_reward(completions, **kwargs):  # TRL example 2, on plain-text completions
    pattern = r"^<think>.*?</think><answer>.*?</answer>$"
    return [1.0 if re.match(pattern, content) else 0.0 for content in completions]


def boxed_reward(completions, ground_truth, **kwargs):  # TRL example 3
    matches = [re.search(r"\\boxed\{(.*?)\}", completion) for completion in completions]
    contents = [match.group(1) if match else "" for match in matches]
    return [1.0 if c == gt else 0.0 for c, gt in zip(contents, ground_truth)]


def math_task_reward(prompts, completions, task, **kwargs):  # TRL example 4: None where it does not apply
    return [(1.0 if c.strip() == "4" else -1.0) if t == "math" else None for c, t in zip(completions, task)]


async def async_reward(prompts, completions, **kwargs):  # TRL example 5
    await asyncio.sleep(0.01)
    return [1.0 if completion else 0.0 for completion in completions]


def logging_reward(completions, ground_truth, log_extra=None, log_metric=None, **kwargs):  # TRL example 6
    extracted = [re.search(r"\\boxed\{(.*?)\}", c) for c in completions]
    extracted = [m.group(1) if m else None for m in extracted]
    rewards = [1.0 if e == gt else 0.0 for e, gt in zip(extracted, ground_truth)]
    if log_metric:
        log_metric("accuracy", sum(rewards) / len(rewards))
    return rewards


def test_trl_length_rewards_give_the_documented_scores():
    def score(fn):
        return score_completions(fn, SKY_PROMPTS, SKY_COMPLETIONS, {}, completion_ids=SKY_IDS)

    assert score(token_length_reward) == [2.0, 4.0]
    assert score(char_length_reward) == [6.0, 12.0]


def test_trl_format_reward_gives_the_documented_scores():
    completions = [
        "<think>The sum of 1 and 2 is 3, which we multiply by 4 to get 12.</think><answer>(1 + 2) * 4 = 12</answer>",
        "The sum of 3 and 1 is 4, which we multiply by 2 to get 8. So (3 + 1) * 2 = 8.",
    ]
    prompts = ["What is the result of (1 + 2) * 4?", "What is the result of (3 + 1) * 2?"]
    assert score_completions(format_reward, prompts, completions, {}) == [1.0, 0.0]


def test_trl_dataset_column_rewards_give_the_documented_scores():
    prompts = ["Problem: Solve the equation $2x + 3 = 7$. Solution:", "Problem: Solve the equation $3x - 5 = 10$."]
    completions = [r" The solution is \boxed{2}.", r" The solution is \boxed{6}."]
    columns = {"ground_truth": ["2", "5"], "source": ["a", "b"]}
    assert score_completions(boxed_reward, prompts, completions, columns) == [1.0, 0.0]
    # Example 6: log_extra / log_metric are TRL trainer hooks we do not pass; their defaults (None) apply.
    assert score_completions(logging_reward, prompts, completions, columns) == [1.0, 0.0]


def test_trl_multi_task_and_async_rewards():
    out = score_completions(math_task_reward, ["2+2?", "code"], ["4", "def f(): pass"], {"task": ["math", "code"]})
    assert out[0] == 1.0 and math.isnan(out[1])
    assert score_completions(async_reward, ["p", "q"], ["x", ""], {}) == [1.0, 0.0]


# --- keyword calling -------------------------------------------------------------------------------


def test_parameters_in_the_opposite_order_get_the_right_arguments():
    seen = {}

    def reward(completions, prompts=None, answer=None, **kwargs):  # the function: a valid TRL reward
        seen.update(completions=completions, prompts=prompts, answer=answer, extra=sorted(kwargs))
        return [float(c == a) for c, a in zip(completions, answer)]

    scores = score_completions(reward, ["1+1=", "2+2="], ["2", "5"], {"answer": ["2", "4"], "level": [1, 2]},
                               completion_ids=[[5, 1], [8, 1]])
    assert scores == [1.0, 0.0]
    assert seen == {"completions": ["2", "5"], "prompts": ["1+1=", "2+2="], "answer": ["2", "4"],
                    "extra": ["completion_ids", "level"]}


def test_a_function_without_kwargs_gets_only_the_keywords_it_names():
    def reward(answer, completions):
        return [float(c == a) for c, a in zip(completions, answer)]

    assert score_completions(reward, ["p", "q"], ["1", "2"], {"answer": ["1", "3"], "label": ["x", "y"]},
                             completion_ids=[[1], [2]]) == [1.0, 0.0]
    kwargs = reward_kwargs(["p"], ["c"], {"answer": ["a"], "completions": ["column"]}, [[7]])
    assert select_kwargs(reward, kwargs) == {"answer": ["a"], "completions": ["c"]}  # a same-named column loses


def test_a_failing_sample_is_still_named_with_keyword_calls():
    def reward(completions, answer):
        return [1.0 / (len(c) - 2) for c in completions]

    with pytest.raises(RewardError, match=r"failed on sample 1 \(prompt 'q', completion 'ab'\).*ZeroDivisionError"):
        score_completions(reward, ["p", "q"], ["abc", "ab"], {"answer": ["x", "y"]})


def misspelt_column(completions, answr):
    return [0.0] * len(completions)


def needs_trainer_state(completions, trainer_state):
    return [0.0] * len(completions)


def positional_only(prompts, completions, /):
    return [0.0] * len(completions)


@pytest.mark.parametrize("reward, needle", [
    (misspelt_column, "needs 'answr', but"),
    (needs_trainer_state, "needs 'trainer_state' (TRL's trainer passes it, reinforcepp does not: give it a default)"),
    (positional_only, "needs 'prompts' (positional-only"),
])
def test_an_unfillable_parameter_is_named_with_the_columns_available(reward, needle):
    names = ["prompts", "completions", "completion_ids", "answer", "label"]
    problem = signature_problem(reward, names, "prompts.jsonl")
    assert needle in problem
    assert problem.endswith("prompts, completions, completion_ids and the columns of prompts.jsonl: answer, label")
    with pytest.raises(RewardSignatureError, match=re.escape(needle)):
        score_completions(reward, ["p"], ["c"], {"answer": ["a"]})


# --- start-up: the run build checks the function before any model loads -------------------------


def never_load(*args, **kwargs):
    raise AssertionError("a model or tokenizer was loaded before the reward function was checked")


@pytest.fixture
def no_model_loads(monkeypatch):
    for name in ("load_tokenizer", "load_causal_lm", "load_reference"):
        monkeypatch.setattr(run_module, name, never_load)


def startup_config(prompt_file, tmp_path, function, *overrides):
    cfg = load_config(None, ["model.policy=never-loaded", f"data.prompts={prompt_file}",
                             f"output_dir={tmp_path / 'run'}", *overrides])
    cfg.reward.function = function
    return cfg


def test_a_wrong_parameter_name_fails_at_startup_before_the_model_loads(prompt_file, tmp_path, no_model_loads):
    path = tmp_path / "my_reward.py"
    path.write_text("def reward_func(completions, answr, **kwargs):\n    return [0.0] * len(completions)\n")
    with pytest.raises(RewardError) as caught:
        run_module.build_run(startup_config(prompt_file, tmp_path, str(path)))
    message = str(caught.value)
    assert message.startswith("reward.function: reward function _reward_my_reward:reward_func needs 'answr'")
    assert f"columns of {prompt_file}: label" in message and "\n" not in message

    def callable_reward(completions, answr):  # a callable in the config is checked the same way
        return [0.0] * len(completions)

    with pytest.raises(RewardError, match=r"needs 'answr'.*: label$"):
        run_module.build_run(startup_config(prompt_file, tmp_path, callable_reward))


def test_the_eval_prompts_columns_are_checked_too(prompt_file, tmp_path, no_model_loads):
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(json.dumps({"prompt": "x", "answer": "1"}) + "\n")

    def reward(completions, label, **kwargs):  # label is in the training prompts only
        return [0.0] * len(completions)

    with pytest.raises(RewardError, match=rf"needs 'label'.*columns of {re.escape(str(eval_file))}: answer$"):
        run_module.build_run(startup_config(prompt_file, tmp_path, reward, f"data.eval_prompts={eval_file}"))


def test_the_cli_reports_a_bad_reward_function_in_one_line(prompt_file, tmp_path, no_model_loads, capsys):
    from reinforcepp.cli import main

    path = tmp_path / "bad_reward.py"
    path.write_text("def reward_func(completions, trainer_state):\n    return [0.0] * len(completions)\n")
    code = main(["train", "model.policy=never-loaded", f"data.prompts={prompt_file}", f"reward.function={path}",
                 f"output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: reward.function: ") and "'trainer_state'" in err
    assert "Traceback" not in err


def test_a_parameter_that_keeps_its_default_is_warned_about(prompt_file, tmp_path, caplog):
    def reward(completions, prompts=None, answer=None, **kwargs):
        return [0.0] * len(completions)

    cfg = startup_config(prompt_file, tmp_path, reward)
    rows = run_module.read_prompt_rows(cfg.data.prompts, cfg)
    with caplog.at_level("WARNING"):
        assert run_module.checked_reward_function(cfg, {str(prompt_file): rows}) is reward
    assert "gets no value for answer" in caplog.text and ": label)" in caplog.text


def test_a_column_missing_from_some_rows_is_none_there():
    rows = fill_missing_columns([{"prompt": "a", "answer": "1"}, {"prompt": "b"}])
    assert rows == [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": None}]


# --- a callable in the config, through the Python API on a tiny model ----------------------------


def test_a_callable_reward_trains_through_the_python_api(tiny_dir, prompt_file, tmp_path):
    from reinforcepp.models import load_tokenizer

    calls = []

    def reward(completions, label, completion_ids, **kwargs):
        calls.append({"completions": completions, "label": label, "completion_ids": completion_ids,
                      "prompts": kwargs["prompts"]})
        return [c.count("a") / max(len(c), 1) for c in completions]

    cfg = load_config(None, [f"model.policy={tiny_dir}", f"data.prompts={prompt_file}", "rollout.batch_size=4",
                             "rollout.max_new_tokens=6", "train.batch_size=4", "train.micro_batch_size=2",
                             "train.num_steps=2", "log.progress=false", "log.tensorboard=false",
                             f"output_dir={tmp_path / 'run'}"])
    cfg.reward.function = reward
    final = train(cfg)
    assert (final / "model.safetensors").is_file()
    assert len(calls) == 2
    rows = {json.loads(line)["prompt"]: json.loads(line)["label"] for line in prompt_file.read_text().splitlines()}
    tokenizer = load_tokenizer(str(tiny_dir))
    for call in calls:
        assert call["label"] == [rows[p] for p in call["prompts"]]  # each column value is its own prompt's
        for ids, text in zip(call["completion_ids"], call["completions"], strict=True):
            assert ids and all(isinstance(t, int) for t in ids)
            assert tokenizer.decode(ids, skip_special_tokens=True) == text
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["reward"]["function"] == f"{__name__}:{reward.__qualname__}"


def test_a_config_holding_a_callable_serializes_with_its_name(tmp_path):
    from reinforcepp.rewards.toy import target_char_share

    cfg = Config()
    cfg.reward.function = target_char_share
    save_config(cfg, tmp_path / "config.yaml")
    reloaded = load_config(tmp_path / "config.yaml")
    assert reloaded.reward.function == "reinforcepp.rewards.toy:target_char_share"  # a loadable spec
    assert json.loads(json.dumps(cfg.model_dump(mode="json")))["reward"]["function"] == reloaded.reward.function
    assert config_to_yaml(reloaded) == config_to_yaml(cfg)
    with pytest.raises(Exception, match="a reward server URL or a callable"):
        load_config(None, ["reward.function=3"])


# --- the reward server calls the function the same way ---------------------------------------------


def test_the_server_calls_with_keywords_and_accepts_the_old_request_body():
    seen = {}

    def reward(completions, prompts=None, answer=None, **kwargs):
        seen.update(prompts=prompts, answer=answer, completion_ids=kwargs.get("completion_ids"))
        return [float(c == a) for c, a in zip(completions, answer)]

    with RewardServer(reward) as server:
        server.start_in_thread()
        remote = RemoteRewardFunction(server.url)
        scores = score_completions(remote, ["1+1=", "2+2="], ["2", "5"], {"answer": ["2", "4"]},
                                   completion_ids=[[5, 1], [8, 1]])
        assert scores == [1.0, 0.0]
        assert seen == {"prompts": ["1+1=", "2+2="], "answer": ["2", "4"], "completion_ids": [[5, 1], [8, 1]]}
        # the body from before completion_ids existed
        assert remote(["1+1="], ["2"], answer=["2"]) == [1.0] and seen["completion_ids"] is None
        # TRL's trainer hooks are not data: the client does not send them
        assert remote(["1+1="], ["2"], answer=["2"], trainer_state=object(), log_metric=print) == [1.0]


def test_the_server_answers_400_naming_a_keyword_the_request_lacks():
    with RewardServer(token_length_reward) as server:
        server.start_in_thread()
        remote = RemoteRewardFunction(server.url, retries=0)
        assert remote(SKY_PROMPTS, SKY_COMPLETIONS, SKY_IDS) == [2.0, 4.0]
        with pytest.raises(RewardError, match=r"HTTP 400.*needs 'completion_ids'"):
            remote(SKY_PROMPTS, SKY_COMPLETIONS)


# --- the built-in rewards under keyword calls -------------------------------------------------------


@pytest.mark.parametrize("spec, columns", [
    ("reinforcepp.rewards.toy:target_char_share", []),
    ("reinforcepp.rewards.toy:leading_integer", ["answer"]),
    ("reinforcepp.tasks.kk_compact:kk_compact_reward", ["answer"]),
    ("reinforcepp.rewards.math_answers:math_reward", ["answer"]),
    ("reinforcepp.rewards.format_rewards:think_format_reward", []),
    ("reinforcepp.rewards.knights_knaves:kk_reward", ["solution"]),
    ("reinforcepp.rewards.knights_knaves:kk_accuracy", ["solution"]),
    ("reinforcepp.rewards.code:code_reward", ["tests", "entry_point"]),
    ("reinforcepp.rewards.remote:reward_from_env", []),
])
def test_every_builtin_reward_takes_trl_keywords(spec, columns):
    from reinforcepp.rewards import load_reward_function

    names = ["prompts", "completions", "completion_ids", *columns, "unrelated_column"]
    assert signature_problem(load_reward_function(spec), names, "the data") is None


def test_builtin_rewards_score_under_keyword_calls():
    from reinforcepp.rewards import load_reward_function

    def score(spec, completions, **columns):
        prompts = [f"p{i}" for i in range(len(completions))]
        columns |= {"unrelated_column": [None] * len(completions)}
        ids = [[1] * len(c) for c in completions]
        return score_completions(load_reward_function(spec), prompts, completions, columns, completion_ids=ids)

    assert score("reinforcepp.rewards.toy:target_char_share", ["aab", ""]) == [2 / 3, 0.0]
    assert score("reinforcepp.rewards.toy:leading_integer", ["12 apples", "13"], answer=["12", "12"]) == [1.0, 0.0]
    assert score("reinforcepp.tasks.kk_compact:kk_compact_reward", [" kn", "kk"], answer=["kn", "kn"]) == [1.0, 0.0]
    assert score("reinforcepp.rewards.math_answers:math_reward", ["so \\boxed{4}", "#### 5"],
                 answer=["4", "4"]) == [1.0, 0.0]
    assert score("reinforcepp.rewards.format_rewards:think_format_reward", ["<think>x</think> 4", "4"]) == [1.0, 0.0]
