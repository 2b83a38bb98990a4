#!/usr/bin/env bash
# Quality of every objective on the shared ML-100K protocol (test split), mean of 5 seeds,
# scored by ../shared/eval/eval.py. Hyper-parameters and epoch counts were chosen on
# ../shared/eval/data/val only (bench/ml100k_val.sh, 3 seeds, 5 for cold_user_balance 0 / 1;
# criterion: warm + cold Recall@50).
# All share configs/ml100k.textproto: attention-pooled user history, 24 epochs, linear learning-rate decay.
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
  "in-batch softmax + logQ (cold rows x2, per-user weights), 32 shared negatives, T=0.15|"
  "sampled softmax (20 negatives, logQ, cold rows x2, per-user weights)|training { objective: SAMPLED_SOFTMAX num_negatives: 20 user_id_dropout: 0.2 }"
  "pointwise 1:3, scale 10, uniform negatives|training { cold_user_balance: 0 objective: POINTWISE negative_alpha: 0 learning_rate: 0.005 user_id_dropout: 0.2 }"
  "triplet hinge (m 0.3, 8 negatives)|training { cold_user_balance: 0 objective: TRIPLET_HINGE num_negatives: 8 negative_alpha: 0 user_id_dropout: 0.2 }"
  "triplet logistic (s 10, 8 negatives)|training { cold_user_balance: 0 objective: TRIPLET_LOGISTIC num_negatives: 8 negative_alpha: 0 learning_rate: 0.005 user_id_dropout: 0.2 }"
)

# cold5 (PROTOCOL.md section 9): the cold users again, each with its first 5 interactions
# passed as the request's history (the config's eval set "cold5"), scored by eval.py on
# data/cold5; "-" when the config has no such set.
printf '| system | warm R@10 | warm R@50 | warm R@100 | warm NDCG@10 | cold R@50 | cold NDCG@10 | cold5 R@50 | cold5 NDCG@10 | positives/s |\n|---|---|---|---|---|---|---|---|---|---|\n'
for run in "${RUNS[@]}"; do
  name=${run%%|*}
  override=${run#*|}
  [[ -z "$ONLY" || "$name" == *"$ONLY"* ]] || continue
  : > "$OUT/scores"
  for seed in $(seq 1 "$SEEDS"); do
    rm -f "$OUT"/recs-*.tsv
    build/twotower_train --config "$CONFIG" --data_dir "$DATA_DIR" \
      --export_dir "$OUT/bundles" --recs_out "$OUT/recs-{set}.tsv" --seed "$seed" \
      ${override:+--override "$override"} > "$OUT/train.log"
    speed=$(awk '/^trained:/{print $2}' "$OUT/train.log")
    cat "$OUT/recs-warm.tsv" "$OUT/recs-cold.tsv" > "$OUT/recs.tsv"
    scores=$(/usr/bin/python3 "$EVAL/eval.py" --split "$EVAL/data" --recs "$OUT/recs.tsv" \
      | awk '$1=="warm"{w=$3" "$4" "$5" "$6} $1=="cold"{c=$4" "$6} END{print w, c}')
    cold5="- -"
    if [[ -f "$OUT/recs-cold5.tsv" ]]; then
      cat "$OUT/recs-warm.tsv" "$OUT/recs-cold5.tsv" > "$OUT/recs5.tsv"
      cold5=$(/usr/bin/python3 "$EVAL/eval.py" --split "$EVAL/data/cold5" --recs "$OUT/recs5.tsv" \
        | awk '$1=="cold"{print $4, $6}')
    fi
    echo "$scores $cold5 $speed" >> "$OUT/scores"
  done
  awk -v name="$name" '{for(i=1;i<=NF;i++) if ($i == "-") miss[i]=1; else s[i]+=$i; n++}
    function f(i) { return miss[i] ? "-" : sprintf("%.4f", s[i] / n) }
    END{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.0f |\n", name, f(1), f(2), f(3), f(4), f(5), f(6), f(7), f(8), s[9]/n}' "$OUT/scores"
done
