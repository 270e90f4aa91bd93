"""The command line: fast help generated from the configs, did-you-mean, readable logs."""

import io
import subprocess
import sys
from dataclasses import fields

import pytest

from mp1.cli import EPISODE_STEPS, TASK_SETS, build_parser


def test_help_imports_nothing_heavy():
    """Every help text is built without torch, the simulators or matplotlib (that is what keeps
    `mp1 --help` fast)."""
    code = (
        "import sys\n"
        "from mp1.cli import build_parser\n"
        "parser = build_parser()\n"
        "parser.format_help()\n"
        "for action in parser._subparsers._group_actions:\n"
        "    for sub in action.choices.values():\n"
        "        sub.format_help()\n"
        "heavy = {'torch', 'gymnasium', 'mujoco', 'metaworld', 'matplotlib', 'zarr', 'diffusers'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_train_help_lists_every_setting_with_default_and_meaning():
    from mp1.train import TrainConfig

    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for f in fields(TrainConfig):
        line = next((l for l in text.splitlines() if l.startswith(f"  {f.name} = ")), None)
        assert line is not None, f.name
        assert len(line.split(None, 3)) == 4, f"{f.name} has no meaning in the help: {line!r}"
    assert "  lr = None" in text and f"  eval_max_steps = {EPISODE_STEPS} " in text


def test_help_constants_match_the_code():
    from mp1.envs import task_sets
    from mp1.evaluate import DP3_EPISODE_STEPS
    from mp1.policies import POLICY_NAMES
    from mp1.train import TrainConfig

    assert EPISODE_STEPS == DP3_EPISODE_STEPS
    assert sorted(TASK_SETS.split(", ")) == sorted(task_sets())
    policy_help = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert all(name in policy_help for name in POLICY_NAMES) and TrainConfig.policy in POLICY_NAMES


def test_show_config_prints_the_policy_settings(capsys):
    from mp1.cli import main

    main(["train", "--show-config", "policy=mp1-tuned", "model.dispersive.weight=0.1"])
    out = capsys.readouterr().out
    assert "train_lr: 0.0003" in out and "weight: 0.1" in out and "policy: mp1-tuned" in out


@pytest.mark.parametrize("name, suggestion", [
    ("metaworld/button-pres", "'button-press'"), ("adroit/dor", "'door'"), ("cpu-suit", "'cpu-suite'"),
])
def test_unknown_task_suggests_the_closest_names(name, suggestion):
    from mp1.envs import resolve_env_names

    with pytest.raises(ValueError, match=f"did you mean {suggestion}"):
        resolve_env_names([name])


def test_progress_in_a_log_is_plain_lines():
    from mp1.progress import progress_bar

    log = io.StringIO()
    with progress_bar(total=50, desc="train", unit="step", file=log, mininterval=0) as bar:
        for _ in range(50):
            bar.update(1)
            bar.set_postfix(loss="0.1", refresh=False)
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = [line for line in text.splitlines() if line]
    assert lines and all(line.startswith("train") for line in lines) and "50/50" in lines[-1]


def test_dp3_protocol_label_counts_the_evaluations():
    from mp1.evaluate import dp3_protocol_label

    assert dp3_protocol_label(3) == "mean of all 3 periodic evaluations (DP3 takes the 5 best)"
    assert dp3_protocol_label(12) == "mean of the 5 best of 12 periodic evaluations"
