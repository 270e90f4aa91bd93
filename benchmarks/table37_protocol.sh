# shellcheck shell=bash
# Issue #22's same-budget protocol, sourced by table37.sh and table37_levers.sh so that the table
# and the levers' runs differ only in what a lever changes: cpu preset, 10 demos, 60 epochs at
# batch 128, warm-up 50 steps, periodic evaluation every 20 epochs on 10 episodes, strict success
# of the final EMA weights on 50 fixed-seed episodes.
# shellcheck disable=SC2034  # used by the scripts that source this file
PROTOCOL=(preset=cpu demos=10 epochs=60 warmup_steps=50 eval_every=20 eval_episodes=10 final_eval_episodes=50 video=false)
