#!/usr/bin/env bash
# Tuning on the validation split only (../shared/eval/data/val): trains configs/ml100k.textproto
# with an --override for SEEDS seeds and prints, per evaluated epoch, the mean warm Recall@50,
# warm NDCG@10 and cold Recall@50 over the seeds (the trainer's own metrics, which equal
# eval.py's). This is how the settings in bench/ml100k_quality.sh were chosen.
#   bench/ml100k_val.sh SEEDS 'training { temperature: 0.15 }' [CONFIG]
# (An override to a pointwise or pairwise objective also needs cold_user_balance: 0, which
# the config sets for the softmax objectives only.)
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:?seeds}
OVERRIDE=${2:-}
CONFIG=${3:-configs/ml100k.textproto}
VAL=${EVAL_DIR:-../shared/eval}/data/val
OUT=$(mktemp -d /tmp/twotower-val-XXXXXX)
trap 'rm -rf "$OUT"' EXIT
for seed in $(seq 1 "$SEEDS"); do
  build/twotower_train --config "$CONFIG" --data_dir "$VAL" --export_dir "$OUT/bundles" \
    --metrics_out "$OUT/metrics$seed.jsonl" --seed "$seed" ${OVERRIDE:+--override "$OVERRIDE"} \
    > "$OUT/train$seed.log" 2>&1 || { tail -3 "$OUT/train$seed.log"; exit 1; }
done
/usr/bin/python3 - "$OUT" "$SEEDS" <<'PY'
import json, sys
out, seeds = sys.argv[1], int(sys.argv[2])
sums = {}
for seed in range(1, seeds + 1):
    for line in open(f"{out}/metrics{seed}.jsonl"):
        record = json.loads(line)
        if "eval" in record:
            e, s = record["eval"], sums.setdefault(record["epoch"], [0.0, 0.0, 0.0])
            s[0] += e["warm"]["recall@50"]; s[1] += e["warm"]["ndcg@10"]; s[2] += e["cold"]["recall@50"]
for epoch, s in sorted(sums.items()):
    print(f"epoch {epoch:3d}  warm R@50 {s[0]/seeds:.4f}  warm NDCG@10 {s[1]/seeds:.4f}  cold R@50 {s[2]/seeds:.4f}")
PY
