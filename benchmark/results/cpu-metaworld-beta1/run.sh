#!/bin/bash
# One LaGO Meta-World run at beta 1 constant, otherwise the cpu preset's `lago` command (its MiniLM prior
# from benchmark/results/cpu-metaworld). Usage, from anywhere: bash run.sh TASK SEED   (e.g. reach-v3 1)
# Made the nine runs of README's "beta 1 constant" row: for each seed 1-3 and task, two at a time.
task=$1; seed=$2
here=$(cd "$(dirname "$0")" && pwd); repo=$(cd "$here/../../.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
d=$here/${task}__seed${seed}
mkdir -p "$d" && cd "$d"
cmd="$python $repo/lago_ppo_continuous.py --env-id $task --seed $seed --total-timesteps 30000 --eval-episodes 20 --exp-name bench-lago-beta1 --llm all-MiniLM-L6-v2 --prior-path $repo/benchmark/results/cpu-metaworld/priors/metaworld__all-MiniLM-L6-v2 --kl-coef 1.0 --kl-schedule constant --max-episode-steps 200 --num-envs 8 --num-steps 128 --num-minibatches 16"
echo "\$ $cmd" > log.txt
OMP_NUM_THREADS=1 $cmd >> log.txt 2>&1
echo "exit $?" >> log.txt
