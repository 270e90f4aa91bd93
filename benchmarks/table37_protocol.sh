# shellcheck shell=bash
# Issue #22's same-budget protocol, sourced by table37.sh, table37_levers.sh and table37_plan.sh so
# that the table and the levers' runs differ only in what a lever changes: cpu preset, 10 demos,
# 60 epochs at batch 128, warm-up 50 steps, periodic evaluation every 20 epochs on 10 episodes,
# strict success of the final EMA weights on 50 fixed-seed episodes.
# shellcheck disable=SC2034  # used by the scripts that source this file
PROTOCOL=(preset=cpu demos=10 epochs=60 warmup_steps=50 eval_every=20 eval_episodes=10 final_eval_episodes=50 video=false)
# The development set (issue #22, item 2): every setting is chosen on these tasks alone, with two
# seeds; the headline is the mean over the others. Named on 2026-12-02 from the table's first 24
# tasks by a rule: the study's four, and in each Meta-World group the task where
# mp1-tuned trailed DP3 by the most at seed 0. The order is the order the plan runs them in: the
# tasks a setting can move come first (the study's four are at 100% for both methods).
# shellcheck disable=SC2034
DEV_SET=(metaworld/dial-turn metaworld/peg-insert-side metaworld/hand-insert metaworld/stick-push
         metaworld/button-press metaworld/door-open metaworld/plate-slide metaworld/window-open)
# The set a script works on: DEV from the environment (a dry run's, or one task of it), else DEV_SET.
DEV=${DEV:-${DEV_SET[*]}}
