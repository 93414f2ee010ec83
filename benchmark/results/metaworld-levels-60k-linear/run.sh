for T in reach-v3 push-v3 window-open-v3 faucet-open-v3; do
  OMP_NUM_THREADS=1 nice -n 5 python /work/main/lago_ppo_continuous.py --env-id $T --seed 1 --total-timesteps 60000 --max-episode-steps 100 --num-envs 8 --num-steps 128 --num-minibatches 16 --kl-coef 1 --kl-schedule linear --llm all-MiniLM-L6-v2 --prior-path /work/main/benchmark/results/metaworld-levels-20k/priors/metaworld__all-MiniLM-L6-v2 --save-model --exp-name lin > log_$T.txt 2>&1
  M=$(ls runs/${T}__lin__1__*/lin.cleanrl_model)
  echo "$T $(cd /work/main && OMP_NUM_THREADS=1 python -m benchmark.evaluate /work/lin/$M --env-id $T --episodes 20 --seed 1 --max-episode-steps 100 | python -c 'import json,sys; d=json.load(sys.stdin); print({k: v["success_rate"] for k, v in d.items()})')"
done
