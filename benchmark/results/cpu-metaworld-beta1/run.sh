#!/bin/bash
# one LaGO Meta-World run at beta 1 constant, otherwise the cpu preset's lago command
task=$1; seed=$2
d=/work/main/benchmark/results/cpu-metaworld-beta1/$task__seed$seed
d=/work/main/benchmark/results/cpu-metaworld-beta1/${task}__seed${seed}
mkdir -p $d && cd $d
cmd="/work/main/.venv/bin/python /work/main/lago_ppo_continuous.py --env-id $task --seed $seed --total-timesteps 30000 --eval-episodes 20 --exp-name bench-lago-beta1 --llm all-MiniLM-L6-v2 --prior-path /work/main/benchmark/results/cpu-metaworld/priors/metaworld__all-MiniLM-L6-v2 --kl-coef 1.0 --kl-schedule constant --max-episode-steps 200 --num-envs 8 --num-steps 128 --num-minibatches 16"
echo "\$ $cmd" > log.txt
OMP_NUM_THREADS=1 $cmd >> log.txt 2>&1
echo "exit $?" >> log.txt
