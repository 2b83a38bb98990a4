#!/usr/bin/env bash
# Quality of every objective on the shared ML-100K protocol (test split), mean of 5 seeds,
# scored by ../shared/eval/eval.py. Hyper-parameters and epoch counts were chosen on
# ../shared/eval/data/val only (bench/ml100k_val.sh, 3 seeds, 5 for cold_user_balance 0 / 1;
# criterion: warm + cold Recall@50).
# All share configs/ml100k.textproto: user history feature, 24 epochs, linear learning-rate decay.
#   bench/ml100k_quality.sh [SEEDS] [NAME_SUBSTRING] [CONFIG DATA_DIR]   (default 5 seeds,
#       every run, configs/ml100k.textproto on ../shared/eval/data; needs build/twotower_train).
#   The raw-file config: bench/ml100k_quality.sh 5 in-batch configs/ml100k_raw.textproto ../shared
set -euo pipefail
cd "$(dirname "$0")/.."
EVAL=${EVAL_DIR:-../shared/eval}
SEEDS=${1:-5}
ONLY=${2:-}
CONFIG=${3:-configs/ml100k.textproto}
DATA_DIR=${4:-$EVAL/data}
OUT=$(mktemp -d /tmp/twotower-quality-XXXXXX)
trap 'rm -rf "$OUT"' EXIT

# name | --override (merged over configs/ml100k.textproto, the in-batch configuration)
RUNS=(
  "in-batch softmax + logQ (cold rows x2, per-user weights), 32 shared negatives, T=0.2|"
  "sampled softmax (20 negatives, logQ, cold rows x2, per-user weights)|training { objective: SAMPLED_SOFTMAX num_negatives: 20 user_id_dropout: 0.2 }"
  "pointwise 1:3, scale 10, uniform negatives|training { cold_user_balance: 0 objective: POINTWISE negative_alpha: 0 learning_rate: 0.005 user_id_dropout: 0.2 }"
  "triplet hinge (m 0.3, 8 negatives)|training { cold_user_balance: 0 objective: TRIPLET_HINGE num_negatives: 8 negative_alpha: 0 user_id_dropout: 0.2 }"
  "triplet logistic (s 10, 8 negatives)|training { cold_user_balance: 0 objective: TRIPLET_LOGISTIC num_negatives: 8 negative_alpha: 0 learning_rate: 0.005 user_id_dropout: 0.2 }"
)

printf '| system | warm R@10 | warm R@50 | warm R@100 | warm NDCG@10 | cold R@50 | cold NDCG@10 | positives/s |\n|---|---|---|---|---|---|---|---|\n'
for run in "${RUNS[@]}"; do
  name=${run%%|*}
  override=${run#*|}
  [[ -z "$ONLY" || "$name" == *"$ONLY"* ]] || continue
  : > "$OUT/scores"
  for seed in $(seq 1 "$SEEDS"); do
    build/twotower_train --config "$CONFIG" --data_dir "$DATA_DIR" \
      --export_dir "$OUT/bundles" --recs_out "$OUT/recs.tsv" --seed "$seed" \
      ${override:+--override "$override"} > "$OUT/train.log"
    speed=$(awk '/^trained:/{print $2}' "$OUT/train.log")
    /usr/bin/python3 "$EVAL/eval.py" --split "$EVAL/data" --recs "$OUT/recs.tsv" \
      | awk -v s="$speed" '$1=="warm"{w=$3" "$4" "$5" "$6} $1=="cold"{c=$4" "$6} END{print w, c, s}' >> "$OUT/scores"
  done
  awk -v name="$name" '{for(i=1;i<=NF;i++) s[i]+=$i; n++}
    END{printf "| %s | %.4f | %.4f | %.4f | %.4f | %.4f | %.4f | %.0f |\n", name, s[1]/n, s[2]/n, s[3]/n, s[4]/n, s[5]/n, s[6]/n, s[7]/n}' "$OUT/scores"
done
