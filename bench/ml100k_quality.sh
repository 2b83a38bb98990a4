#!/usr/bin/env bash
# Quality of every objective on the ML-100K evaluation protocol (test split; docs/BENCHMARKS.md
# "The MovieLens 100K evaluation split"), mean of SEEDS seeds, scored by the trainer's
# evaluation of the exported (last) epoch, which equals the protocol's eval.py to 6 digits.
# Hyper-parameters and epoch counts were chosen on the validation split only
# (bench/ml100k_val.sh; criterion: warm + cold Recall@50).
# All share configs/ml100k.textproto: attention-pooled user history, 24 epochs, linear learning-rate decay.
#   bench/ml100k_quality.sh [SEEDS] [NAME_SUBSTRING] [CONFIG] [DATA_DIR]   (default 5 seeds,
#       every run, configs/ml100k.textproto on the split; needs build/twotower_train).
#   The split: $ML100K_SPLIT, made from the download at $ML100K_DIR (bench/ml100k_split.sh).
#   The raw-file config: bench/ml100k_quality.sh 5 in-batch configs/ml100k_raw.textproto DIR,
#       DIR holding ml-100k/ (the download) and split/ (the split).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/ml100k_split.sh
SEEDS=${1:-5}
ONLY=${2:-}
CONFIG=${3:-configs/ml100k.textproto}
DATA_DIR=${4:-$SPLIT}
OUT=$(mktemp -d /tmp/twotower-quality-XXXXXX)
trap 'rm -rf "$OUT"' EXIT

# name | --override (merged over configs/ml100k.textproto, the in-batch configuration)
RUNS=(
  "in-batch softmax + logQ (cold rows x2, per-user weights), 32 shared negatives, T=0.15|"
  "sampled softmax (20 negatives, logQ, cold rows x2, per-user weights)|training { objective: OBJECTIVE_SAMPLED_SOFTMAX num_negatives: 20 user_id_dropout: 0.2 }"
  "pointwise 1:3, scale 10, uniform negatives|training { cold_user_balance: 0 objective: OBJECTIVE_POINTWISE negative_alpha: 0 learning_rate: 0.005 user_id_dropout: 0.2 }"
  "triplet hinge (m 0.3, 8 negatives)|training { cold_user_balance: 0 objective: OBJECTIVE_TRIPLET_HINGE num_negatives: 8 negative_alpha: 0 user_id_dropout: 0.2 }"
  "triplet logistic (s 10, 8 negatives)|training { cold_user_balance: 0 objective: OBJECTIVE_TRIPLET_LOGISTIC num_negatives: 8 negative_alpha: 0 learning_rate: 0.005 user_id_dropout: 0.2 }"
)

# cold5 (docs/BENCHMARKS.md): the cold users again, each with its first 5 interactions
# passed as the request's history (the config's eval set "cold5"); "-" without that set.
printf '| system | warm R@10 | warm R@50 | warm R@100 | warm NDCG@10 | cold R@50 | cold NDCG@10 | cold5 R@50 | cold5 NDCG@10 | positives/s |\n|---|---|---|---|---|---|---|---|---|---|\n'
for run in "${RUNS[@]}"; do
  name=${run%%|*}
  override=${run#*|}
  [[ -z "$ONLY" || "$name" == *"$ONLY"* ]] || continue
  : > "$OUT/scores"
  for seed in $(seq 1 "$SEEDS"); do
    build/twotower_train --config "$CONFIG" --data_dir "$DATA_DIR" \
      --export_dir "$OUT/bundles" --seed "$seed" ${override:+--override "$override"} > "$OUT/train.log"
    # The last evaluation line of each set ("  eval warm users 849 Recall@10 x Recall@50 y
    # Recall@100 z NDCG@10 w"): the epoch exported, the last one.
    awk '/^trained:/{speed=$2}
         $1=="eval"{r10[$2]=$6; r50[$2]=$8; r100[$2]=$10; ndcg[$2]=$12}
         END{c5 = ("cold5" in r50) ? r50["cold5"]" "ndcg["cold5"] : "- -";
             print r10["warm"], r50["warm"], r100["warm"], ndcg["warm"], r50["cold"], ndcg["cold"], c5, speed}' \
      "$OUT/train.log" >> "$OUT/scores"
  done
  awk -v name="$name" '{for(i=1;i<=NF;i++) if ($i == "-") miss[i]=1; else s[i]+=$i; n++}
    function f(i) { return miss[i] ? "-" : sprintf("%.4f", s[i] / n) }
    END{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.0f |\n", name, f(1), f(2), f(3), f(4), f(5), f(6), f(7), f(8), s[9]/n}' "$OUT/scores"
done
